//! Abuses control flow: a guard that panics, which in wasm32-unknown-unknown is a trap.

use cairn_sdk::{Context, Decision, Guard, Op};

/// Panics on every call (panic=abort on this target, so the component traps).
pub struct TrapGuard;

impl Guard for TrapGuard {
    fn check(_ctx: &Context<'_>, ops: &[Op]) -> Decision {
        panic!("trap-guard: panicking on purpose ({} ops)", ops.len());
    }
}

cairn_sdk::export_guard!(TrapGuard);
