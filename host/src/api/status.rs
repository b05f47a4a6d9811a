//! The one place that turns Cairn errors into `tonic::Status`, with etcd's gRPC codes and
//! exact messages (clients match on the text, e.g. clientv3's `rpctypes` errors).

use tonic::{Code, Status};

use crate::mvcc::validate::InvalidRequest;
use crate::mvcc::{self, MvccError};
use crate::raft::{MembershipError, ProposeError};

pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub const REQUEST_TIMED_OUT: &str = "etcdserver: request timed out";

fn etcd(code: Code, message: &str) -> Status {
    Status::new(code, format!("etcdserver: {message}"))
}

pub fn mvcc_error(e: &MvccError) -> Status {
    let code = match e {
        MvccError::Compacted | MvccError::FutureRevision => Code::OutOfRange,
        MvccError::KeyNotFound | MvccError::KeyNotProvided => Code::InvalidArgument,
        MvccError::LeaseNotFound => Code::NotFound,
        MvccError::LeaseExists => Code::FailedPrecondition,
        MvccError::NoSpace => Code::ResourceExhausted,
        MvccError::Corrupt => Code::DataLoss,
        // Cairn's own: a plugin's decision, named after the binding that made it.
        MvccError::GuardDenied { .. } | MvccError::PluginFailed { .. } => {
            return Status::new(Code::FailedPrecondition, format!("cairn: {e}"));
        }
        MvccError::NoSuchCompare { .. } | MvccError::KeyTooLong(_) => {
            return Status::new(Code::InvalidArgument, format!("cairn: {e}"));
        }
    };
    etcd(code, &e.to_string())
}

/// A plugin registry command refused by the registry's state.
pub fn plugin_error(e: &crate::plugin::PluginError) -> Status {
    let code = if e.is_not_found() {
        Code::NotFound
    } else if e.is_conflict() {
        Code::FailedPrecondition
    } else {
        Code::InvalidArgument
    };
    Status::new(code, format!("cairn: {e}"))
}

/// etcd's code and words for an auth error.
pub fn auth_error(e: &crate::auth::AuthError) -> Status {
    use crate::auth::AuthError as E;
    if let E::NameTooLong(_) = e {
        return Status::invalid_argument(format!("cairn: {e}"));
    }
    let code = match e {
        E::UserEmpty
        | E::RoleEmpty
        | E::InvalidAuthManagement
        | E::NameTooLong(_)
        | E::AuthFailed
        | E::AuthOldRevision => Code::InvalidArgument,
        E::UserAlreadyExists
        | E::UserNotFound
        | E::RoleAlreadyExists
        | E::RoleNotFound
        | E::RoleNotGranted
        | E::PermissionNotGranted
        | E::RootUserNotExist
        | E::RootRoleNotExist
        | E::AuthNotEnabled => Code::FailedPrecondition,
        E::InvalidAuthToken => Code::Unauthenticated,
        E::PermissionDenied | E::PolicyDenied { .. } => Code::PermissionDenied,
    };
    let mut status = Status::new(code, format!("etcdserver: {e}"));
    if let E::PolicyDenied { binding, reason } = e {
        let metadata = status.metadata_mut();
        metadata.insert(POLICY_BINDING, ascii_metadata(binding));
        metadata.insert(POLICY_REASON, ascii_metadata(reason));
    }
    status
}

/// Response metadata naming the policy binding that denied a request, and its reason.
pub const POLICY_BINDING: &str = "cairn-policy-binding";
pub const POLICY_REASON: &str = "cairn-policy-reason";

/// `text` as an ASCII metadata value: printable ASCII as it is, every other byte (and `%`)
/// percent-encoded, so any reason a plugin gives can travel.
fn ascii_metadata(text: &str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Printable ASCII only, which a metadata value always accepts.
    tonic::metadata::MetadataValue::try_from(out.as_str())
        .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("unprintable"))
}

/// etcd's answer to Authenticate while authentication is off.
pub fn auth_not_enabled() -> Status {
    auth_error(&crate::auth::AuthError::AuthNotEnabled)
}

/// A status as grpc-go's error prints it (`rpc error: code = PermissionDenied desc = …`),
/// which is how etcd writes an error into a watch's cancel reason.
pub fn as_grpc_go_text(status: &Status) -> String {
    format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    )
}

/// etcd's answer to Authenticate for a user added with no password (a raw error in etcd,
/// hence code Unknown).
pub fn no_password_user() -> Status {
    Status::unknown("auth: authentication failed, password was given for no password user")
}

/// etcd's refusal of a permission grant without a permission.
pub fn permission_not_given() -> Status {
    Status::invalid_argument("etcdserver: permission not given")
}

pub fn invalid_request(e: &InvalidRequest) -> Status {
    if let InvalidRequest::KeyTooLong(_) = e {
        // Cairn's own limit: etcd has no such error, so no etcd text to match.
        return Status::new(Code::InvalidArgument, format!("cairn: {e}"));
    }
    etcd(Code::InvalidArgument, &e.to_string())
}

/// If `tonic_status` is tonic's refusal of an over-limit request message, grpc-go's status
/// for it ([`message_too_large`]): etcd's server is grpc-go, and tonic says the same with
/// `OutOfRange` and other words.
pub fn as_grpc_go_size_error(tonic_status: &Status) -> Option<Status> {
    if tonic_status.code() != Code::OutOfRange {
        return None;
    }
    let rest = tonic_status
        .message()
        .strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(message_too_large(found.parse().ok()?, limit.parse().ok()?))
}

pub fn lease_ttl_too_large() -> Status {
    etcd(Code::OutOfRange, "too large lease TTL")
}

pub fn request_too_large() -> Status {
    Status::new(Code::InvalidArgument, REQUEST_TOO_LARGE)
}

pub fn timed_out() -> Status {
    Status::new(Code::Unavailable, REQUEST_TIMED_OUT)
}

pub fn propose_error(e: &ProposeError) -> Status {
    match e {
        ProposeError::NoLeader | ProposeError::NotSent(_) => etcd(Code::Unavailable, "no leader"),
        ProposeError::NotLeader { .. } => etcd(Code::FailedPrecondition, "not leader"),
        ProposeError::LeaderChanged => etcd(Code::Unavailable, "leader changed"),
        ProposeError::ConnectionLost => etcd(
            Code::Unavailable,
            "request timed out, possibly due to connection lost",
        ),
        ProposeError::Membership(m) => membership_error(m),
        ProposeError::Lessor(message) => Status::new(Code::Unknown, message.clone()),
        ProposeError::Stopped(_) => etcd(Code::Unavailable, "server stopped"),
    }
}

pub fn membership_error(e: &MembershipError) -> Status {
    let code = match e {
        MembershipError::MemberNotFound => Code::NotFound,
        MembershipError::MemberExists
        | MembershipError::PeerUrlExists
        | MembershipError::NotLearner
        | MembershipError::LearnerNotReady
        | MembershipError::TooManyLearners => Code::FailedPrecondition,
        // etcd 3.4 does not map this error to a gRPC code, so its clients see Unknown.
        MembershipError::NotEnoughStarted => Code::Unknown,
        MembershipError::Unhealthy => Code::Unavailable,
    };
    etcd(code, &e.to_string())
}

/// A learner serves only serializable reads and status, as in etcd.
pub fn not_supported_for_learner() -> Status {
    etcd(Code::Unavailable, "rpc not supported for learner")
}

/// etcd's answer to member URLs that do not parse.
pub fn bad_member_urls() -> Status {
    etcd(Code::InvalidArgument, "given member URLs are invalid")
}

/// MoveLeader to a member that is not a voter of this cluster.
pub fn bad_leader_transferee() -> Status {
    etcd(Code::FailedPrecondition, "bad leader transferee")
}

/// A local storage failure while serving a read. Writes never get here: a storage error in
/// apply stops the node.
pub fn storage_error(e: &mvcc::Error) -> Status {
    match e {
        mvcc::Error::Mvcc(m) => mvcc_error(m),
        mvcc::Error::Fault(s) => Status::new(Code::Internal, format!("cairn: {s}")),
    }
}

/// A KV error met inside the Lock or Election service. etcd runs those recipes through an
/// internal client, so the KV error's message comes back with code Unknown.
pub fn through_recipe(e: &MvccError) -> Status {
    Status::new(Code::Unknown, mvcc_error(e).message().to_string())
}

/// Errors of etcd's election recipe, which etcd returns with code Unknown.
pub fn election_not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}

pub fn election_no_leader() -> Status {
    Status::new(Code::Unknown, "election: no leader")
}

pub fn missing_leader_key() -> Status {
    Status::new(Code::Unknown, "\"leader\" field must be provided")
}

/// The lock or campaign key vanished while waiting (its lease ended).
pub fn session_expired() -> Status {
    Status::new(Code::Unknown, "mutex: session is expired")
}

pub fn stopping() -> Status {
    etcd(Code::Unavailable, "server stopped")
}

/// A response of the wrong kind for the command that was proposed: a bug, reported to the
/// client instead of panicking.
pub fn unexpected_response(to: &str, response: &dyn std::fmt::Debug) -> Status {
    Status::internal(format!("cairn: unexpected response {response:?} to {to}"))
}

/// A failure inside this member that is not the client's doing (a blocking task that died,
/// a lessor that could not answer), with what was being done.
pub fn internal(doing: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("cairn: {doing}: {e}"))
}

/// The client's request stream broke before a whole request arrived.
pub fn request_stream_broken(e: impl std::fmt::Display) -> Status {
    Status::cancelled(format!("reading the request: {e}"))
}

pub fn invalid_argument(message: impl Into<String>) -> Status {
    Status::new(Code::InvalidArgument, message.into())
}

pub fn unimplemented(what: &str) -> Status {
    Status::new(
        Code::Unimplemented,
        format!("cairn: {what} is not implemented yet"),
    )
}

/// A gateway request whose JSON does not decode (malformed, bad base64, wrong types).
pub fn bad_json(reason: &str) -> Status {
    Status::invalid_argument(format!("invalid JSON request body: {reason}"))
}

/// A gateway request body too large to decode at all.
pub fn body_too_large(max: usize) -> Status {
    Status::resource_exhausted(format!("request body is larger than {max} bytes of JSON"))
}

/// A decoded message over gRPC's receive limit: grpc-go's words, as etcd's clients see them.
pub fn message_too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({len} vs. {max})"
    ))
}

/// A response the gateway cannot write as JSON (a bug: every etcd message has a mapping).
pub fn cannot_encode_json(reason: &str) -> Status {
    Status::internal(format!(
        "cairn: cannot encode the response as JSON: {reason}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_etcds() {
        // Proves the exact strings clients match on.
        assert_eq!(
            mvcc_error(&MvccError::Compacted).message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        assert_eq!(mvcc_error(&MvccError::Compacted).code(), Code::OutOfRange);
        assert_eq!(
            mvcc_error(&MvccError::FutureRevision).message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        assert_eq!(
            mvcc_error(&MvccError::LeaseNotFound).message(),
            "etcdserver: requested lease not found"
        );
        assert_eq!(mvcc_error(&MvccError::LeaseNotFound).code(), Code::NotFound);
        assert_eq!(
            mvcc_error(&MvccError::KeyNotFound).message(),
            "etcdserver: key not found"
        );
        assert_eq!(
            invalid_request(&InvalidRequest::EmptyKey).message(),
            "etcdserver: key is not provided"
        );
        assert_eq!(
            invalid_request(&InvalidRequest::DuplicateKey).message(),
            "etcdserver: duplicate key given in txn request"
        );
        assert_eq!(
            invalid_request(&InvalidRequest::TooManyOps).message(),
            "etcdserver: too many operations in txn request"
        );
        assert_eq!(
            propose_error(&ProposeError::NoLeader).message(),
            "etcdserver: no leader"
        );
        assert_eq!(
            membership_error(&MembershipError::LearnerNotReady).message(),
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
        assert_eq!(
            membership_error(&MembershipError::MemberNotFound).code(),
            Code::NotFound
        );
        assert_eq!(
            membership_error(&MembershipError::PeerUrlExists).message(),
            "etcdserver: Peer URLs already exists"
        );
    }
}
