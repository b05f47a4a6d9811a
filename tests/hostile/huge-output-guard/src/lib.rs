//! Abuses the result size: a guard that denies with an 8 MiB message.

use cairn_sdk::{Answer, Context, Decision, Guard, Op, Policy, PolicyRequest};

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
