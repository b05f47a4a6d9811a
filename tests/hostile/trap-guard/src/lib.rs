//! Abuses control flow: a guard that panics, which in wasm32-unknown-unknown is a trap.

use cairn_sdk::{Answer, Context, Decision, Guard, Op, Policy, PolicyRequest};

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
