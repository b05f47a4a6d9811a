//! Abuses control flow: a guard that panics, which in wasm32-unknown-unknown is a trap.

use cairn_sdk::Reactor;
use cairn_sdk::{
    Answer, Context, Decision, Event, FilterContext, Guard, Op, Policy, PolicyRequest, Verdict,
    WatchFilter, Watcher,
};

/// Panics on every call (panic=abort on this target, so the component traps).
pub struct TrapGuard;

impl Guard for TrapGuard {
    fn check(_ctx: &Context<'_>, ops: &[Op]) -> Decision {
        panic!("trap-guard: panicking on purpose ({} ops)", ops.len());
    }
}

cairn_sdk::export_guard!(TrapGuard);

/// Panics as a policy hook too.
impl Policy for TrapGuard {
    fn check(_ctx: &Context<'_>, request: &PolicyRequest) -> Answer {
        panic!(
            "trap-guard: panicking on purpose ({} accesses)",
            request.accesses.len()
        );
    }
}

cairn_sdk::export_policy!(TrapGuard);

/// Panics on its first event as a watch filter (it opens normally).
impl WatchFilter for TrapGuard {
    fn open(_ctx: &FilterContext<'_>, _watcher: &Watcher) -> Result<Self, String> {
        Ok(TrapGuard)
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, event: &Event) -> Verdict {
        panic!(
            "trap-guard: panicking on purpose at revision {}",
            event.kv.mod_revision
        );
    }
}

cairn_sdk::export_watch_filter!(TrapGuard);

/// Panics as a reactor too.
impl Reactor for TrapGuard {
    fn react(_ctx: &Context<'_>, revision: i64, _events: &[Event]) -> Vec<Op> {
        panic!("trap-guard: panicking on purpose at revision {revision}");
    }
}

cairn_sdk::export_reactor!(TrapGuard);
