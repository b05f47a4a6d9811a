//! Authentication and role-based access control, as etcd defines them: users, roles and the
//! key-range permissions roles grant, replicated through Raft like the KV store.
//!
//! Like `mvcc/`, this module is pure: [`AuthStore::apply`] is a function of the commands
//! applied, with no clock and no randomness, so every member holds the same users and roles
//! and `Hash` covers them (they live in the `auth` state keyspace, which snapshots carry).
//! Passwords arrive already hashed: the member that receives `UserAdd` or
//! `UserChangePassword` hashes the password with bcrypt before proposing (as etcd 3.5 does
//! with `hashedPassword`), so apply never spends bcrypt's cost and never draws a salt.
//!
//! - `store.rs`: the replicated store and every change etcd's Auth service makes to it
//!   (users, roles, grants and permissions, with etcd's rules and errors);
//! - `perms.rs`: etcd's rule for whether a user may read or write a key range, over the
//!   merged intervals of its roles' permissions.
//!
//! What is not built yet, and so
//! refused with `Unimplemented` by the API: turning authentication on (`AuthEnable`),
//! `Authenticate` and tokens, and the permission checks on requests. Until then the store is
//! never enabled, as etcd's is not before `AuthEnable`, and every request runs as in etcd
//! with authentication off.

pub mod perms;
pub mod store;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use store::AuthStore;

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
}
