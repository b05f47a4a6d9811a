//! Errors of the MVCC store.
//!
//! [`MvccError`] values depend only on replicated state, so every member computes the same one
//! for the same log entry: they travel back to the client as part of the response. Storage
//! failures are a different kind ([`Fault`]): a member that cannot read or write its
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
    /// A write that would grow the store while a NOSPACE alarm is active (`alarm.rs`).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A change while a CORRUPT alarm is active.
    #[error("corrupt cluster")]
    Corrupt,
}

/// Why this member cannot go on applying (or serving a read): never the client's doing and
/// never a value in a response. In apply it stops the member rather than let it answer
/// differently from the others; the message says what failed, for the operator's log.
#[derive(Debug, Error)]
pub enum Fault {
    /// fjall failed: the disk, or the database's own state.
    #[error("storage: {0}")]
    Storage(#[from] fjall::Error),
    /// A stored record does not decode: the data dir is damaged, or was written by something
    /// else.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The plugin host itself failed (the engine, compiling a module, a read a plugin asked
    /// for). A plugin's own trap or exhausted fuel is not a fault: its binding's failure
    /// policy decides the request.
    #[error("plugin host fault in {binding}: {reason}")]
    PluginHost { binding: String, reason: String },
    /// A rule the code relies on did not hold: a bug, caught before it was committed.
    #[error("broken invariant: {0}")]
    Invariant(String),
}

/// Either outcome of a store operation.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    #[error(transparent)]
    Fault(#[from] Fault),
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        Error::Fault(Fault::Storage(e))
    }
}
