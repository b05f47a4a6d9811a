//! Applying writes: many requests, one fjall batch.
//!
//! An [`ApplyBatch`] applies requests one after another into a single uncommitted batch.
//! Each request sees the ones before it: reads of the latest state go through the batch's
//! overlay (the keys written since the last commit), exactly as the later ops of a Txn see the
//! earlier ones. Reads of history (compaction, a range at an explicit revision) cannot see the
//! overlay, so the batch commits first when a request needs them. Every commit records the
//! position of the last applied request with the revisions, so the state on disk always says
//! exactly how far the log has been applied.

use fjall::{OwnedWriteBatch, Snapshot};

use super::error::{Error, Fault};
use super::key_range::KeyRange;
use super::read::{ReadView, SharedOverlay};
use super::types::Revision;
use super::write::WriteTxn;
use super::{
    Applied, CompactResponse, LeaseLookup, NoHooks, POSITION, RequestOp, Revisions, TxnRequest,
    WriteHooks, WriteRequest, WriteResponse, compact, into_fault, txn,
};
use crate::storage::{SideWrites, Storage};

/// Uncommitted writes of one or more requests.
pub struct ApplyBatch<'a> {
    storage: &'a Storage,
    batch: OwnedWriteBatch,
    /// The committed state the batch builds on.
    snap: Snapshot,
    /// Keys written since `snap` (`None` = deleted). Plugin calls share it, never copy it.
    overlay: SharedOverlay,
    revs: Revisions,
    /// The opaque log position of the last request applied, recorded at each commit.
    position: Option<Vec<u8>>,
    /// Requests applied since the last commit.
    pending: usize,
}

impl<'a> ApplyBatch<'a> {
    /// Starts applying on top of the committed state, whose counters are `revs`.
    pub fn new(storage: &'a Storage, revs: Revisions) -> Self {
        ApplyBatch {
            storage,
            batch: new_batch(storage),
            snap: storage.db.snapshot(),
            overlay: SharedOverlay::default(),
            revs,
            position: None,
            pending: 0,
        }
    }

    /// The counters after the requests applied so far.
    pub fn revisions(&self) -> Revisions {
        self.revs
    }

    /// Applies one request. An etcd error is a value in the result and leaves no write behind;
    /// a storage error means the batch must be dropped and the node stopped.
    pub fn apply(
        &mut self,
        req: &WriteRequest,
        leases: &dyn LeaseLookup,
    ) -> Result<Applied, Fault> {
        self.apply_with(req, leases, &mut NoHooks)
    }

    /// Applies one request with plugins in its path. The hooks read the state before the
    /// request through the same view the request itself reads (committed data plus the
    /// batch's overlay), so what they read is the same however the log was chunked into
    /// batches.
    pub fn apply_with(
        &mut self,
        req: &WriteRequest,
        leases: &dyn LeaseLookup,
        hooks: &mut dyn WriteHooks,
    ) -> Result<Applied, Fault> {
        if self.pending > 0 && reads_history(req) {
            self.flush()?;
        }
        self.pending += 1;
        let (begin_rev, compact_rev) = (self.revs.current, self.revs.compact);
        if let WriteRequest::Compact(c) = req {
            let view = ReadView {
                storage: self.storage,
                snap: self.snap.clone(),
                rev: begin_rev,
                compact_rev,
                overlay: None,
            };
            if let Err(e) = compact::check(&view, c.revision) {
                return Ok(Err(e));
            }
            compact::compact(self.storage, &view, c.revision, &mut self.batch)
                .map_err(into_fault)?;
            self.revs.compact = c.revision;
            return Ok(Ok(WriteResponse::Compact(CompactResponse {
                revision: begin_rev,
            })));
        }
        let mut w = WriteTxn::new(
            self.storage,
            self.snap.clone(),
            begin_rev,
            compact_rev,
            &mut self.batch,
            &mut self.overlay,
        );
        let result = match req {
            WriteRequest::Put(p) => txn::put(&mut w, p, leases, hooks).map(WriteResponse::Put),
            WriteRequest::DeleteRange(d) => {
                txn::delete_range(&mut w, d, hooks).map(WriteResponse::DeleteRange)
            }
            WriteRequest::Txn(t) => txn::txn(&mut w, t, leases, hooks).map(WriteResponse::Txn),
            WriteRequest::Compact(_) => unreachable!("compaction returned above"),
        };
        let changed = w.changed();
        match result {
            Ok(resp) => {
                if changed {
                    self.revs.current = begin_rev + 1;
                }
                Ok(Ok(resp))
            }
            // Every etcd error is found by the checks that run before the first write (see
            // `txn.rs`). Should that ever break, half a request is in the batch: stop the node
            // rather than commit it.
            Err(Error::Mvcc(e)) if changed => Err(Fault::Invariant(format!(
                "etcd error {e} after writes began; refusing to commit a partial request"
            ))),
            Err(Error::Mvcc(e)) => Ok(Err(e)),
            Err(Error::Fault(e)) => Err(e),
        }
    }

    /// The keys lease `lease` holds, in key order, as of the requests applied so far.
    pub fn lease_keys(&mut self, lease: i64) -> Result<Vec<Vec<u8>>, Fault> {
        self.commit_pending()?;
        super::read::lease_keys_in(&self.snap, self.storage, lease).map_err(Fault::Storage)
    }

    /// Deletes every key `lease` holds, in one revision (one DELETE event each), as when a
    /// lease is revoked or expires. Commits what came before first, so the lease's keys are
    /// read from committed state. Returns the revision after it.
    pub fn delete_lease_keys(&mut self, lease: i64) -> Result<Revision, Fault> {
        let keys = self.lease_keys(lease)?;
        let begin_rev = self.revs.current;
        let mut w = WriteTxn::new(
            self.storage,
            self.snap.clone(),
            begin_rev,
            self.revs.compact,
            &mut self.batch,
            &mut self.overlay,
        );
        for key in keys {
            w.delete_range(&KeyRange::Single(key)).map_err(into_fault)?;
            // Counted as etcd counts a revoked lease's keys, one delete each (metrics only).
            crate::metrics::METRICS.deletes.inc();
        }
        if w.changed() {
            self.revs.current = begin_rev + 1;
        }
        self.pending += 1;
        Ok(self.revs.current)
    }

    /// Commits what has been applied so far, so later reads of committed state see it.
    pub fn commit_pending(&mut self) -> Result<(), Fault> {
        if self.pending > 0 {
            self.flush()?;
        }
        Ok(())
    }

    /// The state as of the requests applied so far (committed data plus this batch's
    /// overlay), as the next request will find it: what a policy hook deciding on that
    /// request reads.
    pub fn before(&self) -> ReadView<'_> {
        ReadView {
            storage: self.storage,
            snap: self.snap.clone(),
            rev: self.revs.current,
            compact_rev: self.revs.compact,
            overlay: Some(&self.overlay),
        }
    }

    /// The committed state this batch builds on (current after `commit_pending`).
    pub fn committed(&self) -> &Snapshot {
        &self.snap
    }

    /// Writes to the state tables outside the MVCC store (leases, plugins, membership), in
    /// this batch.
    pub fn side(&mut self) -> SideWrites<'_> {
        SideWrites::new(&mut self.batch, self.storage, &mut self.pending)
    }

    /// Sets the log position of the request just applied (opaque to the store).
    pub fn set_position(&mut self, applied: &[u8]) {
        self.position = Some(applied.to_vec());
    }

    /// Commits everything applied; returns the counters after it.
    pub fn commit(mut self) -> Result<Revisions, Fault> {
        self.flush()?;
        Ok(self.revs)
    }

    /// Commits the batch with the position and revisions, and starts over on the new state.
    fn flush(&mut self) -> Result<(), Fault> {
        if let Some(applied) = &self.position {
            let mut raw = Vec::with_capacity(16 + applied.len());
            raw.extend_from_slice(&self.revs.current.to_be_bytes());
            raw.extend_from_slice(&self.revs.compact.to_be_bytes());
            raw.extend_from_slice(applied);
            self.batch.insert(&self.storage.meta, POSITION, raw);
        }
        std::mem::replace(&mut self.batch, new_batch(self.storage)).commit()?;
        self.snap = self.storage.db.snapshot();
        self.overlay = SharedOverlay::default();
        self.pending = 0;
        Ok(())
    }
}

/// The state machine's batches are not synced, nor even written to the OS: the Raft log is
/// durable, and the position commits with the data, so a crash only loses entries that are
/// then re-applied from the log. Snapshots persist the state before the log is purged.
fn new_batch(storage: &Storage) -> OwnedWriteBatch {
    storage.db.batch().durability(None)
}

/// True when `req` reads history, which the overlay cannot show.
fn reads_history(req: &WriteRequest) -> bool {
    fn txn_reads_history(t: &TxnRequest) -> bool {
        t.success.iter().chain(&t.failure).any(|op| match op {
            RequestOp::Range(r) => r.revision != 0,
            RequestOp::Txn(nested) => txn_reads_history(nested),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
        })
    }
    match req {
        WriteRequest::Compact(_) => true,
        WriteRequest::Txn(t) => txn_reads_history(t),
        WriteRequest::Put(_) | WriteRequest::DeleteRange(_) => false,
    }
}
