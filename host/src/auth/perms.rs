//! Who may read or write what: etcd's permission rule over key ranges.
//!
//! A user may do anything if it holds the `root` role. Otherwise the permissions of all its
//! roles are merged, per kind (a READWRITE permission counts for both), into disjoint
//! intervals of keys:
//!
//! - a permission with no range end covers its one key, `[key, key + "\0")`;
//! - a range end of `"\0"` means every key from `key` on;
//! - any other range end covers `[key, range_end)`.
//!
//! A request over one key is allowed if an interval holds that key; a request over a range is
//! allowed only if the merged intervals cover the whole range, however many permissions it
//! takes (a range across two adjacent grants is allowed, one with a gap is not). This is
//! etcd's rule (`auth/range_perm_cache.go`, an interval tree's `Contains` and `Intersects`),
//! computed here over sorted, merged intervals.

use super::{AuthStore, PermKind, ROOT_ROLE};

/// What a request needs over its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The end of an interval; `None` is past every key.
type End = Option<Vec<u8>>;

/// Disjoint, sorted, non-adjacent intervals `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(Vec<u8>, End)>);

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// `a < b` for interval ends, `None` being the largest.
fn end_before(a: &End, b: &End) -> bool {
    match (a, b) {
        (_, None) => a.is_some(),
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a < b,
    }
}

/// The interval a permission or a request names.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    match range_end {
        [] => (key.to_vec(), Some(successor(key))),
        [0] => (key.to_vec(), None),
        end => (key.to_vec(), Some(end.to_vec())),
    }
}

impl Intervals {
    /// Merges `ranges` (empty ones are dropped).
    fn merged(mut ranges: Vec<(Vec<u8>, End)>) -> Intervals {
        ranges.retain(|(start, end)| end.as_ref().is_none_or(|e| start < e));
        ranges.sort();
        let mut out: Vec<(Vec<u8>, End)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            if let Some((_, last_end)) = out.last_mut() {
                // Overlapping or touching the previous interval: extend it.
                let touches = last_end.as_ref().is_none_or(|e| start <= *e);
                if touches {
                    if end_before(last_end, &end) {
                        *last_end = end;
                    }
                    continue;
                }
            }
            out.push((start, end));
        }
        Intervals(out)
    }

    /// Whether `[start, end)` is covered entirely.
    fn covers(&self, start: &[u8], end: &End) -> bool {
        // The last interval starting at or before `start` is the only one that can.
        let at = self.0.partition_point(|(s, _)| s.as_slice() <= start);
        let Some((_, covered_to)) = at.checked_sub(1).map(|i| &self.0[i]) else {
            return false;
        };
        let starts_inside = covered_to.as_ref().is_none_or(|e| start < e.as_slice());
        starts_inside && !end_before(covered_to, end)
    }
}

/// A user's merged permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPermissions {
    root: bool,
    read: Intervals,
    write: Intervals,
}

impl UserPermissions {
    /// Everything allowed: root's, and anyone's while authentication is off.
    pub fn everything() -> UserPermissions {
        UserPermissions {
            root: true,
            ..UserPermissions::default()
        }
    }

    /// Whether these are root's permissions.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Whether the user may do `access` over etcd's range (`key` alone when `range_end` is
    /// empty, every key from `key` on when it is `"\0"`).
    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        if self.root {
            return true;
        }
        let (start, end) = interval(key, range_end);
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        set.covers(&start, &end)
    }
}

/// Whether etcd's range `inner` lies wholly inside etcd's range `outer` (each `(key,
/// range_end)`: the key alone when the end is empty, every key from it on when it is `"\0"`).
pub fn range_within(inner: (&[u8], &[u8]), outer: (&[u8], &[u8])) -> bool {
    let (start, end) = interval(inner.0, inner.1);
    Intervals::merged(vec![interval(outer.0, outer.1)]).covers(&start, &end)
}

impl AuthStore {
    /// The merged permissions of `user`; `None` if there is no such user.
    pub fn permissions_of(&self, user: &str) -> Option<UserPermissions> {
        let user = self.users.get(user)?;
        if user.roles.iter().any(|r| r == ROOT_ROLE) {
            return Some(UserPermissions::everything());
        }
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for perm in user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.permissions)
        {
            let ivl = interval(&perm.key, &perm.range_end);
            match perm.kind {
                PermKind::Read => read.push(ivl),
                PermKind::Write => write.push(ivl),
                PermKind::ReadWrite => {
                    read.push(ivl.clone());
                    write.push(ivl);
                }
            }
        }
        Some(UserPermissions {
            root: false,
            read: Intervals::merged(read),
            write: Intervals::merged(write),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permission, Role, User};

    fn store(perms: &[(PermKind, &str, &str)], roles: &[&str]) -> AuthStore {
        let mut store = AuthStore::default();
        store.roles.insert(
            "r".into(),
            Role {
                name: "r".into(),
                permissions: perms
                    .iter()
                    .map(|(kind, key, end)| Permission {
                        kind: *kind,
                        key: key.as_bytes().to_vec(),
                        range_end: end.as_bytes().to_vec(),
                    })
                    .collect(),
            },
        );
        store.users.insert(
            "u".into(),
            User {
                name: "u".into(),
                password_hash: String::new(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                no_password: false,
                revision: 1,
            },
        );
        store
    }

    fn allows(store: &AuthStore, access: Access, key: &str, end: &str) -> bool {
        store
            .permissions_of("u")
            .expect("user u")
            .allows(access, key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn a_single_key_grant_covers_that_key_only() {
        // Proves a grant without a range end allows its key, not its neighbours or a range
        // that starts at it and goes further.
        let s = store(&[(PermKind::Read, "k", "")], &["r"]);
        assert!(allows(&s, Access::Read, "k", ""));
        assert!(allows(&s, Access::Read, "k", "k\0"));
        assert!(!allows(&s, Access::Read, "k0", ""));
        assert!(!allows(&s, Access::Read, "j", ""));
        assert!(!allows(&s, Access::Read, "k", "l"));
        assert!(!allows(&s, Access::Write, "k", ""));
    }

    #[test]
    fn prefixes_from_key_and_all_keys() {
        // Proves a prefix grant covers its keys and sub-ranges but nothing past its end, a
        // from-key grant everything from its key on, and an all-keys grant everything.
        let s = store(&[(PermKind::Write, "app/", "app0")], &["r"]);
        assert!(allows(&s, Access::Write, "app/x", ""));
        assert!(allows(&s, Access::Write, "app/", "app0"));
        assert!(allows(&s, Access::Write, "app/a", "app/b"));
        assert!(!allows(&s, Access::Write, "app/", "app1"));
        assert!(!allows(&s, Access::Write, "app/", "\0"));
        assert!(!allows(&s, Access::Write, "app0", ""));
        let s = store(&[(PermKind::Read, "m", "\0")], &["r"]);
        assert!(allows(&s, Access::Read, "zzz", ""));
        assert!(allows(&s, Access::Read, "m", "\0"));
        assert!(!allows(&s, Access::Read, "a", "\0"));
        let s = store(&[(PermKind::Read, "", "\0")], &["r"]);
        assert!(allows(&s, Access::Read, "", "\0"));
        assert!(allows(&s, Access::Read, "\0", "\0"));
        assert!(allows(&s, Access::Read, "any", ""));
    }

    #[test]
    fn ranges_are_covered_across_adjacent_grants_but_not_across_gaps() {
        // Proves permissions merge: [a, c) and [c, e) cover [b, d); [a, c) and [d, e) do not
        // cover [b, d); READWRITE counts for reading and writing.
        let s = store(
            &[(PermKind::ReadWrite, "a", "c"), (PermKind::Read, "c", "e")],
            &["r"],
        );
        assert!(allows(&s, Access::Read, "b", "d"));
        assert!(!allows(&s, Access::Write, "b", "d"));
        assert!(allows(&s, Access::Write, "b", "c"));
        let s = store(
            &[(PermKind::Read, "a", "c"), (PermKind::Read, "d", "e")],
            &["r"],
        );
        assert!(!allows(&s, Access::Read, "b", "d"));
        assert!(allows(&s, Access::Read, "d", ""));
        assert!(!allows(&s, Access::Read, "c", ""));
    }

    #[test]
    fn root_may_do_anything_and_strangers_nothing() {
        // Proves the root role allows every range, a user without roles is allowed nothing,
        // and an unknown user has no permissions at all.
        let s = store(&[], &[ROOT_ROLE]);
        assert!(allows(&s, Access::Write, "", "\0"));
        let s = store(&[(PermKind::Read, "k", "")], &[]);
        assert!(!allows(&s, Access::Read, "k", ""));
        assert!(s.permissions_of("nobody").is_none());
    }
}
