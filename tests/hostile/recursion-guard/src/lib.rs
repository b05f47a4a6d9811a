//! Abuses the stack: a guard that recurses without bound, so the host must trap on overflow.

use std::hint::black_box;

use cairn_sdk::{Context, Decision, Guard, Op};

/// Recurses forever; each frame keeps a live array and uses the callee's result, so the call
/// is not a tail call and cannot become a loop.
pub struct RecursionGuard;

#[inline(never)]
fn descend(depth: u64) -> u64 {
    // Opaque to the optimizer, and never true: without it rustc proves the recursion
    // unconditional and warns.
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let mut frame = [depth; 32];
    black_box(&mut frame);
    let below = descend(depth + 1);
    below.wrapping_add(frame[(below % 32) as usize])
}

impl Guard for RecursionGuard {
    fn check(_ctx: &Context<'_>, ops: &[Op]) -> Decision {
        Decision::deny(format!("unreachable: {}", descend(ops.len() as u64)))
    }
}

cairn_sdk::export_guard!(RecursionGuard);
