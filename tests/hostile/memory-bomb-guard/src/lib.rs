//! Abuses memory: a guard that allocates 1 MiB after 1 MiB until the host's limit stops it.

use std::hint::black_box;

use cairn_sdk::{
    Answer, Context, Decision, Event, FilterContext, Guard, Op, Policy, PolicyRequest, Verdict,
    WatchFilter, Watcher,
};

/// The bytes in one block.
const BLOCK_BYTES: usize = 1 << 20;

/// Keeps every MiB it allocates until an allocation fails (which aborts: a trap).
fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::with_capacity(BLOCK_BYTES);
        for byte in block.spare_capacity_mut().iter_mut().step_by(4096) {
            byte.write(0xa5);
        }
        hoard.push(black_box(block));
    }
}

/// Keeps every MiB it allocates, writing a byte per 4 KiB of each so that even a host that
/// commits memory lazily pays for it. It spends little fuel per MiB: it is the memory limit
/// (memory.grow failing, then Rust's allocation-failure abort, a trap) that stops it.
pub struct MemoryBombGuard;

impl Guard for MemoryBombGuard {
    fn check(_ctx: &Context<'_>, _ops: &[Op]) -> Decision {
        hoard()
    }
}

cairn_sdk::export_guard!(MemoryBombGuard);

/// The same hoarding as a policy hook.
impl Policy for MemoryBombGuard {
    fn check(ctx: &Context<'_>, _request: &PolicyRequest) -> Answer {
        match <Self as Guard>::check(ctx, &[]) {
            Decision::Allow => Answer::Allow,
            Decision::Deny(reason) => Answer::Deny(reason),
        }
    }
}

cairn_sdk::export_policy!(MemoryBombGuard);

/// The same hoarding as a watch filter, from its first event.
impl WatchFilter for MemoryBombGuard {
    fn open(_ctx: &FilterContext<'_>, _watcher: &Watcher) -> Result<Self, String> {
        Ok(MemoryBombGuard)
    }

    fn filter(&mut self, _ctx: &FilterContext<'_>, _event: &Event) -> Verdict {
        hoard()
    }
}

cairn_sdk::export_watch_filter!(MemoryBombGuard);
