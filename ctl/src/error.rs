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
    /// A snapshot file that cannot be written, read, or restored.
    #[error("{0}")]
    Snapshot(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// A format or feature the command does not have (etcdctl's exit status 4).
    #[error("{0}")]
    Unsupported(String),
    /// Arguments etcdctl refuses before dialing (its exit status 128).
    #[error("{0}")]
    BadArgs(String),
    /// A command that failed after printing what it could (`endpoint health` of an unhealthy
    /// cluster); the message is printed as `Error: ...`.
    #[error("{0}")]
    Failed(String),
    /// Input etcdctl refuses with exit status 3 (`ExitInvalidInput`).
    #[error("{0}")]
    InvalidInput(String),
    /// A watch the server ended (etcdctl's exit status 5, `ExitInterrupted`).
    #[error("{0}")]
    Canceled(String),
    /// A failure etcdctl reports with exit status 2 (`ExitBadConnection`).
    #[error("{0}")]
    BadConnection(String),
    /// A failure already reported on stderr in etcdctl's words: only the exit status is left.
    #[error("")]
    Silent,
}

impl Error {
    /// etcdctl's exit status for this error: 1 for errors, 4 for an unsupported feature, 128
    /// for bad arguments.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadConnection(_) => 2,
            Error::InvalidInput(_) => 3,
            Error::Unsupported(_) => 4,
            Error::Canceled(_) => 5,
            Error::BadArgs(_) => 128,
            _ => 1,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let mut message = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        // A Cairn policy hook's denial names its binding and reason in the metadata; the
        // message itself stays etcd's.
        let text = |key: &str| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(percent_decode)
        };
        if let (Some(binding), Some(reason)) =
            (text("cairn-policy-binding"), text("cairn-policy-reason"))
        {
            message = format!("{message} (policy {binding}: {reason})");
        }
        Error::Status(message)
    }
}

/// Undoes the server's percent-encoding of metadata text (`%XX` for bytes outside printable
/// ASCII, and for `%`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_denials_name_their_binding_and_reason() {
        let mut status = tonic::Status::permission_denied("etcdserver: permission denied");
        status
            .metadata_mut()
            .insert("cairn-policy-binding", "freeze".parse().expect("ascii"));
        status.metadata_mut().insert(
            "cairn-policy-reason",
            "50%25 caf%C3%A9".parse().expect("ascii"),
        );
        assert_eq!(
            super::Error::from(status).to_string(),
            "etcdserver: permission denied (policy freeze: 50% café)"
        );
    }
}
