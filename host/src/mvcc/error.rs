//! Errors of the MVCC store.
//!
//! [`MvccError`] values depend only on replicated state, so every member computes the same one
//! for the same log entry: they travel back to the client as part of the response. Storage
//! failures are a different kind ([`StorageError`]): a member that cannot read or write its
//! disk stops instead of answering.

use thiserror::Error;

/// An etcd error decided by the store's state. `api/status.rs` maps each to etcd's gRPC code
/// and exact message.
#[derive(Clone, Debug, PartialEq, Eq, Error, serde::Serialize, serde::Deserialize)]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("key not found")]
    KeyNotFound,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    /// A guard plugin denied the write.
    #[error("guard {binding} denied the write: {reason}")]
    GuardDenied { binding: String, reason: String },
    /// A plugin trapped, ran out of fuel or hit a limit, under a fail-closed binding.
    #[error("plugin binding {binding} failed: {reason}")]
    PluginFailed { binding: String, reason: String },
    /// A computed compare names no compare binding.
    #[error("no compare binding named {binding:?}")]
    NoSuchCompare { binding: String },
    /// A Put of an empty key reached apply (the API refuses it before proposing, with the
    /// same words).
    #[error("key is not provided")]
    KeyNotProvided,
    /// A Put of a key longer than [`super::MAX_KEY_BYTES`] reached apply. The API refuses
    /// such puts before proposing; this keeps apply total for a log written by anything else.
    #[error("key is too long: {0} bytes, at most {max} can be stored", max = super::MAX_KEY_BYTES)]
    KeyTooLong(usize),
}

/// The disk failed us. Never turned into a client response by the state machine.
#[derive(Debug, Error)]
#[error("storage: {0}")]
pub struct StorageError(#[from] pub fjall::Error);

/// Either outcome of a store operation.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Storage(StorageError(e))
    }
}
