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

const CURRENT_REV: &[u8] = b"mvcc/current_rev";
const COMPACT_REV: &[u8] = b"mvcc/compact_rev";

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

/// Entry points of the store.
#[derive(Debug)]
pub struct Mvcc;

impl Mvcc {
    /// A consistent view of the latest state, for reads outside the apply path.
    pub fn read_view(storage: &Storage) -> Result<ReadView<'_>, Error> {
        let snap = storage.db.snapshot();
        let rev = read_i64(&snap, storage, CURRENT_REV)?.unwrap_or(1);
        let compact_rev = read_i64(&snap, storage, COMPACT_REV)?.unwrap_or(-1);
        Ok(ReadView {
            storage,
            snap,
            rev,
            compact_rev,
            overlay: None,
        })
    }

    /// Applies one write into `batch`. The caller commits the batch (with whatever else must be
    /// atomic with it, such as the applied log id) before applying the next write, since the
    /// next write reads the committed state. An etcd error leaves `batch` untouched.
    pub fn apply(
        storage: &Storage,
        batch: &mut OwnedWriteBatch,
        req: &WriteRequest,
        leases: &dyn LeaseLookup,
    ) -> Result<Applied, StorageError> {
        let view = Mvcc::read_view(storage).map_err(into_storage)?;
        let (begin_rev, compact_rev, snap) = (view.rev, view.compact_rev, view.snap.clone());
        if let WriteRequest::Compact(c) = req {
            if let Err(e) = compact::check(&view, c.revision) {
                return Ok(Applied {
                    response: Err(e),
                    events: Vec::new(),
                });
            }
            compact::compact(storage, &view, c.revision, batch).map_err(into_storage)?;
            batch.insert(&storage.meta, COMPACT_REV, c.revision.to_be_bytes());
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
                    batch.insert(&storage.meta, CURRENT_REV, (begin_rev + 1).to_be_bytes());
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

fn read_i64(snap: &fjall::Snapshot, storage: &Storage, key: &[u8]) -> Result<Option<i64>, Error> {
    match snap.get(&storage.meta, key)? {
        None => Ok(None),
        Some(raw) => {
            let bytes: [u8; 8] = raw
                .as_ref()
                .try_into()
                .map_err(|_| read::corrupt(format!("bad meta {key:?}")))?;
            Ok(Some(i64::from_be_bytes(bytes)))
        }
    }
}

fn into_storage(e: Error) -> StorageError {
    match e {
        Error::Storage(s) => s,
        // Only storage errors can come out of building a view or compacting.
        Error::Mvcc(m) => StorageError(fjall::Error::Io(std::io::Error::other(m.to_string()))),
    }
}
