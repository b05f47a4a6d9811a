//! Abuses the stack: a guard that recurses without bound, so the host must trap on overflow.

use cairn_sdk::{Context, Decision, Guard, Op};

/// Recurses until the wasm call stack is exhausted.
pub struct RecursionGuard;

/// Each frame's result mixes the callee's result with its own arguments in two operations,
/// so the call is neither a tail call nor an accumulator that LLVM could turn into a loop.
/// Everything lives in wasm locals (nothing address-taken), so it is the engine's call stack
/// that overflows, not Rust's shadow stack in linear memory. The base case is there only to
/// keep rustc from flagging unconditional recursion: it needs 2^64 calls.
#[inline(never)]
fn descend(depth: u64, a: u64, b: u64) -> u64 {
    if depth == u64::MAX {
        return a ^ b;
    }
    let below = descend(depth + 1, a.wrapping_mul(3) ^ depth, b.rotate_left(7) ^ a);
    below.wrapping_mul(a | 1).wrapping_add(b)
}

impl Guard for RecursionGuard {
    fn check(_ctx: &Context<'_>, ops: &[Op]) -> Decision {
        let n = ops.len() as u64;
        Decision::deny(format!("unreachable: {}", descend(n, n ^ 0x5bd1, n + 7)))
    }
}

cairn_sdk::export_guard!(RecursionGuard);
