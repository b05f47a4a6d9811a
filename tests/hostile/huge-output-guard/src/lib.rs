//! Abuses the result size: a guard that denies with an 8 MiB message.

use cairn_sdk::Reactor;
use cairn_sdk::{
    Answer, Context, Decision, Event, FilterContext, Guard, Op, Policy, PolicyRequest, Verdict,
    WatchFilter, Watcher,
};

/// The deny message's size in bytes.
pub const MESSAGE_BYTES: usize = 8 << 20;

/// Denies every write with a message of [`MESSAGE_BYTES`] `x`s.
pub struct HugeOutputGuard;

impl Guard for HugeOutputGuard {
    fn check(_ctx: &Context<'_>, _ops: &[Op]) -> Decision {
        Decision::deny("x".repeat(MESSAGE_BYTES))
    }
}

cairn_sdk::export_guard!(HugeOutputGuard);

/// Denies every request with the same message, as a policy hook.
impl Policy for HugeOutputGuard {
    fn check(_ctx: &Context<'_>, _request: &PolicyRequest) -> Answer {
        Answer::deny("x".repeat(MESSAGE_BYTES))
    }
}

cairn_sdk::export_policy!(HugeOutputGuard);

/// Rewrites every event to an 8 MiB value, as a watch filter.
impl WatchFilter for HugeOutputGuard {
    fn open(_ctx: &FilterContext<'_>, _watcher: &Watcher) -> Result<Self, String> {
        Ok(HugeOutputGuard)
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, _event: &Event) -> Verdict {
        Verdict::rewrite("x".repeat(MESSAGE_BYTES))
    }
}

cairn_sdk::export_watch_filter!(HugeOutputGuard);

/// Returns one write of 8 MiB as a reactor.
impl Reactor for HugeOutputGuard {
    fn react(_ctx: &Context<'_>, _revision: i64, _events: &[Event]) -> Vec<Op> {
        vec![Op::put("/huge", "x".repeat(MESSAGE_BYTES))]
    }
}

cairn_sdk::export_reactor!(HugeOutputGuard);
