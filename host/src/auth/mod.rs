//! Authentication and role-based access control, as etcd defines them: users, roles and the
//! key-range permissions roles grant, replicated through Raft like the KV store.
//!
//! `store.rs` and `perms.rs` are pure, like `mvcc/`: [`AuthStore::apply`] and
//! [`AuthStore::authorize`] are functions of the commands applied, with no clock and no
//! randomness, so every member holds the same users and roles, decides every write's
//! permission the same way at the same point of the log, and `Hash` covers the store (it lives
//! in the `auth` state keyspace, which snapshots carry). Passwords arrive already hashed: the
//! member that receives `UserAdd` or `UserChangePassword` hashes the password with bcrypt
//! before proposing (as etcd 3.5 does with `hashedPassword`), so apply never spends bcrypt's
//! cost and never draws a salt; the key that signs simple tokens is drawn by the member that
//! proposes `AuthEnable` and carried in the log.
//!
//! - `store.rs`: the replicated store and every change etcd's Auth service makes to it
//!   (users, roles, grants and permissions, turning authentication on and off, with etcd's
//!   rules and errors), and the check of a caller against it;
//! - `perms.rs`: etcd's rule for whether a user may read or write a key range, over the
//!   merged intervals of its roles' permissions;
//! - `token.rs`: the member-local side — issuing and verifying tokens (clock and keys), which
//!   turn a token into a [`Caller`].

pub mod needs;
pub mod perms;
pub mod store;
pub mod token;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use perms::Access;
pub use store::AuthStore;
pub use token::{TokenConfig, Tokens};

/// etcd's superuser and its role. A user holding the `root` role may do anything; the role
/// need not exist to be granted (etcd treats it as built in).
pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// The longest user or role name, in bytes. Names are storage keys, and etcd itself cannot
/// store one past its own key limit; Cairn refuses them in apply, the same on every member.
pub const MAX_NAME_BYTES: usize = 1024;

/// What a permission allows over its key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

/// A role's permission over etcd's key range (`key` alone, `[key, range_end)`, or from `key`
/// on when `range_end` is `"\0"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    /// The bcrypt hash of the password; empty for a user added with `no_password`.
    pub password_hash: String,
    /// Granted roles, sorted.
    pub roles: Vec<String>,
    /// Added with `no_password`: it can only authenticate by a client certificate.
    pub no_password: bool,
    /// The auth revision at which the user was added or its password last changed. Tokens
    /// carry it: a token issued before the change no longer names the current user.
    pub revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    /// Sorted by key, then range end.
    pub permissions: Vec<Permission>,
}

/// A change to the auth store, as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    UserAdd {
        name: String,
        /// bcrypt hash, computed before proposing; empty with `no_password`.
        password_hash: String,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        permission: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    /// Turns authentication on. `token_key` signs simple tokens: drawn at random by the member
    /// that proposes the command, it is kept only if authentication was off (see
    /// `token.rs`).
    Enable {
        token_key: [u8; 32],
    },
    Disable,
}

/// Who a request runs as, decided on the member that received it (from its token or client
/// certificate) and carried with it through the log, so the write's permission is checked in
/// apply against the auth store at that point of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Caller {
    /// No credentials (or authentication was off when the request arrived).
    Anonymous,
    /// A user named by a token issued while the user's credentials were at `revision`.
    Token { user: String, revision: u64 },
    /// A user named by the common name of a verified client certificate.
    Certificate { user: String },
}

impl Caller {
    /// The user's name, if the caller names one.
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::Token { user, .. } | Caller::Certificate { user } => Some(user),
        }
    }
}

/// etcd's auth errors; `api/status.rs` gives each etcd's code and words.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthError {
    #[error("user name is empty")]
    UserEmpty,
    /// Cairn's own: a user or role name over [`MAX_NAME_BYTES`].
    #[error("name is too long: {0} bytes, at most 1024")]
    NameTooLong(usize),
    #[error("user name already exists")]
    UserAlreadyExists,
    #[error("user name not found")]
    UserNotFound,
    #[error("role name is empty")]
    RoleEmpty,
    #[error("role name already exists")]
    RoleAlreadyExists,
    #[error("role name not found")]
    RoleNotFound,
    #[error("role is not granted to the user")]
    RoleNotGranted,
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    /// A change that would lock everyone out while authentication is on (deleting root,
    /// revoking root's root role, deleting the root role).
    #[error("invalid auth management")]
    InvalidAuthManagement,
    #[error("root user does not exist")]
    RootUserNotExist,
    #[error("root user does not have root role")]
    RootRoleNotExist,
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("invalid auth token")]
    InvalidAuthToken,
    #[error("permission denied")]
    PermissionDenied,
    /// The token's user changed (password, or deleted and added again) after the token was
    /// issued; etcd's words for a token older than the auth store.
    #[error("revision of auth store is old")]
    AuthOldRevision,
    /// A policy hook denied the request (or failed, failing closed). Clients see etcd's
    /// `permission denied`; the binding and its reason travel in the response metadata.
    #[error("permission denied")]
    PolicyDenied { binding: String, reason: String },
}
