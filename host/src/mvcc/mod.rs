//! The multi-version key-value store: etcd's data model on fjall.
//!
//! Owns revisions, key versions, history, compaction and the Range/Put/DeleteRange/Txn
//! semantics. Knows nothing of Raft, protobuf or the network: the state machine calls
//! [`Mvcc::apply`] with a decoded request and a write batch, and the API reads through
//! [`Mvcc::read_view`]. Everything here is a pure function of the applied requests (no clock,
//! no randomness, ordered collections only), so every member computes the same state.

pub mod compact;
pub mod encoding;
pub mod error;
pub mod key_range;
#[cfg(test)]
mod mvcc_test;
pub mod read;
pub mod txn;
pub mod types;
pub mod validate;
pub mod write;

use fjall::{OwnedWriteBatch, Readable};
use serde::{Deserialize, Serialize};

pub use error::{Error, MvccError, StorageError};
pub use key_range::KeyRange;
pub use read::ReadView;
pub use txn::{LeaseLookup, NoLeases};
pub use types::*;

use crate::storage::Storage;
use write::WriteTxn;

/// The store's position: its two revisions and the opaque position of the log entry that
/// produced them (see [`Mvcc::record_position`]). One record, so an applied entry writes one
/// key and a read view reads one.
const POSITION: &[u8] = b"position";

/// A request that changes the store (what the Raft log carries for the KV service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
}

/// The answer to a [`WriteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactResponse),
}

impl WriteResponse {
    /// The header revision of the response.
    pub fn revision(&self) -> Revision {
        match self {
            WriteResponse::Put(r) => r.revision,
            WriteResponse::DeleteRange(r) => r.revision,
            WriteResponse::Txn(r) => r.revision,
            WriteResponse::Compact(r) => r.revision,
        }
    }
}

/// The outcome of applying one write: the response (or an etcd error, as a value) and the
/// events it produced for watchers.
#[derive(Debug)]
pub struct Applied {
    pub response: Result<WriteResponse, MvccError>,
    pub events: Vec<Event>,
}

/// The store's two counters. The state machine keeps them in memory (it is the only writer),
/// so applying a write looks neither up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revisions {
    /// The revision of the latest change (1 for an empty store).
    pub current: Revision,
    /// Reads below this fail with `Compacted`; -1 before the first compaction.
    pub compact: Revision,
}

/// Entry points of the store.
#[derive(Debug)]
pub struct Mvcc;

impl Mvcc {
    /// A consistent view of the latest state, for reads outside the apply path.
    pub fn read_view(storage: &Storage) -> Result<ReadView<'_>, Error> {
        let snap = storage.db.snapshot();
        let revs = revisions_in(&snap, storage)?;
        Ok(ReadView {
            storage,
            snap,
            rev: revs.current,
            compact_rev: revs.compact,
            overlay: None,
        })
    }

    /// The counters as stored (at start-up, or after a snapshot replaced the state).
    pub fn revisions(storage: &Storage) -> Result<Revisions, Error> {
        revisions_in(&storage.db.snapshot(), storage)
    }

    /// The applied-log position last recorded, as seen by `snap` (empty before any).
    pub fn applied_position(snap: &fjall::Snapshot, storage: &Storage) -> Result<Vec<u8>, Error> {
        Ok(read_position(snap, storage)?
            .map(|(_, applied)| applied)
            .unwrap_or_default())
    }

    /// Records, in `batch`, the revisions after an entry and the opaque position of that entry
    /// in the log. The state machine calls this once per applied entry, in the entry's batch,
    /// so the data and "how far the log has been applied" commit together.
    pub fn record_position(
        storage: &Storage,
        batch: &mut OwnedWriteBatch,
        revs: &Revisions,
        applied: &[u8],
    ) {
        let mut raw = Vec::with_capacity(16 + applied.len());
        raw.extend_from_slice(&revs.current.to_be_bytes());
        raw.extend_from_slice(&revs.compact.to_be_bytes());
        raw.extend_from_slice(applied);
        batch.insert(&storage.meta, POSITION, raw);
    }

    /// Applies one write into `batch`. The caller commits the batch (with whatever else must be
    /// atomic with it, such as the applied log id) before applying the next write, since the
    /// next write reads the committed state. An etcd error leaves `batch` untouched. `revs`
    /// are the counters before the write; they are advanced to after it, and the caller
    /// records them with [`Mvcc::record_position`] in the same batch (a failed commit stops
    /// the node, so counters that got ahead of the disk are never used).
    pub fn apply(
        storage: &Storage,
        batch: &mut OwnedWriteBatch,
        req: &WriteRequest,
        leases: &dyn LeaseLookup,
        revs: &mut Revisions,
    ) -> Result<Applied, StorageError> {
        let snap = storage.db.snapshot();
        let view = ReadView {
            storage,
            snap: snap.clone(),
            rev: revs.current,
            compact_rev: revs.compact,
            overlay: None,
        };
        let (begin_rev, compact_rev) = (revs.current, revs.compact);
        if let WriteRequest::Compact(c) = req {
            if let Err(e) = compact::check(&view, c.revision) {
                return Ok(Applied {
                    response: Err(e),
                    events: Vec::new(),
                });
            }
            compact::compact(storage, &view, c.revision, batch).map_err(into_storage)?;
            revs.compact = c.revision;
            let response = Ok(WriteResponse::Compact(CompactResponse {
                revision: begin_rev,
            }));
            return Ok(Applied {
                response,
                events: Vec::new(),
            });
        }
        drop(view);
        let mut w = WriteTxn::new(storage, snap, begin_rev, compact_rev, batch);
        let result = match req {
            WriteRequest::Put(p) => txn::put(&mut w, p, leases).map(WriteResponse::Put),
            WriteRequest::DeleteRange(d) => {
                txn::delete_range(&mut w, d).map(WriteResponse::DeleteRange)
            }
            WriteRequest::Txn(t) => txn::txn(&mut w, t, leases).map(WriteResponse::Txn),
            WriteRequest::Compact(_) => unreachable!("handled above"),
        };
        let changed = w.changed();
        let events = w.finish();
        match result {
            Ok(resp) => {
                if changed {
                    revs.current = begin_rev + 1;
                }
                Ok(Applied {
                    response: Ok(resp),
                    events,
                })
            }
            // Every etcd error is found by the checks that run before the first write (see
            // `txn.rs`). Should that ever break, half a request is in the batch: stop the node
            // rather than commit it.
            Err(Error::Mvcc(e)) if changed => Err(StorageError(fjall::Error::Io(
                std::io::Error::other(format!(
                    "etcd error {e} after writes began; refusing to commit a partial request"
                )),
            ))),
            Err(Error::Mvcc(e)) => Ok(Applied {
                response: Err(e),
                events: Vec::new(),
            }),
            Err(Error::Storage(e)) => Err(e),
        }
    }
}

fn revisions_in(snap: &fjall::Snapshot, storage: &Storage) -> Result<Revisions, Error> {
    Ok(read_position(snap, storage)?.map_or(
        Revisions {
            current: 1,
            compact: -1,
        },
        |(revs, _)| revs,
    ))
}

fn read_position(
    snap: &fjall::Snapshot,
    storage: &Storage,
) -> Result<Option<(Revisions, Vec<u8>)>, Error> {
    let Some(raw) = snap.get(&storage.meta, POSITION)? else {
        return Ok(None);
    };
    let int = |at: usize| {
        raw.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
    };
    match (int(0), int(8)) {
        (Some(current), Some(compact)) => {
            Ok(Some((Revisions { current, compact }, raw[16..].to_vec())))
        }
        _ => Err(read::corrupt(format!("bad position record {raw:?}"))),
    }
}

fn into_storage(e: Error) -> StorageError {
    match e {
        Error::Storage(s) => s,
        // Only storage errors can come out of building a view or compacting.
        Error::Mvcc(m) => StorageError(fjall::Error::Io(std::io::Error::other(m.to_string()))),
    }
}
