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
//! | `token-key`     | the 32-byte key that signs simple tokens      |
//!
//! The auth revision counts the changes to users and roles that took effect (a grant of a role
//! the user already holds changes nothing and counts nothing; turning authentication on counts
//! nothing, turning it off counts one), as etcd's does.

use std::collections::BTreeMap;

use super::perms::UserPermissions;
use super::{
    AuthCommand, AuthError, Caller, MAX_NAME_BYTES, Permission, ROOT_ROLE, ROOT_USER, Role, User,
};
use crate::mvcc::{ApplyBatch, Fault};
use crate::storage::{SideTable, SideWrites, Storage};

/// Prefix of user records (read also by `backup.rs`, which lists a snapshot's users).
pub(crate) const USER: &str = "user/";
pub(crate) const ROLE: &str = "role/";
const REVISION: &[u8] = b"revision";
const ENABLED: &[u8] = b"enabled";
const TOKEN_KEY: &[u8] = b"token-key";

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

    fn put_enabled(&mut self, enabled: bool) {
        self.0
            .insert(SideTable::Auth, ENABLED, vec![u8::from(enabled)]);
    }

    fn put_token_key(&mut self, token_key: &[u8; 32]) {
        self.0
            .insert(SideTable::Auth, TOKEN_KEY, token_key.to_vec());
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

/// What a command did to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// Nothing to change (etcd answers success).
    Nothing,
    /// Turned authentication on: no auth revision counts it (in etcd neither).
    Uncounted,
    /// Changed users or roles: the auth revision counts it.
    Counted,
}

/// The auth store as applied so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthStore {
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
    pub enabled: bool,
    pub revision: u64,
    /// Signs simple tokens; drawn when authentication was first turned on (zero before).
    pub token_key: [u8; 32],
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
            } else if &*k == TOKEN_KEY {
                store.token_key = v.as_ref().try_into().map_err(|_| Fault::Corrupt {
                    what: "auth token key",
                    detail: format!("{} bytes, not 32", v.len()),
                })?;
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
        let effect = self.change(batch, command)?;
        if effect == Effect::Counted {
            self.revision += 1;
            AuthTable::of(batch).put_revision(self.revision);
        }
        Ok(effect != Effect::Nothing)
    }

    /// etcd's AuthEnable: refused unless `root` exists and holds the root role; nothing to do
    /// when already on (the key drawn for this command is then dropped, so tokens issued
    /// before stay valid).
    fn enable(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        token_key: &[u8; 32],
    ) -> Result<Effect, AuthError> {
        if self.enabled {
            return Ok(Effect::Nothing);
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(AuthError::RootUserNotExist)?;
        if root
            .roles
            .binary_search_by(|r| r.as_str().cmp(ROOT_ROLE))
            .is_err()
        {
            return Err(AuthError::RootRoleNotExist);
        }
        let mut table = AuthTable::of(batch);
        if self.token_key == [0; 32] {
            self.token_key = *token_key;
            table.put_token_key(token_key);
        }
        self.enabled = true;
        table.put_enabled(true);
        Ok(Effect::Uncounted)
    }

    /// etcd's AuthDisable, which counts an auth revision as etcd's does. The token key stays: turning authentication on again makes the
    /// unexpired tokens of unchanged users valid again, as nothing about those users changed.
    fn disable(&mut self, batch: &mut ApplyBatch<'_>) -> Effect {
        if !self.enabled {
            return Effect::Nothing;
        }
        self.enabled = false;
        AuthTable::of(batch).put_enabled(false);
        Effect::Counted
    }

    /// What `caller` may do at this point of the log: everything while authentication is off,
    /// else its user's merged permissions. etcd's errors: no user named (`user name is
    /// empty`), a token issued before its user's password changed or the user was added
    /// again (`revision of auth store is old`), a certificate naming no user (`permission
    /// denied`).
    pub fn permissions(&self, caller: &Caller) -> Result<UserPermissions, AuthError> {
        if !self.enabled {
            return Ok(UserPermissions::everything());
        }
        let (name, token_revision) = match caller {
            Caller::Anonymous => return Err(AuthError::UserEmpty),
            Caller::Token { user, revision } => (user, Some(*revision)),
            Caller::Certificate { user } => (user, None),
        };
        match (self.users.get(name), token_revision) {
            (Some(user), Some(revision)) if user.revision != revision => {
                Err(AuthError::AuthOldRevision)
            }
            (None, Some(_)) => Err(AuthError::AuthOldRevision),
            (None, None) => Err(AuthError::PermissionDenied),
            (Some(_), _) => self.permissions_of(name).ok_or(AuthError::PermissionDenied),
        }
    }

    /// Whether `caller` may do what only root may (with authentication off, anyone may).
    /// etcd's order of errors: no user named, no such user (`user name not found`), not root.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = caller.user().ok_or(AuthError::UserEmpty)?;
        if !self.users.contains_key(name) {
            return Err(AuthError::UserNotFound);
        }
        if self.permissions(caller)?.is_root() {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    fn change(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        command: &AuthCommand,
    ) -> Result<Effect, AuthError> {
        match command {
            AuthCommand::Enable { token_key } => return self.enable(batch, token_key),
            AuthCommand::Disable => return Ok(self.disable(batch)),
            _ => {}
        }
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
                    revision: self.revision + 1,
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
                user.revision = self.revision + 1;
                table.put_user(user);
            }
            AuthCommand::UserGrantRole { user, role } => {
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                match u.roles.binary_search(role) {
                    Ok(_) => return Ok(Effect::Nothing),
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
            // Answered above.
            AuthCommand::Enable { .. } | AuthCommand::Disable => return Ok(Effect::Nothing),
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
        Ok(Effect::Counted)
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
