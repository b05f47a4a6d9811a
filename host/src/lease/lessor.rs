//! The lessor: lease deadlines, on the leader only.
//!
//! Deadlines come from this member's clock and never enter the state machine. Every tick the
//! lessor reconciles its deadlines with the replicated lease table (a lease it has not seen
//! gets its checkpointed remaining TTL, or the full TTL if it has none; a revoked one is
//! dropped) and, while this member leads, proposes a revoke for each lease past its deadline.
//! Keepalives renew deadlines here. Periodically the leader checkpoints remaining TTLs through
//! Raft, so the next leader continues the countdowns (etcd resets them to full unless its
//! checkpoint feature is on).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{LeaseInfo, Leases};
use crate::storage::Storage;

/// How often deadlines are checked (etcd: 500 ms).
pub const TICK: Duration = Duration::from_millis(500);
/// Most revokes proposed per tick (etcd caps expiry at 1000 revokes a second).
pub const MAX_REVOKES_PER_TICK: usize = 500;
/// Most leases in one checkpoint command (etcd: 1000).
pub const MAX_CHECKPOINTS: usize = 1000;

#[derive(Debug)]
pub struct Lessor {
    deadlines: Mutex<BTreeMap<i64, Instant>>,
    next_id: AtomicI64,
}

impl Lessor {
    /// `member_id` seeds server-chosen lease ids, so members pick from disjoint ranges.
    pub fn new(member_id: u64) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // Top bit clear (positive ids), 15 bits of member id, then time: unique across restarts.
        let base = (((member_id & 0x7fff) as i64) << 48) | ((now_ms << 8) & 0x0000_ffff_ffff_ffff);
        Lessor {
            deadlines: Mutex::new(BTreeMap::new()),
            next_id: AtomicI64::new(base.max(1)),
        }
    }

    /// A fresh id for a lease the client did not name.
    pub fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Restarts lease `id`'s countdown from `ttl_secs`.
    pub fn renew(&self, id: i64, ttl_secs: i64) {
        let deadline = Instant::now() + Duration::from_secs(ttl_secs.max(0) as u64);
        self.deadlines
            .lock()
            .expect("lessor lock poisoned")
            .insert(id, deadline);
    }

    pub fn forget(&self, id: i64) {
        self.deadlines
            .lock()
            .expect("lessor lock poisoned")
            .remove(&id);
    }

    /// Forgets every deadline (this member does not lead).
    pub fn clear(&self) {
        self.deadlines.lock().expect("lessor lock poisoned").clear();
    }

    /// Time left on lease `id`, if this member tracks it.
    pub fn remaining(&self, id: i64) -> Option<Duration> {
        let deadlines = self.deadlines.lock().expect("lessor lock poisoned");
        deadlines
            .get(&id)
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Reconciles with the lease table; returns the leases past their deadline (oldest first,
    /// at most [`MAX_REVOKES_PER_TICK`]).
    pub fn tick(&self, table: &[LeaseInfo]) -> Vec<i64> {
        let now = Instant::now();
        let mut deadlines = self.deadlines.lock().expect("lessor lock poisoned");
        let live: BTreeMap<i64, i64> = table.iter().map(|l| (l.id, l.ttl_secs)).collect();
        debug_assert_eq!(live.len(), table.len(), "lease ids are unique");
        deadlines.retain(|id, _| live.contains_key(id));
        for lease in table {
            let left = lease.remaining_secs.unwrap_or(lease.ttl_secs).max(0) as u64;
            deadlines
                .entry(lease.id)
                .or_insert_with(|| now + Duration::from_secs(left));
        }
        let mut expired: Vec<(Instant, i64)> = deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, d)| (*d, *id))
            .collect();
        expired.sort();
        expired
            .into_iter()
            .take(MAX_REVOKES_PER_TICK)
            .map(|(_, id)| id)
            .collect()
    }

    /// Remaining TTLs worth checkpointing: leases whose countdown has moved at least a second
    /// away from what the table records. Rounded up, so a checkpoint never shortens a lease.
    pub fn checkpoints_due(&self, table: &[LeaseInfo]) -> Vec<(i64, Option<i64>)> {
        let now = Instant::now();
        let deadlines = self.deadlines.lock().expect("lessor lock poisoned");
        table
            .iter()
            .filter_map(|lease| {
                let deadline = deadlines.get(&lease.id)?;
                let left = deadline.saturating_duration_since(now);
                let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
                let recorded = lease.remaining_secs.unwrap_or(lease.ttl_secs);
                (secs < recorded && secs < lease.ttl_secs).then_some((lease.id, Some(secs)))
            })
            .collect()
    }

    /// Reads the lease table (blocking).
    pub fn table(storage: &Storage) -> Vec<LeaseInfo> {
        Leases(storage).all().unwrap_or_default()
    }
}
