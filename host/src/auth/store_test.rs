//! The auth store's rules, applied to a real store in a temporary directory: etcd's errors,
//! which changes count a revision, and that what apply keeps in memory is what it wrote.

use tempfile::TempDir;

use super::*;
use crate::auth::PermKind;
use crate::mvcc::Mvcc;

struct Fixture {
    _dir: TempDir,
    storage: Storage,
    store: AuthStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open storage");
        let store = AuthStore::load(&storage).expect("load");
        Fixture {
            _dir: dir,
            storage,
            store,
        }
    }

    /// Applies `command` as one log entry and commits it.
    fn apply(&mut self, command: AuthCommand) -> Result<bool, AuthError> {
        let revs = Mvcc::revisions(&self.storage).expect("revisions");
        let mut batch = ApplyBatch::new(&self.storage, revs);
        let outcome = self.store.apply(&mut batch, &command);
        batch.set_position(&[]);
        batch.commit().expect("commit");
        outcome
    }

    fn user_add(&mut self, name: &str) -> Result<bool, AuthError> {
        self.apply(AuthCommand::UserAdd {
            name: name.into(),
            password_hash: format!("hash-of-{name}"),
            no_password: false,
        })
    }

    fn role_add(&mut self, name: &str) -> Result<bool, AuthError> {
        self.apply(AuthCommand::RoleAdd { name: name.into() })
    }

    fn grant_role(&mut self, user: &str, role: &str) -> Result<bool, AuthError> {
        self.apply(AuthCommand::UserGrantRole {
            user: user.into(),
            role: role.into(),
        })
    }

    fn grant_permission(&mut self, role: &str, kind: PermKind, key: &str, end: &str) {
        self.apply(AuthCommand::RoleGrantPermission {
            role: role.into(),
            permission: Permission {
                kind,
                key: key.into(),
                range_end: end.into(),
            },
        })
        .expect("grant permission");
    }

    /// The store as a restarted member would load it.
    fn reloaded(&self) -> AuthStore {
        AuthStore::load(&self.storage).expect("load")
    }
}

#[test]
fn users_follow_etcds_rules() {
    // Proves etcd's errors for users: empty and duplicate names, unknown users and roles,
    // a role not granted; Cairn's bound on name length (names are storage keys); and that the root role may be granted before it exists.
    let mut f = Fixture::new();
    assert_eq!(f.user_add(""), Err(AuthError::UserEmpty));
    let long = "n".repeat(MAX_NAME_BYTES + 1);
    assert_eq!(f.user_add(&long), Err(AuthError::NameTooLong(long.len())));
    assert_eq!(f.role_add(&long), Err(AuthError::NameTooLong(long.len())));
    assert_eq!(f.user_add("alice"), Ok(true));
    assert_eq!(f.user_add("alice"), Err(AuthError::UserAlreadyExists));
    assert_eq!(f.grant_role("bob", "reader"), Err(AuthError::UserNotFound));
    assert_eq!(
        f.grant_role("alice", "reader"),
        Err(AuthError::RoleNotFound)
    );
    assert_eq!(f.grant_role("alice", ROOT_ROLE), Ok(true));
    let revoke = |user: &str, role: &str| AuthCommand::UserRevokeRole {
        user: user.into(),
        role: role.into(),
    };
    assert_eq!(
        f.apply(revoke("alice", "reader")),
        Err(AuthError::RoleNotGranted)
    );
    assert_eq!(f.apply(revoke("alice", ROOT_ROLE)), Ok(true));
    assert_eq!(
        f.apply(AuthCommand::UserDelete { name: "bob".into() }),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        f.apply(AuthCommand::UserChangePassword {
            name: "bob".into(),
            password_hash: "x".into()
        }),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        f.apply(AuthCommand::UserChangePassword {
            name: "alice".into(),
            password_hash: "new".into()
        }),
        Ok(true)
    );
    assert_eq!(f.store.users["alice"].password_hash, "new");
    assert_eq!(
        f.apply(AuthCommand::UserDelete {
            name: "alice".into()
        }),
        Ok(true)
    );
    assert!(f.store.users.is_empty());
    assert_eq!(f.reloaded(), f.store);
}

#[test]
fn only_changes_count_a_revision() {
    // Proves the auth revision counts what changed the store: a role granted twice counts
    // once, and refused commands count nothing.
    let mut f = Fixture::new();
    f.user_add("alice").expect("add");
    f.role_add("reader").expect("add");
    assert_eq!(f.store.revision, 2);
    assert_eq!(f.grant_role("alice", "reader"), Ok(true));
    assert_eq!(f.grant_role("alice", "reader"), Ok(false));
    assert_eq!(f.role_add("reader"), Err(AuthError::RoleAlreadyExists));
    assert_eq!(f.store.revision, 3);
    assert_eq!(f.reloaded().revision, 3);
}

#[test]
fn roles_and_permissions_follow_etcds_rules() {
    // Proves permissions stay sorted by key, a grant over the same range changes its kind
    // instead of adding one, revoking an absent one is refused, and deleting a role takes it
    // from every user.
    let mut f = Fixture::new();
    assert_eq!(f.role_add(""), Err(AuthError::RoleEmpty));
    f.role_add("app").expect("add");
    f.grant_permission("app", PermKind::Read, "m", "n");
    f.grant_permission("app", PermKind::Write, "a", "");
    f.grant_permission("app", PermKind::ReadWrite, "m", "n");
    let perms = &f.store.roles["app"].permissions;
    assert_eq!(
        perms
            .iter()
            .map(|p| (p.key.as_slice(), p.range_end.as_slice(), p.kind))
            .collect::<Vec<_>>(),
        [
            (&b"a"[..], &b""[..], PermKind::Write),
            (&b"m"[..], &b"n"[..], PermKind::ReadWrite)
        ]
    );
    let revoke = |end: &str| AuthCommand::RoleRevokePermission {
        role: "app".into(),
        key: b"m".to_vec(),
        range_end: end.into(),
    };
    assert_eq!(f.apply(revoke("")), Err(AuthError::PermissionNotGranted));
    assert_eq!(f.apply(revoke("n")), Ok(true));
    assert_eq!(f.store.roles["app"].permissions.len(), 1);

    f.user_add("alice").expect("add");
    f.user_add("bob").expect("add");
    f.role_add("zeta").expect("add");
    f.grant_role("alice", "app").expect("grant");
    f.grant_role("alice", "zeta").expect("grant");
    f.grant_role("bob", "app").expect("grant");
    assert_eq!(f.store.users["alice"].roles, ["app", "zeta"]);
    assert_eq!(
        f.apply(AuthCommand::RoleDelete { name: "app".into() }),
        Ok(true)
    );
    assert_eq!(f.store.users["alice"].roles, ["zeta"]);
    assert!(f.store.users["bob"].roles.is_empty());
    assert_eq!(
        f.apply(AuthCommand::RoleDelete { name: "app".into() }),
        Err(AuthError::RoleNotFound)
    );
    assert_eq!(f.reloaded(), f.store);
}

#[test]
fn root_is_protected_only_while_auth_is_on() {
    // Proves etcd's "invalid auth management": with authentication on, root cannot be
    // deleted, lose its root role, or the root role be deleted; with it off, all may go.
    let mut f = Fixture::new();
    f.user_add(ROOT_USER).expect("add root");
    f.role_add(ROOT_ROLE).expect("add root role");
    f.grant_role(ROOT_USER, ROOT_ROLE).expect("grant");
    f.store.enabled = true;
    let delete_root = AuthCommand::UserDelete {
        name: ROOT_USER.into(),
    };
    let revoke_root = AuthCommand::UserRevokeRole {
        user: ROOT_USER.into(),
        role: ROOT_ROLE.into(),
    };
    let delete_role = AuthCommand::RoleDelete {
        name: ROOT_ROLE.into(),
    };
    for c in [&delete_root, &revoke_root, &delete_role] {
        assert_eq!(
            f.apply(c.clone()),
            Err(AuthError::InvalidAuthManagement),
            "{c:?}"
        );
    }
    f.store.enabled = false;
    for c in [revoke_root, delete_role, delete_root] {
        assert_eq!(f.apply(c.clone()), Ok(true), "{c:?}");
    }
}

#[test]
fn enabling_needs_root_with_the_root_role_and_survives_a_restart() {
    // Proves etcd's AuthEnable rules: refused without a root user, then without its root
    // role; turning on counts no revision, turning off counts one; the first key drawn is
    // kept through later enables; all of it is what a restarted member loads.
    let mut f = Fixture::new();
    let enable = |key: u8| AuthCommand::Enable {
        token_key: [key; 32],
    };
    assert_eq!(f.apply(enable(1)), Err(AuthError::RootUserNotExist));
    f.user_add(ROOT_USER).expect("root");
    assert_eq!(f.apply(enable(1)), Err(AuthError::RootRoleNotExist));
    f.grant_role(ROOT_USER, ROOT_ROLE).expect("root role");
    let before = f.store.revision;
    assert_eq!(f.apply(enable(1)), Ok(true));
    assert_eq!(f.apply(enable(2)), Ok(false));
    assert!(f.store.enabled);
    assert_eq!(f.store.revision, before);
    assert_eq!(f.store.token_key, [1; 32]);
    assert_eq!(f.reloaded(), f.store);
    assert_eq!(f.apply(AuthCommand::Disable), Ok(true));
    assert_eq!(f.store.revision, before + 1);
    assert_eq!(f.apply(AuthCommand::Disable), Ok(false));
    assert_eq!(f.apply(enable(3)), Ok(true));
    assert_eq!(f.store.token_key, [1; 32], "the first key stays");
    assert_eq!(f.reloaded(), f.store);
}

#[test]
fn callers_are_checked_in_etcds_order() {
    // Proves the checks apply makes: anyone while authentication is off; then no user
    // (`user name is empty`), a token older than its user's password (`revision of auth
    // store is old`), a certificate naming no user (`permission denied`); admin checks say
    // `user name not found` for an unknown user and `permission denied` for a non-root one.
    let mut f = Fixture::new();
    f.user_add(ROOT_USER).expect("root");
    f.grant_role(ROOT_USER, ROOT_ROLE).expect("root role");
    f.user_add("alice").expect("alice");
    let alice_rev = f.store.users["alice"].revision;
    let alice = Caller::Token {
        user: "alice".into(),
        revision: alice_rev,
    };
    assert!(f.store.permissions(&Caller::Anonymous).is_ok());
    assert_eq!(f.store.check_admin(&Caller::Anonymous), Ok(()));
    f.apply(AuthCommand::Enable { token_key: [9; 32] })
        .expect("enable");
    assert_eq!(
        f.store.permissions(&Caller::Anonymous),
        Err(AuthError::UserEmpty)
    );
    assert!(!f.store.permissions(&alice).expect("alice").is_root());
    assert_eq!(
        f.store.permissions(&Caller::Token {
            user: "alice".into(),
            revision: alice_rev - 1
        }),
        Err(AuthError::AuthOldRevision)
    );
    assert_eq!(
        f.store.permissions(&Caller::Certificate {
            user: "nobody".into()
        }),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        f.store.check_admin(&Caller::Certificate {
            user: "nobody".into()
        }),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        f.store.check_admin(&alice),
        Err(AuthError::PermissionDenied)
    );
    let root = Caller::Certificate {
        user: ROOT_USER.into(),
    };
    assert_eq!(f.store.check_admin(&root), Ok(()));
    // A password change moves the user's revision: old tokens are old.
    f.apply(AuthCommand::UserChangePassword {
        name: "alice".into(),
        password_hash: "new".into(),
    })
    .expect("change password");
    assert_eq!(f.store.permissions(&alice), Err(AuthError::AuthOldRevision));
}
