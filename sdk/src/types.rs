//! The Rust view of the contract's data types (`cairn:plugin/types`, plus the policy and
//! watch-filter enums), as plain owned values with etcd's field names.
//!
//! These are what plugin code sees; the generated WIT bindings never leak out of the SDK.
//! Conversions to and from the bindings live in `__private::convert`.

use crate::store::range_contains;

/// A key and its value, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// The revision of the key's last put.
    pub mod_revision: i64,
    /// How many puts the key has had since it was created: 1 after the first.
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// A put, as the request carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Put {
    /// The key written.
    pub key: Vec<u8>,
    /// The new value; meaningless when `ignore_value` is set.
    pub value: Vec<u8>,
    /// The lease to attach, 0 for none; meaningless when `ignore_lease` is set.
    pub lease: i64,
    /// The put keeps the key's current value (etcd's `ignore_value`).
    pub ignore_value: bool,
    /// The put keeps the key's current lease (etcd's `ignore_lease`).
    pub ignore_lease: bool,
}

impl Put {
    /// A plain put of `value` at `key`, with no lease.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }
}

/// A delete of one key (`range_end` empty) or of the keys in `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeleteRange {
    /// The first key deleted.
    pub key: Vec<u8>,
    /// The end of the range, exclusive; empty for just `key`, `"\0"` for every key from `key`
    /// on.
    pub range_end: Vec<u8>,
}

impl DeleteRange {
    /// A delete of one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    /// A delete of the keys in `[key, range_end)`.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    /// A delete of every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = crate::store::prefix_end(&key);
        Self { key, range_end }
    }

    /// Whether this delete covers `key`, with etcd's range rules.
    pub fn contains(&self, key: &[u8]) -> bool {
        range_contains(&self.key, &self.range_end, key)
    }
}

/// One write a guard is asked about, or a reactor asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A put of one key.
    Put(Put),
    /// A delete of one key or a range of keys.
    DeleteRange(DeleteRange),
}

impl Op {
    /// A plain put of `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put(Put::new(key, value))
    }

    /// A delete of one key.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::DeleteRange(DeleteRange::key(key))
    }

    /// A delete of the keys in `[key, range_end)`.
    pub fn delete_range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self::DeleteRange(DeleteRange::range(key, range_end))
    }

    /// The key the op writes, or the first key of the range it deletes.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Put(put) => &put.key,
            Self::DeleteRange(delete) => &delete.key,
        }
    }
}

/// A hook's answer: allow, or deny with a reason the client sees.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The request goes ahead.
    Allow,
    /// The request fails with this reason.
    Deny(String),
}

impl Decision {
    /// A denial with `reason`.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::Deny(reason.into())
    }

    /// Whether this is [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

/// The left side of a computed compare.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Compared with the compare's integer target (as a version, a revision or a lease is).
    Int(i64),
    /// Compared bytewise with the compare's value target.
    Bytes(Vec<u8>),
}

/// What a watch event did to its key, as etcd's `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// A watch event, as etcd's `mvccpb.Event`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// What happened (etcd's `type`, renamed since `type` is a Rust keyword).
    pub kind: EventType,
    /// The key after the event; for a delete, just the key and the delete's revision.
    pub kv: KeyValue,
    /// The key before the event, when the watcher asked for it.
    pub prev_kv: Option<KeyValue>,
}

/// The request a policy hook is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A Range (get) request.
    Range,
    /// A Put; with a lease, it attaches the key to the lease.
    Put,
    /// A DeleteRange.
    DeleteRange,
    /// A Txn: its compares and both branches, nested txns included.
    Txn,
    /// A watch being created.
    Watch,
    /// A client's LeaseRevoke, which deletes every key the lease holds.
    LeaseRevoke,
}

/// One thing a request does to the bound range, as etcd's permission check sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// A write (put or delete) rather than a read.
    pub write: bool,
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range, with etcd's rules (empty: just `key`).
    pub range_end: Vec<u8>,
    /// The value a put writes (`None` for reads, deletes and puts that keep the value).
    pub value: Option<Vec<u8>>,
    /// The lease a put attaches (0: none).
    pub lease: i64,
    /// Whether the user's roles allow this access on their own.
    pub allowed_by_roles: bool,
}

impl Access {
    /// A read of `[key, range_end)`.
    pub fn read(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            write: false,
            key: key.into(),
            range_end: range_end.into(),
            value: None,
            lease: 0,
            allowed_by_roles: false,
        }
    }

    /// A put of `value` at `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            write: true,
            key: key.into(),
            range_end: Vec::new(),
            value: Some(value.into()),
            lease: 0,
            allowed_by_roles: false,
        }
    }

    /// A delete of `[key, range_end)`.
    pub fn delete(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            write: true,
            key: key.into(),
            range_end: range_end.into(),
            value: None,
            lease: 0,
            allowed_by_roles: false,
        }
    }

    /// The same access, with what the roles decided.
    pub fn allowed_by_roles(mut self, allowed: bool) -> Self {
        self.allowed_by_roles = allowed;
        self
    }
}

/// What a policy hook is asked: may `user` do these accesses?
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyRequest {
    /// The authenticated user's name (never root: root is never asked about).
    pub user: String,
    /// The user's roles, in name order.
    pub roles: Vec<String>,
    /// The request.
    pub operation: Operation,
    /// The request's accesses that overlap the bound range, in request order.
    pub accesses: Vec<Access>,
}

impl PolicyRequest {
    /// A request by `user` (no roles) doing `operation` with `accesses`.
    pub fn new(user: impl Into<String>, operation: Operation, accesses: Vec<Access>) -> Self {
        Self {
            user: user.into(),
            roles: Vec::new(),
            operation,
            accesses,
        }
    }
}

/// A policy hook's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Grants every access shown that lies wholly in the bound range, whatever the roles say.
    Allow,
    /// Refuses the whole request: the client gets etcd's `permission denied`, and this
    /// reason travels in the response metadata and the member's log.
    Deny(String),
    /// Leaves the accesses to the user's roles.
    Defer,
}

impl Answer {
    /// A denial with `reason`.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self::Deny(reason.into())
    }
}

/// A watch filter's answer for one event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Send the event as it is.
    Pass,
    /// Do not send the event to this watcher.
    Drop,
    /// Send the event with these values instead (key, revisions and type stay).
    Rewrite {
        /// The event's value.
        value: Vec<u8>,
        /// The previous version's value, when the watcher asked for previous versions.
        prev_value: Vec<u8>,
    },
}

impl Verdict {
    /// Sends the event with `value` as both its value and its previous version's (what a
    /// redacting filter wants: nothing of the original is left).
    pub fn rewrite(value: impl Into<Vec<u8>>) -> Self {
        let value = value.into();
        Self::Rewrite {
            prev_value: value.clone(),
            value,
        }
    }
}

/// Who a watch filter is opened for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Watcher {
    /// The watcher's user (empty while authentication is off).
    pub user: String,
    /// The user's roles, in name order.
    pub roles: Vec<String>,
    /// The argument the watcher named the filter with (`cairnctl watch --filter-arg`); empty
    /// for a filter bound to a key range.
    pub argument: Vec<u8>,
}
