//! Abuses fuel: a guard that never returns, so the host must interrupt it.

use std::hint::black_box;

use cairn_sdk::Reactor;
use cairn_sdk::{
    Answer, Context, Decision, Event, FilterContext, Guard, Op, Policy, PolicyRequest, Verdict,
    WatchFilter, Watcher,
};

/// Spins forever on opaque arithmetic the optimizer cannot remove.
pub struct LoopGuard;

impl Guard for LoopGuard {
    fn check(_ctx: &Context<'_>, ops: &[Op]) -> Decision {
        let mut state = ops.len() as u64;
        loop {
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
        }
    }
}

cairn_sdk::export_guard!(LoopGuard);

/// The same loop as a policy hook.
impl Policy for LoopGuard {
    fn check(_ctx: &Context<'_>, request: &PolicyRequest) -> Answer {
        let mut state = request.accesses.len() as u64;
        loop {
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
        }
    }
}

cairn_sdk::export_policy!(LoopGuard);

/// The same loop as a watch filter, from its first event (it opens normally).
impl WatchFilter for LoopGuard {
    fn open(_ctx: &FilterContext<'_>, _watcher: &Watcher) -> Result<Self, String> {
        Ok(LoopGuard)
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, event: &Event) -> Verdict {
        let mut state = event.kv.mod_revision as u64;
        loop {
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
        }
    }
}

cairn_sdk::export_watch_filter!(LoopGuard);

/// The same loop as a reactor.
impl Reactor for LoopGuard {
    fn react(_ctx: &Context<'_>, revision: i64, _events: &[Event]) -> Vec<Op> {
        let mut state = revision as u64;
        loop {
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
        }
    }
}

cairn_sdk::export_reactor!(LoopGuard);
