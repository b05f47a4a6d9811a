//! The multi-version key-value store: etcd's data model on fjall.
//!
//! Owns revisions, key versions, history, compaction and the Range/Put/DeleteRange/Txn
//! semantics. Knows nothing of Raft, protobuf or the network: the state machine applies
//! decoded requests through an [`ApplyBatch`], and the API reads through [`Mvcc::read_view`]. Everything here is a pure function of the applied requests (no clock,
//! no randomness, ordered collections only), so every member computes the same state.

pub mod apply;
pub mod compact;
pub mod encoding;
pub mod error;
pub mod hash;
pub mod history;
pub mod key_range;
#[cfg(test)]
mod mvcc_test;
pub mod read;
pub mod txn;
pub mod types;
pub mod validate;
pub mod write;

use fjall::Readable;
use serde::{Deserialize, Serialize};

pub use apply::ApplyBatch;
pub use error::{Error, Fault, MvccError};
pub use key_range::{KeyRange, MAX_KEY_BYTES};
pub use read::{Overlay, ReadView, SharedOverlay};
pub use txn::{ComputeResult, LeaseLookup, NoHooks, NoLeases, WriteHooks, WriteOp};
pub use types::*;

use crate::storage::Storage;

/// The store's position: its two revisions and the opaque position of the log entry that
/// produced them (see [`ApplyBatch::set_position`]). One record, so an applied entry writes one
/// key and a read view reads one.
pub(crate) const POSITION: &[u8] = b"position";

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

/// What applying one request answers: its response, or the etcd error it met (which left no
/// write behind). Watchers do not need the events here: they read them from history.
pub type Applied = Result<WriteResponse, MvccError>;

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
}

pub(crate) fn revisions_in(snap: &fjall::Snapshot, storage: &Storage) -> Result<Revisions, Error> {
    Ok(read_position(snap, storage)?.map_or(
        Revisions {
            current: 1,
            compact: -1,
        },
        |(revs, _)| revs,
    ))
}

/// A position record (see [`POSITION`]) with the same revisions and no applied log entry:
/// what a restored data dir starts from, before its new log has anything in it. A record too
/// short to hold revisions is returned unchanged (and reported as corrupt when it is read).
pub(crate) fn position_without_log(record: &[u8]) -> Vec<u8> {
    record[..record.len().min(16)].to_vec()
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

/// For callers that can only meet storage errors (views, history reads, compaction): an etcd
/// error there would be a bug, and is reported as a storage failure, which stops the node.
pub(crate) fn into_fault(e: Error) -> Fault {
    match e {
        Error::Fault(s) => s,
        Error::Mvcc(m) => Fault::Invariant(format!("etcd error {m} where none can occur")),
    }
}
