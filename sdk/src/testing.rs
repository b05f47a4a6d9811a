//! Running plugins natively, in plain `cargo test`: an in-memory [`MemStore`] with etcd's
//! revision rules, and functions that call a hook the way the host would.
//!
//! ```
//! use cairn_sdk::testing::{self, MemStore};
//! use cairn_sdk::{Context, Decision, Guard, Op};
//!
//! /// Denies every write while the key `/frozen` exists.
//! struct Freeze;
//!
//! impl Guard for Freeze {
//!     fn check(ctx: &Context<'_>, _ops: &[Op]) -> Decision {
//!         match ctx.store().get(b"/frozen") {
//!             Some(_) => Decision::deny("frozen"),
//!             None => Decision::Allow,
//!         }
//!     }
//! }
//!
//! let mut store = MemStore::new();
//! assert_eq!(testing::check::<Freeze>(&store, b"", &[Op::put("a", "1")]), Decision::Allow);
//! store.put("/frozen", "");
//! assert!(!testing::check::<Freeze>(&store, b"", &[Op::put("a", "1")]).is_allowed());
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::context::{Backend, Context, FilterContext, Level, LogSink};
use crate::hooks::{Compare, Guard, Policy, Reactor, WatchFilter};
use crate::store::{Store, range_contains};
use crate::types::{Answer, Decision, Event, KeyValue, Op, PolicyRequest, Value, Verdict, Watcher};

/// The most keys [`Store::range`] returns with `limit` 0, as on the host.
pub const RANGE_LIMIT_CAP: u32 = 1_000;

/// An in-memory [`Store`] with etcd's revision rules.
///
/// A new store is at revision 1, as a new etcd is. Each put bumps the revision and sets the
/// key's `mod_revision` to it; a put of a new key also sets `create_revision` and starts
/// `version` at 1, a put of an existing key increments `version`. A delete of an existing
/// key bumps the revision; a delete of a missing key changes nothing.
#[derive(Clone, Debug)]
pub struct MemStore {
    revision: i64,
    keys: BTreeMap<Vec<u8>, KeyValue>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store at revision 1.
    pub fn new() -> Self {
        Self {
            revision: 1,
            keys: BTreeMap::new(),
        }
    }

    /// Puts `value` at `key` with no lease and returns the new revision.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> i64 {
        self.put_with_lease(key, value, 0)
    }

    /// Puts `value` at `key` attached to `lease` and returns the new revision.
    pub fn put_with_lease(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: i64,
    ) -> i64 {
        self.revision += 1;
        let revision = self.revision;
        let key = key.as_ref().to_vec();
        let kv = self.keys.entry(key.clone()).or_insert_with(|| KeyValue {
            key,
            create_revision: revision,
            ..KeyValue::default()
        });
        kv.value = value.as_ref().to_vec();
        kv.mod_revision = revision;
        kv.version += 1;
        kv.lease = lease;
        revision
    }

    /// Deletes `key`; returns whether it existed (and so whether the revision moved).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> bool {
        let existed = self.keys.remove(key.as_ref()).is_some();
        if existed {
            self.revision += 1;
        }
        existed
    }

    /// Puts `value` at `key`, for building a store in one expression.
    pub fn with(mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.put(key, value);
        self
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn in_range<'s>(
        &'s self,
        key: &'s [u8],
        range_end: &'s [u8],
    ) -> impl Iterator<Item = &'s KeyValue> + 's {
        self.keys
            .range(key.to_vec()..)
            .map(|(_, kv)| kv)
            .take_while(move |kv| range_contains(key, range_end, &kv.key))
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for MemStore {
    /// Puts each pair in order, one revision each.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut store = Self::new();
        for (key, value) in pairs {
            store.put(key, value);
        }
        store
    }
}

impl Store for MemStore {
    fn revision(&self) -> i64 {
        self.revision
    }

    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.keys.get(key).cloned()
    }

    fn range(&self, key: &[u8], range_end: &[u8], limit: u32) -> Vec<KeyValue> {
        let limit = if limit == 0 { RANGE_LIMIT_CAP } else { limit };
        self.in_range(key, range_end)
            .take(limit as usize)
            .cloned()
            .collect()
    }

    fn count(&self, key: &[u8], range_end: &[u8]) -> u64 {
        self.in_range(key, range_end).count() as u64
    }
}

/// A line a hook logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The line's level.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// Captures log lines, and echoes them to stderr so `cargo test` shows them on failure.
#[derive(Default)]
struct Capture(RefCell<Vec<LogLine>>);

impl LogSink for Capture {
    fn write(&self, level: Level, message: &str) {
        eprintln!("[plugin {level}] {message}");
        self.0.borrow_mut().push(LogLine {
            level,
            message: message.to_owned(),
        });
    }
}

/// Calls hooks against one store and config the way the host would, and keeps what they log.
///
/// ```
/// # use cairn_sdk::testing::{Harness, MemStore};
/// # use cairn_sdk::{Context, Decision, Guard, Level, Op};
/// struct Chatty;
/// impl Guard for Chatty {
///     fn check(ctx: &Context<'_>, ops: &[Op]) -> Decision {
///         ctx.info(&format!("{} ops", ops.len()));
///         Decision::Allow
///     }
/// }
///
/// let store = MemStore::new();
/// let harness = Harness::new(&store, b"");
/// harness.check::<Chatty>(&[Op::put("a", "1")]);
/// assert_eq!(harness.logs()[0].message, "1 ops");
/// assert_eq!(harness.logs()[0].level, Level::Info);
/// ```
pub struct Harness<'a> {
    store: &'a dyn Store,
    config: &'a [u8],
    now_ms: i64,
    logs: Capture,
}

impl<'a> Harness<'a> {
    /// A harness over `store` with the binding config `config`.
    pub fn new(store: &'a dyn Store, config: &'a [u8]) -> Self {
        Self {
            store,
            config,
            now_ms: 0,
            logs: Capture::default(),
        }
    }

    /// The same harness, with [`Context::now_ms`] answering `now_ms` (0 until set).
    pub fn at(mut self, now_ms: i64) -> Self {
        self.now_ms = now_ms;
        self
    }

    fn backend(&self) -> Backend<'_> {
        Backend::Test {
            store: self.store,
            log: &self.logs,
            now_ms: self.now_ms,
        }
    }

    fn context(&self) -> Context<'_> {
        Context::new(self.config, self.backend())
    }

    /// Runs guard `G` on `ops`.
    pub fn check<G: Guard>(&self, ops: &[Op]) -> Decision {
        G::check(&self.context(), ops)
    }

    /// Runs compare `C` on `argument`.
    pub fn compute<C: Compare>(&self, argument: &[u8]) -> Result<Value, String> {
        C::compute(&self.context(), argument)
    }

    /// Runs policy hook `P` on `request`.
    pub fn check_policy<P: Policy>(&self, request: &PolicyRequest) -> Answer {
        P::check(&self.context(), request)
    }

    /// Opens watch filter `W` for `watcher` (it sees the config and the log, not the store).
    pub fn open_filter<W: WatchFilter>(&self, watcher: &Watcher) -> Result<W, String> {
        W::open(&FilterContext::new(self.config, self.backend()), watcher)
    }

    /// Runs an opened watch filter on `event`.
    pub fn filter<W: WatchFilter>(&self, filter: &mut W, event: &Event) -> Verdict {
        filter.filter(&FilterContext::new(self.config, self.backend()), event)
    }

    /// Runs reactor `R` on `events`, which happened at `revision`.
    pub fn react<R: Reactor>(&self, revision: i64, events: &[Event]) -> Vec<Op> {
        R::react(&self.context(), revision, events)
    }

    /// The lines logged so far, oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        self.logs.0.borrow().clone()
    }
}

/// Runs guard `G` on `ops` against `store` with binding config `config`.
pub fn check<G: Guard>(store: &dyn Store, config: &[u8], ops: &[Op]) -> Decision {
    Harness::new(store, config).check::<G>(ops)
}

/// Runs compare `C` on `argument` against `store` with binding config `config`.
pub fn compute<C: Compare>(
    store: &dyn Store,
    config: &[u8],
    argument: &[u8],
) -> Result<Value, String> {
    Harness::new(store, config).compute::<C>(argument)
}

/// Runs policy hook `P` on `request` against `store` with binding config `config`.
pub fn check_policy<P: Policy>(
    store: &dyn Store,
    config: &[u8],
    request: &PolicyRequest,
) -> Answer {
    Harness::new(store, config).check_policy::<P>(request)
}

/// Opens watch filter `W` with binding config `config` for `watcher`, and runs it on
/// `events` in order: its verdict on each, or the error `open` refused it with.
pub fn filter<W: WatchFilter>(
    config: &[u8],
    watcher: &Watcher,
    events: &[Event],
) -> Result<Vec<Verdict>, String> {
    let store = MemStore::new();
    let harness = Harness::new(&store, config);
    let mut filter = harness.open_filter::<W>(watcher)?;
    Ok(events
        .iter()
        .map(|event| harness.filter(&mut filter, event))
        .collect())
}

/// Runs reactor `R` on `events` (which happened at `revision`) against `store` with binding
/// config `config`.
pub fn react<R: Reactor>(
    store: &dyn Store,
    config: &[u8],
    revision: i64,
    events: &[Event],
) -> Vec<Op> {
    Harness::new(store, config).react::<R>(revision, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prefix_end;

    /// Puts and deletes move revisions, versions and create/mod revisions as etcd does.
    #[test]
    fn mem_store_tracks_revisions_like_etcd() {
        let mut store = MemStore::new();
        assert_eq!(store.revision(), 1);
        assert_eq!(store.put("a", "1"), 2);
        assert_eq!(store.put("a", "2"), 3);
        let kv = store.get(b"a").expect("a was put");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert_eq!(kv.value, b"2");
        assert!(store.delete("a"));
        assert_eq!(store.revision(), 4);
        assert!(!store.delete("a"));
        assert_eq!(store.revision(), 4);
        store.put("a", "3");
        let kv = store.get(b"a").expect("a was put again");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    }

    /// range and count honour etcd's range rules and range's limit.
    #[test]
    fn mem_store_ranges_and_counts() {
        let store: MemStore = [("/a/1", "x"), ("/a/2", "y"), ("/b", "z")]
            .into_iter()
            .collect();
        assert_eq!(store.count(b"/a/", &prefix_end(b"/a/")), 2);
        assert_eq!(store.count_prefix(b"/"), 3);
        assert_eq!(store.count(b"/b", b""), 1);
        assert_eq!(store.count(b"/a/2", b"\0"), 2);
        let first = store.range(b"/", b"\0", 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key, b"/a/1");
        assert_eq!(store.range_prefix(b"/a/", 0).len(), 2);
    }
}
