//! The one error type `cairnctl` reports. `main` prints it as etcdctl does, `Error: <message>`
//! on stderr with exit status 1, so each message reads well after `Error: `.

use std::io;

use crate::module::ModuleError;
use crate::txn_parse::TxnParseError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server's refusal: the gRPC status message, as etcdctl prints it.
    #[error("{0}")]
    Status(String),
    /// `--command-timeout` passed before the server answered (etcdctl's wording).
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// No endpoint answered within `--dial-timeout`; one reason per endpoint.
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error(transparent)]
    Txn(#[from] TxnParseError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error("cannot read {path}: {source}")]
    ReadFile { path: String, source: io::Error },
    /// A flag combination or value clap cannot check by itself.
    #[error("{0}")]
    Usage(String),
    /// The server answered, but not as the protocol says it should.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    #[error("cannot read the password: {0}")]
    Password(io::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        if status.message().is_empty() {
            Error::Status(status.code().description().to_owned())
        } else {
            Error::Status(status.message().to_owned())
        }
    }
}
