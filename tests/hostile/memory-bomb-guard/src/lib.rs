//! Abuses memory: a guard that allocates 1 MiB after 1 MiB until the host's limit stops it.

use std::hint::black_box;

use cairn_sdk::{Context, Decision, Guard, Op};

/// Keeps every MiB it allocates, each filled so that its pages are really touched.
pub struct MemoryBombGuard;

impl Guard for MemoryBombGuard {
    fn check(_ctx: &Context<'_>, _ops: &[Op]) -> Decision {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(black_box(vec![0xa5; 1 << 20]));
            black_box(&mut hoard);
        }
    }
}

cairn_sdk::export_guard!(MemoryBombGuard);
