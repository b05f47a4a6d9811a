//! The one place that turns the peer protocol's failures into `tonic::Status` (the client
//! API's are in `api/status.rs`). The sender reads only the code: `FailedPrecondition` means
//! "refused before anything ran" (another cluster, a cut link), so a forwarded request
//! may go elsewhere; `Unavailable` means openraft stopped on the receiver.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The envelope came from another cluster.
    #[error("cluster ID mismatch: this member is in cluster {ours:x}, the sender in {theirs:x}")]
    ClusterMismatch { ours: u64, theirs: u64 },
    /// The link filter cuts this sender off (tests only, see `filter.rs`).
    #[error("traffic from member {0:x} is cut by the link filter")]
    Cut(u64),
    /// A payload that does not decode as what its call carries.
    #[error("undecodable {what}: {error}")]
    Undecodable {
        what: &'static str,
        error: postcard::Error,
    },
    /// A call missing a part every call of its kind has.
    #[error("{0}")]
    Malformed(&'static str),
    #[error("encoding a peer reply: {0}")]
    Encoding(postcard::Error),
    #[error("staging a snapshot: {0}")]
    Staging(std::io::Error),
    /// openraft stopped (or is stopping) on this member: the sender will retry elsewhere.
    #[error("{0}")]
    RaftStopped(String),
}

impl From<PeerError> for Status {
    fn from(e: PeerError) -> Status {
        let code = match e {
            PeerError::ClusterMismatch { .. } | PeerError::Cut(_) => Code::FailedPrecondition,
            PeerError::Undecodable { .. } | PeerError::Malformed(_) => Code::InvalidArgument,
            PeerError::Encoding(_) | PeerError::Staging(_) => Code::Internal,
            PeerError::RaftStopped(_) => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

/// A status a peer sent back inside a `Calls` answer, as its unary call would have returned
/// it.
pub fn answered(code: i32, message: String) -> Status {
    Status::new(Code::from(code), message)
}

/// openraft's refusal on this member, as the peer protocol reports it.
pub fn raft_stopped(e: impl std::fmt::Display) -> Status {
    PeerError::RaftStopped(e.to_string()).into()
}
