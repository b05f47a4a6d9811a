//! etcd's alarms: member-raised conditions, replicated through Raft, that change what the
//! cluster accepts until an operator clears them.
//!
//! - **NOSPACE**: raised by a member whose database has outgrown `--quota-backend-bytes` (or
//!   whose disk is nearly full) when a request would add to it. While any member's NOSPACE
//!   alarm is active, apply refuses what would grow the store (puts, txns that put, lease
//!   grants) with etcd's `database space exceeded`; reads, deletes, compaction and alarm
//!   disarm still work.
//! - **CORRUPT**: raised when members' histories disagree. While active, apply refuses every
//!   KV and lease change with `corrupt cluster`, and members refuse reads.
//!
//! The table is replicated state (`alarms` keyspace, key = member ID ++ kind), changed only by
//! `Command::Alarm` in apply, and mirrored in memory for the API, like the auth store.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mvcc::{Fault, RequestOp, WriteRequest};
use crate::storage::{SideTable, SideWrites, Storage};

/// An alarm type, with etcd's numbers (`AlarmType` in rpc.proto; 0 is NONE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    NoSpace,
    Corrupt,
}

impl AlarmKind {
    /// From etcd's wire number; `None` for NONE and numbers etcd does not define.
    pub fn from_proto(value: i32) -> Option<AlarmKind> {
        match value {
            1 => Some(AlarmKind::NoSpace),
            2 => Some(AlarmKind::Corrupt),
            _ => None,
        }
    }

    pub fn to_proto(self) -> i32 {
        match self {
            AlarmKind::NoSpace => 1,
            AlarmKind::Corrupt => 2,
        }
    }

    /// etcd's name for it (`etcdctl alarm list`, `/health`).
    pub fn name(self) -> &'static str {
        match self {
            AlarmKind::NoSpace => "NOSPACE",
            AlarmKind::Corrupt => "CORRUPT",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    Activate,
    Deactivate,
}

/// One member's alarm.
pub type AlarmMember = (u64, AlarmKind);

/// The active alarms, in (member, kind) order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alarms {
    active: BTreeSet<AlarmMember>,
}

/// The applied alarms, shared with the API.
pub type SharedAlarms = Arc<RwLock<Alarms>>;

impl Alarms {
    /// Reads the table from storage.
    pub fn load(storage: &Storage) -> Result<Alarms, Fault> {
        let mut active = BTreeSet::new();
        for guard in storage.alarms.iter() {
            let key = guard.key()?;
            match decode(&key) {
                Some(alarm) => {
                    active.insert(alarm);
                }
                None => {
                    return Err(Fault::Corrupt {
                        what: "alarm record",
                        detail: format!("{key:?}"),
                    });
                }
            }
        }
        Ok(Alarms { active })
    }

    /// Applies an activation or deactivation as etcd does: activating answers the member's
    /// alarm (new or already active); deactivating answers the alarm it removed, or nothing
    /// if it was not active.
    pub fn apply(
        &mut self,
        side: &mut SideWrites<'_>,
        action: AlarmAction,
        member: u64,
        kind: AlarmKind,
    ) -> Option<AlarmMember> {
        let alarm = (member, kind);
        match action {
            AlarmAction::Activate => {
                if self.active.insert(alarm) {
                    side.insert(SideTable::Alarms, &encode(alarm), Vec::new());
                }
                Some(alarm)
            }
            AlarmAction::Deactivate => {
                if !self.active.remove(&alarm) {
                    return None;
                }
                side.remove(SideTable::Alarms, &encode(alarm));
                Some(alarm)
            }
        }
    }

    /// Every active alarm, or those of one kind.
    pub fn list(&self, kind: Option<AlarmKind>) -> Vec<AlarmMember> {
        self.active
            .iter()
            .filter(|(_, k)| kind.is_none_or(|want| *k == want))
            .copied()
            .collect()
    }

    /// Whether some member has an alarm of `kind` active.
    pub fn has(&self, kind: AlarmKind) -> bool {
        self.active.iter().any(|(_, k)| *k == kind)
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

fn encode((member, kind): AlarmMember) -> Vec<u8> {
    let mut key = member.to_be_bytes().to_vec();
    key.push(kind.to_proto() as u8);
    key
}

fn decode(key: &[u8]) -> Option<AlarmMember> {
    let member = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let kind = AlarmKind::from_proto(i32::from(*key.get(8)?))?;
    (key.len() == 9).then_some((member, kind))
}

/// etcd's default quota (`--quota-backend-bytes 0`): 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// With less than this free on the data dir's filesystem, a write that would grow the store
/// raises NOSPACE whatever the quota: the cluster stays readable instead of meeting a full
/// disk (an improvement on etcd, which crashes there). It must cover what fjall writes in a
/// burst between two samples (a compaction rewrites blob files of up to 64 MiB before it
/// deletes the old ones), which a 64 MiB margin was measured not to; see docs/operations.md
/// ("A full disk") for a burst this one did not cover either.
pub const LOW_DISK_BYTES: u64 = 256 << 20;
/// How often a member measures its database and its disk.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// `--quota-backend-bytes` and what the member last measured, for the check every write
/// that grows the store passes before it is proposed (etcd's quota check). Measuring walks
/// the data dir, so a background task does it every [`SAMPLE_EVERY`] and requests read the
/// last sample.
#[derive(Debug)]
pub struct Quota {
    /// The quota in bytes; `None` for none (a negative flag value, as etcd).
    pub limit: Option<u64>,
    /// The state's size in use (`Storage::disk_space_in_use`, `Status.dbSizeInUse`).
    size: AtomicU64,
    /// Bytes free to this process on the data dir's filesystem.
    free: AtomicU64,
}

impl Quota {
    /// The quota `--quota-backend-bytes` asks for.
    pub fn new(flag: i64) -> Quota {
        Quota {
            limit: match flag {
                0 => Some(DEFAULT_QUOTA_BYTES),
                n if n < 0 => None,
                n => Some(n as u64),
            },
            size: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
        }
    }

    /// Measures `storage` (its size in use, and the free space of its filesystem), records
    /// it, and returns the free bytes. Walks no directory, but asks the filesystem.
    pub fn measure(&self, storage: &Storage) -> u64 {
        let free = free_bytes(storage.dir());
        self.sample(storage.disk_space_in_use(), free);
        free
    }

    /// Records a measurement.
    pub fn sample(&self, size: u64, free: u64) {
        self.size.store(size, Ordering::Relaxed);
        self.free.store(free, Ordering::Relaxed);
    }

    /// The last measured database size.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Whether a request adding about `cost` bytes must be refused: the database would reach
    /// the quota, or the disk is nearly full. A request that adds nothing always passes (as
    /// in etcd 3.4: deletes and read-only txns work while the alarm is raised).
    pub fn refuses(&self, cost: u64) -> bool {
        if cost == 0 {
            return false;
        }
        let over_quota = self
            .limit
            .is_some_and(|limit| self.size().saturating_add(cost) >= limit);
        over_quota || self.free.load(Ordering::Relaxed) < LOW_DISK_BYTES.saturating_add(cost)
    }
}

/// Bytes free to unprivileged writers on the filesystem holding `dir` (`u64::MAX` if it
/// cannot be asked: then only the quota decides).
pub fn free_bytes(dir: &std::path::Path) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        Err(_) => u64::MAX,
    }
}

/// About how many bytes `request` adds to the store (etcd's quota cost): each put's key and
/// value plus a fixed overhead, for a txn the larger branch, puts counted at any depth (etcd
/// 3.4 looks only at the top level); 0 for what adds nothing, so `cost > 0` is whether the
/// request grows the store.
pub fn cost(request: &WriteRequest) -> u64 {
    const PUT_OVERHEAD: u64 = 64;
    fn ops(ops: &[RequestOp]) -> u64 {
        let mut total = 0;
        let mut pending: Vec<&[RequestOp]> = vec![ops];
        while let Some(ops) = pending.pop() {
            for op in ops {
                match op {
                    RequestOp::Put(p) => {
                        total += (p.key.len() + p.value.len()) as u64 + PUT_OVERHEAD
                    }
                    RequestOp::Txn(inner) => {
                        pending.push(&inner.success);
                        pending.push(&inner.failure);
                    }
                    RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
                }
            }
        }
        total
    }
    match request {
        WriteRequest::Put(p) => (p.key.len() + p.value.len()) as u64 + PUT_OVERHEAD,
        WriteRequest::Txn(txn) => ops(&txn.success).max(ops(&txn.failure)),
        WriteRequest::DeleteRange(_) | WriteRequest::Compact(_) => 0,
    }
}

/// What a lease grant adds (etcd counts a fixed size too).
pub const LEASE_COST: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        for alarm in [(1, AlarmKind::NoSpace), (u64::MAX, AlarmKind::Corrupt)] {
            assert_eq!(decode(&encode(alarm)), Some(alarm));
        }
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&[0, 0, 0, 0, 0, 0, 0, 1, 9]), None);
        assert_eq!(decode(&[0, 0, 0, 0, 0, 0, 0, 1, 1, 0]), None);
    }

    #[test]
    fn wire_numbers_are_etcds() {
        assert_eq!(AlarmKind::from_proto(0), None);
        assert_eq!(AlarmKind::from_proto(1), Some(AlarmKind::NoSpace));
        assert_eq!(AlarmKind::from_proto(2), Some(AlarmKind::Corrupt));
        assert_eq!(AlarmKind::Corrupt.to_proto(), 2);
    }
}
