//! The replicated auth store: users, roles, the enabled flag and the auth revision.
//!
//! Changed only in apply, by [`AuthCommand`]s, and mirrored in memory (where permission
//! checks will read it). Stored in the `auth` keyspace:
//!
//! | key             | value                                         |
//! |-----------------|-----------------------------------------------|
//! | `user/<name>`   | [`User`], postcard                            |
//! | `role/<name>`   | [`Role`], postcard                            |
//! | `revision`      | the auth revision, u64 big-endian             |
//! | `enabled`       | 1 when authentication is on                   |
//!
//! The auth revision counts the changes that took effect (a grant of a role the user already
//! holds changes nothing and counts nothing), as etcd's does.

use std::collections::BTreeMap;

use super::{AuthCommand, AuthError, MAX_NAME_BYTES, Permission, ROOT_ROLE, ROOT_USER, Role, User};
use crate::mvcc::{ApplyBatch, Fault};
use crate::storage::{SideTable, SideWrites, Storage};

const USER: &str = "user/";
const ROLE: &str = "role/";
const REVISION: &[u8] = b"revision";
const ENABLED: &[u8] = b"enabled";

fn key(prefix: &str, name: &str) -> Vec<u8> {
    [prefix.as_bytes(), name.as_bytes()].concat()
}

/// Writes the auth store's records in the apply batch.
struct AuthTable<'b>(SideWrites<'b>);

impl<'b> AuthTable<'b> {
    fn of(batch: &'b mut ApplyBatch<'_>) -> Self {
        AuthTable(batch.side())
    }

    fn put_user(&mut self, user: &User) {
        self.0
            .insert(SideTable::Auth, &key(USER, &user.name), encode(user));
    }

    fn remove_user(&mut self, name: &str) {
        self.0.remove(SideTable::Auth, &key(USER, name));
    }

    fn put_role(&mut self, role: &Role) {
        self.0
            .insert(SideTable::Auth, &key(ROLE, &role.name), encode(role));
    }

    fn remove_role(&mut self, name: &str) {
        self.0.remove(SideTable::Auth, &key(ROLE, name));
    }

    fn put_revision(&mut self, revision: u64) {
        self.0
            .insert(SideTable::Auth, REVISION, revision.to_be_bytes().to_vec());
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these plain structs except on out-of-memory.
    postcard::to_stdvec(value).expect("auth records always encode")
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, raw: &[u8]) -> Result<T, Fault> {
    postcard::from_bytes(raw).map_err(|e| Fault::Corrupt {
        what,
        detail: e.to_string(),
    })
}

/// The auth store as applied so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthStore {
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    pub enabled: bool,
    pub revision: u64,
}

impl AuthStore {
    /// Reads the committed store.
    pub fn load(storage: &Storage) -> Result<AuthStore, Fault> {
        let mut store = AuthStore::default();
        for guard in storage.auth.iter() {
            let (k, v) = guard.into_inner()?;
            if k.starts_with(USER.as_bytes()) {
                let user: User = decode("auth user record", &v)?;
                store.users.insert(user.name.clone(), user);
            } else if k.starts_with(ROLE.as_bytes()) {
                let role: Role = decode("auth role record", &v)?;
                store.roles.insert(role.name.clone(), role);
            } else if &*k == REVISION {
                let raw: [u8; 8] = v.as_ref().try_into().map_err(|_| Fault::Corrupt {
                    what: "auth revision",
                    detail: format!("{} bytes, not 8", v.len()),
                })?;
                store.revision = u64::from_be_bytes(raw);
            } else if &*k == ENABLED {
                store.enabled = v.first() == Some(&1);
            }
        }
        Ok(store)
    }

    /// Applies one command: `Ok(true)` when it changed the store, `Ok(false)` when it found
    /// nothing to change (etcd answers success and counts no revision), or etcd's error.
    pub fn apply(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        command: &AuthCommand,
    ) -> Result<bool, AuthError> {
        let changed = self.change(batch, command)?;
        if changed {
            self.revision += 1;
            AuthTable::of(batch).put_revision(self.revision);
        }
        Ok(changed)
    }

    fn change(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        command: &AuthCommand,
    ) -> Result<bool, AuthError> {
        let mut table = AuthTable::of(batch);
        match command {
            AuthCommand::UserAdd {
                name,
                password_hash,
                no_password,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                check_length(name)?;
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExists);
                }
                let user = User {
                    name: name.clone(),
                    password_hash: password_hash.clone(),
                    roles: Vec::new(),
                    no_password: *no_password,
                };
                table.put_user(&user);
                self.users.insert(name.clone(), user);
            }
            AuthCommand::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthManagement);
                }
                if self.users.remove(name).is_none() {
                    return Err(AuthError::UserNotFound);
                }
                table.remove_user(name);
            }
            AuthCommand::UserChangePassword {
                name,
                password_hash,
            } => {
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password_hash = password_hash.clone();
                table.put_user(user);
            }
            AuthCommand::UserGrantRole { user, role } => {
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                match u.roles.binary_search(role) {
                    Ok(_) => return Ok(false),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
                table.put_user(u);
            }
            AuthCommand::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                let at = u
                    .roles
                    .binary_search(role)
                    .map_err(|_| AuthError::RoleNotGranted)?;
                u.roles.remove(at);
                table.put_user(u);
            }
            AuthCommand::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                check_length(name)?;
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExists);
                }
                let role = Role {
                    name: name.clone(),
                    permissions: Vec::new(),
                };
                table.put_role(&role);
                self.roles.insert(name.clone(), role);
            }
            AuthCommand::RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                if self.roles.remove(name).is_none() {
                    return Err(AuthError::RoleNotFound);
                }
                table.remove_role(name);
                // The role leaves every user that held it.
                for user in self.users.values_mut() {
                    if let Ok(at) = user.roles.binary_search(name) {
                        user.roles.remove(at);
                        table.put_user(user);
                    }
                }
            }
            AuthCommand::RoleGrantPermission { role, permission } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                grant(&mut r.permissions, permission);
                table.put_role(r);
            }
            AuthCommand::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let before = r.permissions.len();
                r.permissions
                    .retain(|p| p.key != *key || p.range_end != *range_end);
                if r.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                table.put_role(r);
            }
        }
        Ok(true)
    }
}

fn check_length(name: &str) -> Result<(), AuthError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(AuthError::NameTooLong(name.len()));
    }
    Ok(())
}

/// Adds `permission`, or changes the kind of the one over the same range, keeping the list
/// sorted by key and range end.
fn grant(permissions: &mut Vec<Permission>, permission: &Permission) {
    fn place(p: &Permission) -> (&[u8], &[u8]) {
        (&p.key, &p.range_end)
    }
    match permissions.binary_search_by(|p| place(p).cmp(&place(permission))) {
        Ok(at) => permissions[at].kind = permission.kind,
        Err(at) => permissions.insert(at, permission.clone()),
    }
}

#[cfg(test)]
#[path = "store_test.rs"]
mod tests;
