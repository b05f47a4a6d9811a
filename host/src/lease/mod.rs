//! Leases: the replicated lease table and its apply logic, plus the leader-only [`Lessor`]
//! that decides expiry.
//!
//! What is replicated (and so deterministic) lives here: which leases exist, each one's
//! granted TTL and last checkpointed remaining TTL, and (through `mvcc`) which keys each holds. Time does not: only the leader's
//! [`Lessor`] keeps deadlines, from its own clock, and it expires a lease by proposing a
//! revoke through Raft, so every member deletes the same keys at the same revision.

pub mod lessor;

use fjall::Readable;

pub use lessor::{Duties, Lessor, LessorRequest};

use crate::mvcc::{ApplyBatch, Fault, LeaseLookup, MvccError, Revision};
use crate::storage::{SideTable, SideWrites, Storage};

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// Writes the lease table in the apply batch.
struct LeaseTable<'b>(SideWrites<'b>);

impl<'b> LeaseTable<'b> {
    fn of(batch: &'b mut ApplyBatch<'_>) -> Self {
        LeaseTable(batch.side())
    }

    /// Records lease `id` with its granted TTL and, if checkpointed, its remaining TTL.
    fn put(&mut self, id: i64, ttl_secs: i64, remaining_secs: Option<i64>) {
        self.0.insert(
            SideTable::Leases,
            &lease_key(id),
            encode(ttl_secs, remaining_secs),
        );
    }

    fn remove(&mut self, id: i64) {
        self.0.remove(SideTable::Leases, &lease_key(id));
    }
}

/// Grants lease `id` with `ttl_secs`, unless it exists.
pub fn grant(
    batch: &mut ApplyBatch<'_>,
    storage: &Storage,
    id: i64,
    ttl_secs: i64,
) -> Result<Result<(), MvccError>, Fault> {
    batch.commit_pending()?;
    if batch
        .committed()
        .contains_key(&storage.leases, lease_key(id))?
    {
        return Ok(Err(MvccError::LeaseExists));
    }
    LeaseTable::of(batch).put(id, ttl_secs, None);
    batch.commit_pending()?;
    Ok(Ok(()))
}

/// Records remaining TTLs (`Some`) or clears them (`None`). Leases that no longer exist are
/// skipped: a checkpoint may race with a revoke. Changes no revision, as in etcd.
pub fn checkpoint(
    batch: &mut ApplyBatch<'_>,
    storage: &Storage,
    checkpoints: &[(i64, Option<i64>)],
) -> Result<(), Fault> {
    batch.commit_pending()?;
    for (id, remaining) in checkpoints {
        let Some(raw) = batch.committed().get(&storage.leases, lease_key(*id))? else {
            continue;
        };
        let (ttl, _) = decode(&raw);
        LeaseTable::of(batch).put(*id, ttl, *remaining);
    }
    batch.commit_pending()?;
    Ok(())
}

/// Revokes lease `id`: deletes every key it holds in one revision, then the lease.
pub fn revoke(
    batch: &mut ApplyBatch<'_>,
    storage: &Storage,
    id: i64,
) -> Result<Result<Revision, MvccError>, Fault> {
    batch.commit_pending()?;
    if !batch
        .committed()
        .contains_key(&storage.leases, lease_key(id))?
    {
        return Ok(Err(MvccError::LeaseNotFound));
    }
    let deleted = batch.delete_lease_keys(id)?;
    LeaseTable::of(batch).remove(id);
    batch.commit_pending()?;
    Ok(Ok(deleted))
}

/// A lease, its granted TTL and its last checkpointed remaining TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl_secs: i64,
    /// What the leader had left when it last checkpointed; `None` after a keepalive (a new
    /// leader then starts from the full TTL).
    pub remaining_secs: Option<i64>,
}

/// Reads the committed lease table.
#[derive(Clone, Copy, Debug)]
pub struct Leases<'a>(pub &'a Storage);

impl Leases<'_> {
    pub fn get(&self, id: i64) -> Result<Option<LeaseInfo>, Fault> {
        Ok(self.0.leases.get(lease_key(id))?.map(|raw| {
            let (ttl_secs, remaining_secs) = decode(&raw);
            LeaseInfo {
                id,
                ttl_secs,
                remaining_secs,
            }
        }))
    }

    /// Every lease, in id order.
    pub fn all(&self) -> Result<Vec<LeaseInfo>, Fault> {
        let mut out = Vec::new();
        for guard in self.0.leases.iter() {
            let (k, v) = guard.into_inner()?;
            let id = k
                .as_ref()
                .try_into()
                .map(|b| u64::from_be_bytes(b) as i64)
                .unwrap_or(0);
            let (ttl_secs, remaining_secs) = decode(&v);
            out.push(LeaseInfo {
                id,
                ttl_secs,
                remaining_secs,
            });
        }
        Ok(out)
    }

    /// The keys lease `id` holds, in key order.
    pub fn keys(&self, id: i64) -> Result<Vec<Vec<u8>>, Fault> {
        let mut out = Vec::new();
        for guard in self.0.kv_lease.prefix(lease_key(id)) {
            out.push(guard.key()?[8..].to_vec());
        }
        Ok(out)
    }
}

impl LeaseLookup for Leases<'_> {
    fn lease_exists(&self, id: i64) -> bool {
        // A read error here would mean a failing disk; the next write to it stops the node.
        matches!(self.get(id), Ok(Some(_)))
    }
}

/// A lease record: the granted TTL, then the checkpointed remaining TTL if there is one
/// (8 or 16 bytes, big-endian).
fn encode(ttl_secs: i64, remaining_secs: Option<i64>) -> Vec<u8> {
    let mut out = ttl_secs.to_be_bytes().to_vec();
    if let Some(r) = remaining_secs {
        out.extend_from_slice(&r.to_be_bytes());
    }
    out
}

fn decode(raw: &[u8]) -> (i64, Option<i64>) {
    let word = |b: &[u8]| b.try_into().map(i64::from_be_bytes).unwrap_or(0);
    match raw.len() {
        16 => (word(&raw[..8]), Some(word(&raw[8..]))),
        _ => (word(raw), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Mvcc, PutRequest, WriteRequest};

    fn put(key: &str, lease: i64) -> WriteRequest {
        WriteRequest::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    }

    #[test]
    fn revoke_deletes_every_held_key_in_one_revision() {
        // Proves grant/attach/move/revoke keep the lease index exact and revoke is one revision.
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open");
        let mut batch = ApplyBatch::new(&storage, Mvcc::revisions(&storage).expect("revisions"));
        assert_eq!(grant(&mut batch, &storage, 7, 10).expect("io"), Ok(()));
        assert_eq!(
            grant(&mut batch, &storage, 7, 10).expect("io"),
            Err(MvccError::LeaseExists)
        );
        assert_eq!(grant(&mut batch, &storage, 8, 10).expect("io"), Ok(()));
        for (key, lease) in [("a", 7), ("b", 7), ("c", 8), ("b", 8), ("d", 0)] {
            let applied = batch
                .apply(&put(key, lease), &Leases(&storage))
                .expect("io");
            assert!(applied.is_ok(), "put {key} with lease {lease}");
        }
        let unknown = batch.apply(&put("e", 99), &Leases(&storage)).expect("io");
        assert_eq!(unknown, Err(MvccError::LeaseNotFound));
        batch.commit_pending().expect("commit");
        assert_eq!(Leases(&storage).keys(7).expect("keys"), vec![b"a".to_vec()]);
        assert_eq!(
            Leases(&storage).keys(8).expect("keys"),
            vec![b"b".to_vec(), b"c".to_vec()]
        );

        let before = batch.revisions().current;
        let rev = revoke(&mut batch, &storage, 8)
            .expect("io")
            .expect("lease 8 exists");
        assert_eq!(rev, before + 1, "one revision for the whole revoke");
        let (events, _) = Mvcc::read_view(&storage)
            .expect("view")
            .events(rev, rev, &crate::mvcc::KeyRange::all(), false, usize::MAX)
            .expect("history");
        let keys: Vec<_> = events.iter().map(|e| e.kv.key.clone()).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert!(events.iter().all(|e| e.kv.mod_revision == rev));
        assert_eq!(
            revoke(&mut batch, &storage, 8).expect("io"),
            Err(MvccError::LeaseNotFound)
        );
        batch.commit().expect("commit");
        let leases: Vec<i64> = Leases(&storage)
            .all()
            .expect("all")
            .iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(leases, vec![7]);
        assert!(Leases(&storage).keys(8).expect("keys").is_empty());
        let view = Mvcc::read_view(&storage).expect("view");
        assert!(view.get(b"b").expect("get").is_none() && view.get(b"a").expect("get").is_some());
    }
}
