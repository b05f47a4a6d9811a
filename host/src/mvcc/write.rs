//! Writes: one mutating request becomes one fjall batch and one revision, its changes
//! numbered by sub-revision in history (which is what watchers read).
//!
//! A [`WriteTxn`] reads the committed state through a snapshot and everything written since
//! (by earlier requests of the same [`ApplyBatch`](super::ApplyBatch) and by its own earlier
//! ops) through an overlay, so later ops of a Txn see earlier ones, as in etcd. Nothing is
//! visible to readers until the batch commits.

use fjall::{OwnedWriteBatch, Snapshot};

use super::encoding::{self, INDEX_DELETE, INDEX_PUT, KeyMeta, Rev, StoredEvent};
use super::error::Error;
use super::key_range::KeyRange;
use super::read::{ReadView, SharedOverlay};
use super::types::{EventKind, KeyValue, Revision};
use crate::storage::Storage;

/// The writes of one request, not yet committed.
pub struct WriteTxn<'a> {
    storage: &'a Storage,
    snap: Snapshot,
    /// The store revision before this request.
    pub begin_rev: Revision,
    pub compact_rev: Revision,
    batch: &'a mut OwnedWriteBatch,
    overlay: &'a mut SharedOverlay,
    /// Changes (history records) written so far: the next one's sub-revision.
    changes: i64,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn new(
        storage: &'a Storage,
        snap: Snapshot,
        begin_rev: Revision,
        compact_rev: Revision,
        batch: &'a mut OwnedWriteBatch,
        overlay: &'a mut SharedOverlay,
    ) -> Self {
        WriteTxn {
            storage,
            snap,
            begin_rev,
            compact_rev,
            batch,
            overlay,
            changes: 0,
        }
    }

    /// The revision this request's writes get.
    pub fn write_rev(&self) -> Revision {
        self.begin_rev + 1
    }

    /// True once the request has changed something (and so takes a revision).
    pub fn changed(&self) -> bool {
        self.changes > 0
    }

    /// The state before this request. Valid until the request's first write: the txn logic
    /// evaluates compares and checks through it before writing anything.
    pub fn before(&self) -> ReadView<'_> {
        debug_assert!(!self.changed(), "before() after the request wrote");
        ReadView {
            storage: self.storage,
            snap: self.snap.clone(),
            rev: self.begin_rev,
            compact_rev: self.compact_rev,
            overlay: Some(&*self.overlay),
        }
    }

    /// The state including this request's writes so far (etcd: a txn reads its own writes).
    pub fn current(&self) -> ReadView<'_> {
        ReadView {
            storage: self.storage,
            snap: self.snap.clone(),
            rev: if self.changed() {
                self.write_rev()
            } else {
                self.begin_rev
            },
            compact_rev: self.compact_rev,
            overlay: Some(&*self.overlay),
        }
    }

    /// Writes `key = value` with `lease`; returns the version it replaced.
    ///
    /// The replaced version is loaded (value included) only when `load_prev` asks for it: most
    /// puts need just its metadata, and reading values costs.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        load_prev: bool,
    ) -> Result<Option<KeyValue>, Error> {
        let prev_meta = self.current().meta(key)?;
        let prev = match (prev_meta, load_prev) {
            (Some(_), true) => self.current().get(key)?,
            _ => None,
        };
        let at = self.next_rev();
        let meta = KeyMeta {
            create_revision: prev_meta.map_or(at.main, |p| p.create_revision),
            mod_revision: at.main,
            version: prev_meta.map_or(1, |p| p.version + 1),
            lease,
            mod_sub: at.sub,
        };
        let event = StoredEvent {
            key: key.to_vec(),
            kind: EventKind::Put,
            create_revision: meta.create_revision,
            version: meta.version,
            lease,
            value: value.clone(),
        };
        self.batch
            .insert(&self.storage.kv_meta, key, encoding::encode(&meta));
        self.batch
            .insert(&self.storage.kv_revs, at.encode(), encoding::encode(&event));
        self.batch.insert(
            &self.storage.kv_index,
            encoding::index_key(key, at),
            [INDEX_PUT],
        );
        let prev_lease = prev_meta.map_or(0, |p| p.lease);
        if prev_lease != lease {
            self.detach(prev_lease, key);
            if lease != 0 {
                self.batch
                    .insert(&self.storage.kv_lease, encoding::lease_key(lease, key), []);
            }
        }
        self.changes += 1;
        std::sync::Arc::make_mut(self.overlay).insert(key.to_vec(), Some((meta, value)));
        Ok(prev)
    }

    /// Deletes every live key in `range`; returns the deleted versions in key order.
    pub fn delete_range(&mut self, range: &KeyRange) -> Result<Vec<KeyValue>, Error> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.current().metas(range)?;
        let mut deleted = Vec::with_capacity(keys.len());
        for (key, meta) in keys {
            self.detach(meta.lease, &key);
            let prev = self
                .current()
                .get(&key)?
                .expect("key listed as live a moment ago");
            let at = self.next_rev();
            let event = StoredEvent {
                key: key.clone(),
                kind: EventKind::Delete,
                create_revision: 0,
                version: 0,
                lease: 0,
                value: Vec::new(),
            };
            self.batch.remove(&self.storage.kv_meta, key.as_slice());
            self.batch
                .insert(&self.storage.kv_revs, at.encode(), encoding::encode(&event));
            self.batch.insert(
                &self.storage.kv_index,
                encoding::index_key(&key, at),
                [INDEX_DELETE],
            );
            self.changes += 1;
            std::sync::Arc::make_mut(self.overlay).insert(key, None);
            deleted.push(prev);
        }
        Ok(deleted)
    }

    /// Removes `key` from the keys `lease` holds (no-op for lease 0).
    fn detach(&mut self, lease: i64, key: &[u8]) {
        if lease != 0 {
            self.batch
                .remove(&self.storage.kv_lease, encoding::lease_key(lease, key));
        }
    }

    fn next_rev(&self) -> Rev {
        Rev {
            main: self.write_rev(),
            sub: self.changes,
        }
    }
}
