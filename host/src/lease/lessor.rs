//! The lessor: lease deadlines, on the leader only, and the decisions that follow from them.
//!
//! Deadlines come from the leader's clock and never enter the state machine. The lessor reads
//! no clock itself: every call that depends on time is handed `now`, the way openraft's engine
//! is, so its rules are tested with a clock the test moves (`lessor::tests`). The API's expiry
//! loop ticks it every [`TICK`] with the replicated lease table and carries out what the tick
//! decides ([`Duties`]): revokes and checkpoints, proposed through Raft.
//!
//! Each tick reconciles the deadlines with the table: a lease the lessor has not seen gets its
//! checkpointed remaining TTL, or its full TTL if it has none; a revoked one is dropped. While
//! this member leads, each lease past its deadline is due for a revoke. Keepalives renew
//! deadlines here. Every checkpoint interval the leader records remaining TTLs through Raft, so
//! the next leader continues the countdowns (etcd resets them to full unless its checkpoint
//! feature is on).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{LeaseInfo, Leases};
use crate::storage::Storage;

/// How often deadlines are checked (etcd: 500 ms).
pub const TICK: Duration = Duration::from_millis(500);
/// Most revokes proposed per tick (etcd caps expiry at 1000 revokes a second).
pub const MAX_REVOKES_PER_TICK: usize = 500;
/// Most leases in one checkpoint command (etcd: 1000).
pub const MAX_CHECKPOINTS: usize = 1000;

/// A lease request only the leader's lessor can answer (it owns the deadlines). A member that
/// does not lead sends it to the leader (`raft::ForwardRequest::Lessor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LessorRequest {
    /// Renews a lease; answers its TTL (0 if the lease does not exist).
    KeepAlive(i64),
    /// Answers the whole seconds left on a lease, or -1 if the lessor does not track it.
    Remaining(i64),
}

/// What a tick asks of the leader: Raft proposals, in this order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Duties {
    /// Remaining TTLs to record, in commands of at most [`MAX_CHECKPOINTS`] leases.
    pub checkpoints: Vec<Vec<(i64, Option<i64>)>>,
    /// Leases past their deadline, oldest first, at most [`MAX_REVOKES_PER_TICK`].
    pub revokes: Vec<i64>,
}

#[derive(Debug)]
pub struct Lessor {
    state: Mutex<State>,
    next_id: AtomicI64,
    checkpoint_every: Duration,
}

#[derive(Debug, Default)]
struct State {
    deadlines: BTreeMap<i64, Instant>,
    /// When remaining TTLs were last checkpointed; `None` until this member first leads.
    last_checkpoint: Option<Instant>,
}

impl Lessor {
    /// `member_id` and `now_ms` (wall-clock milliseconds) seed server-chosen lease ids, so
    /// members pick from disjoint ranges and a restart does not reuse ids. Remaining TTLs are
    /// checkpointed every `checkpoint_every`.
    pub fn new(member_id: u64, now_ms: i64, checkpoint_every: Duration) -> Self {
        // Top bit clear (positive ids), 15 bits of member id, then time: unique across restarts.
        let base = (((member_id & 0x7fff) as i64) << 48) | ((now_ms << 8) & 0x0000_ffff_ffff_ffff);
        Lessor {
            state: Mutex::default(),
            next_id: AtomicI64::new(base.max(1)),
            checkpoint_every,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Poisoned only if a panic happened while holding it; nothing here panics.
        self.state.lock().expect("lessor lock poisoned")
    }

    /// A fresh id for a lease the client did not name.
    pub fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Restarts lease `id`'s countdown from `ttl_secs`, as of `now`.
    pub fn renew(&self, id: i64, ttl_secs: i64, now: Instant) {
        let deadline = now + Duration::from_secs(ttl_secs.max(0) as u64);
        self.state().deadlines.insert(id, deadline);
    }

    pub fn forget(&self, id: i64) {
        self.state().deadlines.remove(&id);
    }

    /// Time left on lease `id` at `now`, if this member tracks it.
    pub fn remaining(&self, id: i64, now: Instant) -> Option<Duration> {
        let state = self.state();
        state
            .deadlines
            .get(&id)
            .map(|d| d.saturating_duration_since(now))
    }

    /// One tick at `now`, with the lease table as it is and whether this member leads.
    ///
    /// A member that does not lead forgets every deadline: one that becomes leader then starts
    /// each lease's countdown afresh (from its checkpoint) instead of expiring leases whose
    /// keepalives went to the previous leader. A new leader's first checkpoint comes one
    /// interval after its first tick.
    pub fn tick(&self, now: Instant, table: &[LeaseInfo], leading: bool) -> Duties {
        let mut state = self.state();
        if !leading {
            state.deadlines.clear();
            state.last_checkpoint = None;
            return Duties::default();
        }
        let live: BTreeMap<i64, i64> = table.iter().map(|l| (l.id, l.ttl_secs)).collect();
        debug_assert_eq!(live.len(), table.len(), "lease ids are unique");
        state.deadlines.retain(|id, _| live.contains_key(id));
        for lease in table {
            let left = lease.remaining_secs.unwrap_or(lease.ttl_secs).max(0) as u64;
            state
                .deadlines
                .entry(lease.id)
                .or_insert_with(|| now + Duration::from_secs(left));
        }
        let mut expired: Vec<(Instant, i64)> = state
            .deadlines
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, d)| (*d, *id))
            .collect();
        expired.sort();
        let revokes = expired
            .into_iter()
            .take(MAX_REVOKES_PER_TICK)
            .map(|(_, id)| id)
            .collect();
        let since = *state.last_checkpoint.get_or_insert(now);
        let checkpoints = if now.saturating_duration_since(since) >= self.checkpoint_every {
            state.last_checkpoint = Some(now);
            checkpoints_due(&state.deadlines, table, now)
                .chunks(MAX_CHECKPOINTS)
                .map(<[_]>::to_vec)
                .collect()
        } else {
            Vec::new()
        };
        Duties {
            checkpoints,
            revokes,
        }
    }

    /// Reads the lease table (blocking).
    pub fn table(storage: &Storage) -> Vec<LeaseInfo> {
        Leases(storage).all().unwrap_or_default()
    }
}

/// Remaining TTLs worth checkpointing: leases whose countdown has moved at least a second away
/// from what the table records. Rounded up, so a checkpoint never shortens a lease.
fn checkpoints_due(
    deadlines: &BTreeMap<i64, Instant>,
    table: &[LeaseInfo],
    now: Instant,
) -> Vec<(i64, Option<i64>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const CHECKPOINT: Duration = Duration::from_secs(300);

    fn lease(id: i64, ttl_secs: i64, remaining_secs: Option<i64>) -> LeaseInfo {
        LeaseInfo {
            id,
            ttl_secs,
            remaining_secs,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ids_are_positive_distinct_and_seeded_by_member() {
        // Proves server-chosen ids count up from a base that differs between members.
        let a = Lessor::new(0x1234, 1_700_000_000_000, CHECKPOINT);
        let b = Lessor::new(0x1235, 1_700_000_000_000, CHECKPOINT);
        let (a1, a2) = (a.next_id(), a.next_id());
        assert!(a1 > 0 && a2 == a1 + 1);
        assert_ne!(a1 >> 48, b.next_id() >> 48);
    }

    #[test]
    fn a_lease_expires_at_its_deadline_not_before() {
        // Proves expiry follows the clock handed in: due exactly at grant + TTL.
        let lessor = Lessor::new(1, 0, CHECKPOINT);
        let t0 = Instant::now();
        let table = [lease(7, 10, None)];
        assert!(lessor.tick(t0, &table, true).revokes.is_empty());
        assert_eq!(lessor.remaining(7, t0 + secs(4)), Some(secs(6)));
        assert!(
            lessor
                .tick(t0 + secs(10) - Duration::from_millis(1), &table, true)
                .revokes
                .is_empty()
        );
        assert_eq!(lessor.tick(t0 + secs(10), &table, true).revokes, vec![7]);
    }

    #[test]
    fn a_keepalive_moves_the_deadline() {
        // Proves renew restarts the countdown from the time of the keepalive.
        let lessor = Lessor::new(1, 0, CHECKPOINT);
        let t0 = Instant::now();
        let table = [lease(7, 10, None)];
        lessor.tick(t0, &table, true);
        lessor.renew(7, 10, t0 + secs(8));
        assert!(lessor.tick(t0 + secs(12), &table, true).revokes.is_empty());
        assert_eq!(lessor.tick(t0 + secs(18), &table, true).revokes, vec![7]);
    }

    #[test]
    fn expiry_follows_the_table_oldest_first_and_bounded() {
        // Proves revoked leases are forgotten, expired ones come oldest deadline first, and one
        // tick revokes at most MAX_REVOKES_PER_TICK.
        let lessor = Lessor::new(1, 0, CHECKPOINT);
        let t0 = Instant::now();
        let n = MAX_REVOKES_PER_TICK as i64 + 20;
        // Lease i has TTL n - i: the highest id expires first.
        let table: Vec<LeaseInfo> = (1..=n).map(|i| lease(i, n - i, None)).collect();
        lessor.tick(t0, &table, true);
        let duties = lessor.tick(t0 + secs(n as u64), &table, true);
        assert_eq!(duties.revokes.len(), MAX_REVOKES_PER_TICK);
        assert_eq!(duties.revokes[0], n);
        assert!(duties.revokes.windows(2).all(|w| w[0] > w[1]));
        // A lease gone from the table is forgotten.
        lessor.tick(t0 + secs(1), &table[1..], true);
        assert_eq!(lessor.remaining(1, t0), None);
    }

    #[test]
    fn checkpoints_come_once_per_interval_rounded_up() {
        // Proves checkpoints are due one interval after the first tick as leader, carry the
        // remaining TTL rounded up, skip leases that have not moved a second, and repeat only
        // after another interval.
        let lessor = Lessor::new(1, 0, secs(5));
        let t0 = Instant::now();
        let table = [lease(1, 100, None), lease(2, 100, Some(96))];
        assert!(lessor.tick(t0, &table, true).checkpoints.is_empty());
        let at = t0 + secs(5) - Duration::from_millis(500);
        assert!(lessor.tick(at, &table, true).checkpoints.is_empty());
        let duties = lessor.tick(t0 + secs(5) + Duration::from_millis(1), &table, true);
        // Lease 1: 95 s minus 1 ms left, recorded as 95. Lease 2 started from its checkpoint
        // of 96: 91 s minus 1 ms left, recorded as 91.
        assert_eq!(duties.checkpoints, vec![vec![(1, Some(95)), (2, Some(91))]]);
        assert!(
            lessor
                .tick(t0 + secs(6), &table, true)
                .checkpoints
                .is_empty(),
            "the next checkpoint waits a whole interval"
        );
    }

    #[test]
    fn a_leader_change_starts_countdowns_from_the_checkpoint() {
        // Proves a member that stops leading forgets its deadlines, and on leading again counts
        // each lease from its checkpointed remaining TTL, not from where it had been.
        let lessor = Lessor::new(1, 0, CHECKPOINT);
        let t0 = Instant::now();
        lessor.tick(t0, &[lease(7, 10, None)], true);
        assert_eq!(lessor.tick(t0 + secs(5), &[], false), Duties::default());
        assert_eq!(lessor.remaining(7, t0 + secs(5)), None);
        // Leading again at t0+20 with a checkpoint of 4 s: due at t0+24, not at t0+10.
        let table = [lease(7, 10, Some(4))];
        assert!(lessor.tick(t0 + secs(20), &table, true).revokes.is_empty());
        assert!(lessor.tick(t0 + secs(23), &table, true).revokes.is_empty());
        assert_eq!(lessor.tick(t0 + secs(24), &table, true).revokes, vec![7]);
    }

    #[test]
    fn a_zero_ttl_is_due_at_once() {
        // Proves a lease granted with TTL 0 (or a checkpoint of 0) expires on the next tick.
        let lessor = Lessor::new(1, 0, CHECKPOINT);
        let t0 = Instant::now();
        let table = [lease(1, 0, None), lease(2, 10, Some(0))];
        assert_eq!(lessor.tick(t0, &table, true).revokes, vec![1, 2]);
    }
}
