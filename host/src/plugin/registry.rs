//! The replicated plugin registry: installed modules, in-progress uploads, and bindings.
//!
//! Changed only in apply, by [`PluginCommand`]s, and so identical on every member. Stored in
//! the `plugins` keyspace (a state keyspace, so snapshots carry it) and mirrored in memory,
//! where the apply path reads it:
//!
//! | key                | value                                                      |
//! |--------------------|------------------------------------------------------------|
//! | `module/<sha256>`  | the component's bytes                                      |
//! | `plugin/<name>`    | [`PluginRecord`]: which module the name installs           |
//! | `upload/<name>`    | [`Upload`]: chunks received so far                         |
//! | `binding/<name>`   | [`Binding`], with its statistics                           |
//! | `reactor/<name>`   | [`ReactorState`]: a reactor binding's cursor and failures  |
//!
//! The registry's own commands are never guarded: they do not go through the KV write
//! path, so no plugin can lock the operator out of unbinding or removing it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fjall::Readable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::validate::{hook_of, validate};
use super::{DEFAULT_FUEL, DEFAULT_MEMORY_BYTES, MAX_FUEL, MAX_MEMORY_BYTES, MAX_MODULE_BYTES};
use crate::metrics::lock;
use crate::mvcc::{ApplyBatch, Fault};
use crate::storage::{SideTable, SideWrites, Storage};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Guard,
    Compare,
    /// An RBAC policy hook (`plugin/policy.rs`). Variants are only appended: bindings on
    /// disk decode by variant index.
    Policy,
    /// A watch filter (`plugin/filter.rs`), run on the member serving the watcher.
    WatchFilter,
    /// A reactor (`plugin/reactor.rs`): run on the leader over committed events, its writes
    /// proposed with its cursor.
    Reactor,
}

impl Kind {
    /// The hook interface a plugin must export for this kind.
    pub fn hook(self) -> &'static str {
        match self {
            Kind::Guard => "guard",
            Kind::Compare => "compare",
            Kind::Policy => "policy",
            Kind::WatchFilter => "watch-filter",
            Kind::Reactor => "reactor",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// A failing plugin rejects the write.
    #[default]
    FailClosed,
    /// A failing guard allows; a failing compare is false.
    Ignore,
}

/// An installed plugin name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// Exported hook interfaces (`cairn:plugin/guard@0.1.0`).
    pub exports: Vec<String>,
}

/// An upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub sha256: String,
    pub size: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// What a binding did so far; identical on every member, since it is computed in apply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingStats {
    pub calls: u64,
    pub denials: u64,
    pub failures: u64,
    pub fuel_used: u64,
    /// sha256 chained over every call's decision and fuel.
    pub decisions_hash: [u8; 32],
}

impl BindingStats {
    /// Records one call: `decision` is what it decided, in words (`allow`, `deny: …`,
    /// `fail: …`, or a compare's value).
    pub fn record(&mut self, decision: &str, fuel: u64, denied: bool, failed: bool) {
        self.calls += 1;
        self.denials += u64::from(denied);
        self.failures += u64::from(failed);
        self.fuel_used = self.fuel_used.saturating_add(fuel);
        let mut h = Sha256::new();
        h.update(self.decisions_hash);
        h.update(decision.as_bytes());
        h.update(fuel.to_be_bytes());
        self.decisions_hash = h.finalize().into();
    }
}

/// Where and how a plugin runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub name: String,
    pub plugin: String,
    pub kind: Kind,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
    pub fuel: u64,
    pub memory_bytes: u64,
    pub failure_policy: FailurePolicy,
    /// The module it runs: the plugin's when bound (set in apply).
    pub sha256: String,
    pub stats: BindingStats,
}

/// How a reactor treats writes that reactors made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactorOptions {
    /// Whether the reactor's own writes trigger it again (never beyond `max_depth`).
    pub retrigger: bool,
    /// How deep a chain of reactor writes may go: a revision written by a reactor step that
    /// was itself triggered `max_depth` reactor writes deep triggers nothing.
    pub max_depth: u32,
}

impl Default for ReactorOptions {
    fn default() -> Self {
        ReactorOptions {
            retrigger: false,
            max_depth: DEFAULT_REACTOR_DEPTH,
        }
    }
}

/// The default and largest reactor depth.
pub const DEFAULT_REACTOR_DEPTH: u32 = 8;
pub const MAX_REACTOR_DEPTH: u32 = 64;
/// Consecutive failures after which a reactor is paused (rebinding resumes it).
pub const REACTOR_FAILURES_TO_PAUSE: u32 = 5;

/// Where a reactor stands; replicated, so a new leader continues where the old one stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactorState {
    pub options: ReactorOptions,
    /// Every revision up to here has been reacted to (or skipped).
    pub cursor: i64,
    /// Steps taken and writes made.
    pub steps: u64,
    pub writes: u64,
    /// Consecutive failures; at [`REACTOR_FAILURES_TO_PAUSE`] the reactor is paused.
    pub failures: u32,
    pub paused: bool,
    pub last_error: String,
    /// The revisions reactor steps wrote in this reactor's range after its cursor: the depth
    /// of each, and whether this reactor wrote it.
    pub written: BTreeMap<i64, (u32, bool)>,
}

/// What a reactor step wrote: at which revision, at which depth, how many ops, over which
/// key ranges.
#[derive(Clone, Debug)]
pub struct ReactorWrite {
    pub at: i64,
    pub depth: u32,
    pub ops: u64,
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A registry change, carried by the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginCommand {
    Install {
        name: String,
        sha256: String,
        size: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Binds (or rebinds) as described; `sha256` and `stats` are ignored.
    Bind(Binding),
    Unbind {
        name: String,
    },
    Remove {
        name: String,
    },
    /// Binds a reactor with its options (a plain `Bind` of a reactor takes the defaults).
    BindReactor {
        binding: Binding,
        options: ReactorOptions,
    },
    /// A reactor's step, proposed by the leader: if the reactor's cursor is still `cursor`,
    /// apply `ops` as one txn (when there are any) and move the cursor to `revision`; the
    /// txn's revision is recorded at `depth`. A step whose cursor moved meanwhile (a step
    /// proposed twice, by an old and a new leader) changes nothing: exactly once.
    ReactorStep {
        name: String,
        cursor: i64,
        revision: i64,
        depth: u32,
        ops: Vec<crate::mvcc::RequestOp>,
    },
    /// A reactor's failure at `cursor` (its plugin trapped, ran out of fuel or answered out
    /// of bounds, or history was compacted past its cursor): counted, and after
    /// [`REACTOR_FAILURES_TO_PAUSE`] in a row the reactor is paused.
    ReactorFailed {
        name: String,
        cursor: i64,
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginOutcome {
    /// An install chunk was taken: bytes received so far, and whether the module is in.
    Install {
        received: u64,
        installed: bool,
    },
    Done,
}

/// Why a registry command was refused. Decided by replicated state only.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum PluginError {
    #[error("plugin {0:?} not found")]
    PluginNotFound(String),
    #[error("binding {0:?} not found")]
    BindingNotFound(String),
    #[error("plugin {plugin:?} is used by binding {binding:?}; unbind it first")]
    PluginInUse { plugin: String, binding: String },
    #[error("install of {name:?}: {reason}")]
    BadChunk { name: String, reason: String },
    #[error("module {name:?} was rejected: {reason}")]
    Rejected { name: String, reason: String },
    #[error("binding {name:?}: {reason}")]
    BadBinding { name: String, reason: String },
    #[error("reactor {name:?} is at revision {found}, not {expected}")]
    ReactorMoved {
        name: String,
        expected: i64,
        found: i64,
    },
    #[error("reactor {name:?} failed: {reason}")]
    ReactorFailed { name: String, reason: String },
}

impl PluginError {
    /// Whether the error names something that does not exist (NotFound) rather than a bad
    /// request (InvalidArgument) or a conflict (FailedPrecondition).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            PluginError::PluginNotFound(_) | PluginError::BindingNotFound(_)
        )
    }

    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            PluginError::PluginInUse { .. } | PluginError::ReactorMoved { .. }
        )
    }
}

/// The longest plugin or binding name: names are keys of the `plugins` keyspace, and the
/// storage engine's keys are bounded.
pub const MAX_NAME_BYTES: usize = 1024;

const MODULE: &str = "module/";
/// Prefix of installed plugins' records (read also by `backup.rs`).
pub(crate) const PLUGIN: &str = "plugin/";
const UPLOAD: &str = "upload/";
pub(crate) const BINDING: &str = "binding/";
const REACTOR: &str = "reactor/";

fn key(prefix: &str, name: &str) -> Vec<u8> {
    [prefix.as_bytes(), name.as_bytes()].concat()
}

/// Checks an upload's name, digest and declared size; the digest in lowercase.
fn check_upload(name: &str, sha256: &str, size: u64) -> Result<String, String> {
    if name.is_empty() {
        return Err("the plugin needs a name".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("the name is over {MAX_NAME_BYTES} bytes"));
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("sha256 must be 64 hex digits".into());
    }
    if size == 0 || size > MAX_MODULE_BYTES as u64 {
        return Err(format!(
            "size {size} is outside 1..={MAX_MODULE_BYTES} bytes"
        ));
    }
    Ok(sha256.to_ascii_lowercase())
}

/// Writes the registry's records in the apply batch.
struct PluginTable<'b>(SideWrites<'b>);

impl<'b> PluginTable<'b> {
    fn of(batch: &'b mut ApplyBatch<'_>) -> Self {
        PluginTable(batch.side())
    }

    fn put_module(&mut self, sha256: &str, bytes: Vec<u8>) {
        self.0
            .insert(SideTable::Plugins, &key(MODULE, sha256), bytes);
    }

    fn remove_module(&mut self, sha256: &str) {
        self.0.remove(SideTable::Plugins, &key(MODULE, sha256));
    }

    fn put_plugin(&mut self, record: &PluginRecord) {
        self.0.insert(
            SideTable::Plugins,
            &key(PLUGIN, &record.name),
            encode(record),
        );
    }

    fn remove_plugin(&mut self, name: &str) {
        self.0.remove(SideTable::Plugins, &key(PLUGIN, name));
    }

    fn put_upload(&mut self, name: &str, upload: &Upload) {
        self.0
            .insert(SideTable::Plugins, &key(UPLOAD, name), encode(upload));
    }

    fn remove_upload(&mut self, name: &str) {
        self.0.remove(SideTable::Plugins, &key(UPLOAD, name));
    }

    fn put_binding(&mut self, binding: &Binding) {
        self.0.insert(
            SideTable::Plugins,
            &key(BINDING, &binding.name),
            encode(binding),
        );
    }

    fn remove_binding(&mut self, name: &str) {
        self.0.remove(SideTable::Plugins, &key(BINDING, name));
        self.0.remove(SideTable::Plugins, &key(REACTOR, name));
    }

    fn remove_reactor(&mut self, name: &str) {
        self.0.remove(SideTable::Plugins, &key(REACTOR, name));
    }

    fn put_reactor(&mut self, name: &str, state: &ReactorState) {
        self.0
            .insert(SideTable::Plugins, &key(REACTOR, name), encode(state));
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on these plain structs except on out-of-memory.
    postcard::to_stdvec(value).expect("registry records always encode")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Fault> {
    postcard::from_bytes(bytes).map_err(|e| Fault::Corrupt {
        what: "plugin registry record",
        detail: e.to_string(),
    })
}

/// What the API needs to know of the registry without locking it (apply holds the registry's
/// lock for a whole batch): its change counter and how many guard, policy and watch-filter bindings
/// there are. Apply publishes it after each batch that changed the registry.
#[derive(Debug, Default)]
pub struct Published {
    pub generation: std::sync::atomic::AtomicU64,
    pub guards: std::sync::atomic::AtomicUsize,
    pub policies: std::sync::atomic::AtomicUsize,
    pub watch_filters: std::sync::atomic::AtomicUsize,
}

impl Published {
    pub fn publish(&self, registry: &Registry) {
        use std::sync::atomic::Ordering;
        let count = |kind| {
            registry
                .bindings
                .values()
                .filter(|b| b.kind == kind)
                .count()
        };
        self.guards.store(count(Kind::Guard), Ordering::SeqCst);
        self.policies.store(count(Kind::Policy), Ordering::SeqCst);
        self.watch_filters
            .store(count(Kind::WatchFilter), Ordering::SeqCst);
        self.generation.store(registry.generation, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many bindings of `kind` there are, for the kinds counted here.
    fn count(&self, kind: Kind) -> Option<usize> {
        let counter = match kind {
            Kind::Guard => &self.guards,
            Kind::Policy => &self.policies,
            Kind::WatchFilter => &self.watch_filters,
            Kind::Compare | Kind::Reactor => return None,
        };
        Some(counter.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Bindings by name.
pub type Bindings = BTreeMap<String, Binding>;

/// The bindings of some kinds, copied out of the registry once per registry change for the
/// paths that read them per request (policy checks of reads, the leader vetting writes):
/// apply holds the registry's lock for whole batches, and a binding carries its config.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct BindingCache {
    registry: Arc<Mutex<Registry>>,
    published: Arc<Published>,
    kinds: &'static [Kind],
    /// The copy, and the registry generation it was made at.
    cached: Arc<Mutex<(u64, Arc<Bindings>)>>,
}

impl BindingCache {
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        published: Arc<Published>,
        kinds: &'static [Kind],
    ) -> BindingCache {
        BindingCache {
            registry,
            published,
            kinds,
            cached: Arc::new(Mutex::new((u64::MAX, Arc::default()))),
        }
    }

    /// The bindings of these kinds now, and the registry generation they are of. When there
    /// are none (the usual case) the registry is not even locked.
    pub fn get(&self) -> (u64, Arc<Bindings>) {
        let generation = self.published.generation();
        if self
            .kinds
            .iter()
            .all(|kind| self.published.count(*kind) == Some(0))
        {
            return (generation, Arc::default());
        }
        let mut cached = lock(&self.cached);
        if cached.0 != generation {
            let registry = lock(&self.registry);
            let bindings = registry
                .bindings
                .iter()
                .filter(|(_, b)| self.kinds.contains(&b.kind))
                .map(|(name, b)| (name.clone(), b.clone()))
                .collect();
            *cached = (registry.generation, Arc::new(bindings));
        }
        (cached.0, cached.1.clone())
    }
}

/// The registry, in memory.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    pub plugins: BTreeMap<String, PluginRecord>,
    pub bindings: BTreeMap<String, Binding>,
    uploads: BTreeMap<String, Upload>,
    /// Each reactor binding's state, by binding name.
    pub reactors: BTreeMap<String, ReactorState>,
    /// Counts the registry changes this member applied since it started (not replicated,
    /// not persisted): what read-side memos key on, so a rebind forgets their answers.
    pub generation: u64,
}

impl Registry {
    /// Reads the registry as committed in `storage`.
    pub fn load(storage: &Storage) -> Result<Registry, Fault> {
        let mut registry = Registry::default();
        let snap = storage.db.snapshot();
        for guard in snap.prefix(&storage.plugins, PLUGIN) {
            let (_, v) = guard.into_inner()?;
            let record: PluginRecord = decode(&v)?;
            registry.plugins.insert(record.name.clone(), record);
        }
        for guard in snap.prefix(&storage.plugins, BINDING) {
            let (_, v) = guard.into_inner()?;
            let binding: Binding = decode(&v)?;
            registry.bindings.insert(binding.name.clone(), binding);
        }
        for guard in snap.prefix(&storage.plugins, UPLOAD) {
            let (k, v) = guard.into_inner()?;
            let name = String::from_utf8_lossy(&k[UPLOAD.len()..]).into_owned();
            registry.uploads.insert(name, decode(&v)?);
        }
        for guard in snap.prefix(&storage.plugins, REACTOR) {
            let (k, v) = guard.into_inner()?;
            let name = String::from_utf8_lossy(&k[REACTOR.len()..]).into_owned();
            registry.reactors.insert(name, decode(&v)?);
        }
        Ok(registry)
    }

    /// The committed bytes of a module.
    pub fn module(storage: &Storage, sha256: &str) -> Result<Option<Vec<u8>>, Fault> {
        Ok(storage
            .db
            .snapshot()
            .get(&storage.plugins, key(MODULE, sha256))?
            .map(|v| v.to_vec()))
    }

    /// Applies one command. `installed` is told about each newly installed module (the
    /// engine starts compiling it, off the apply path).
    pub fn apply(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        command: &PluginCommand,
        installed: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<PluginOutcome, PluginError> {
        self.generation += 1;
        match command {
            PluginCommand::Install {
                name,
                sha256,
                size,
                offset,
                data,
            } => self.install(batch, name, sha256, *size, *offset, data, installed),
            PluginCommand::Bind(spec) => self.bind(batch, spec, ReactorOptions::default()),
            PluginCommand::BindReactor { binding, options } => {
                if binding.kind != Kind::Reactor {
                    return Err(PluginError::BadBinding {
                        name: binding.name.clone(),
                        reason: "reactor options on a binding that is not a reactor".into(),
                    });
                }
                self.bind(batch, binding, *options)
            }
            PluginCommand::Unbind { name } => {
                if self.bindings.remove(name).is_none() {
                    return Err(PluginError::BindingNotFound(name.clone()));
                }
                self.reactors.remove(name);
                PluginTable::of(batch).remove_binding(name);
                Ok(PluginOutcome::Done)
            }
            PluginCommand::ReactorFailed {
                name,
                cursor,
                reason,
            } => {
                let state = self.reactor_at(name, *cursor)?;
                state.failures += 1;
                state.paused = state.failures >= REACTOR_FAILURES_TO_PAUSE;
                state.last_error = reason.chars().take(4096).collect();
                let state = state.clone();
                PluginTable::of(batch).put_reactor(name, &state);
                Ok(PluginOutcome::Done)
            }
            // The state machine applies steps (they write keys): `StateMachine::reactor_step`.
            PluginCommand::ReactorStep { name, .. } => Err(PluginError::BadBinding {
                name: name.clone(),
                reason: "a reactor step reached the registry".into(),
            }),
            PluginCommand::Remove { name } => {
                let Some(record) = self.plugins.get(name).cloned() else {
                    return Err(PluginError::PluginNotFound(name.clone()));
                };
                if let Some(b) = self.bindings.values().find(|b| b.plugin == *name) {
                    return Err(PluginError::PluginInUse {
                        plugin: name.clone(),
                        binding: b.name.clone(),
                    });
                }
                self.plugins.remove(name);
                PluginTable::of(batch).remove_plugin(name);
                self.drop_module_if_unused(batch, &record.sha256);
                Ok(PluginOutcome::Done)
            }
        }
    }

    /// Reactor `name`'s state, if its cursor is `cursor`.
    pub fn reactor_at(
        &mut self,
        name: &str,
        cursor: i64,
    ) -> Result<&mut ReactorState, PluginError> {
        let state = self
            .reactors
            .get_mut(name)
            .ok_or_else(|| PluginError::BindingNotFound(name.to_string()))?;
        if state.cursor != cursor {
            return Err(PluginError::ReactorMoved {
                name: name.to_string(),
                expected: cursor,
                found: state.cursor,
            });
        }
        Ok(state)
    }

    /// Records reactor `name`'s step to `revision` (checked with [`Self::reactor_at`]): its
    /// writes, if any, went in at a revision, at a depth, over some key ranges; or it failed.
    /// The written revision is recorded with every reactor whose range the writes touch, so
    /// chains through other reactors are depth-limited too.
    pub fn reactor_stepped(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        name: &str,
        revision: i64,
        outcome: Result<Option<ReactorWrite>, String>,
    ) {
        let Some(state) = self.reactors.get_mut(name) else {
            return;
        };
        let wrote = match outcome {
            Ok(wrote) => {
                state.cursor = revision;
                state.steps += 1;
                state.failures = 0;
                // Only revisions after the cursor can still trigger it.
                state.written = state.written.split_off(&(revision + 1));
                if let Some(w) = &wrote {
                    state.writes += w.ops;
                }
                wrote
            }
            Err(reason) => {
                state.failures += 1;
                state.paused = state.failures >= REACTOR_FAILURES_TO_PAUSE;
                state.last_error = reason.chars().take(4096).collect();
                None
            }
        };
        let mut changed = vec![name.to_string()];
        if let Some(w) = wrote {
            for (other, state) in self.reactors.iter_mut() {
                let Some(b) = self.bindings.get(other) else {
                    continue;
                };
                let touched = w.ranges.iter().any(|(k, e)| {
                    crate::mvcc::KeyRange::pairs_overlap((&b.key, &b.range_end), (k, e))
                });
                if touched && w.at > state.cursor {
                    state.written.insert(w.at, (w.depth, other == name));
                    if other != name {
                        changed.push(other.clone());
                    }
                }
            }
        }
        for name in changed {
            if let Some(state) = self.reactors.get(&name) {
                PluginTable::of(batch).put_reactor(&name, state);
            }
        }
    }

    /// Writes a binding's current record (after its statistics changed).
    pub fn persist_binding(&self, batch: &mut ApplyBatch<'_>, name: &str) {
        if let Some(b) = self.bindings.get(name) {
            PluginTable::of(batch).put_binding(b);
        }
    }

    fn drop_module_if_unused(&self, batch: &mut ApplyBatch<'_>, sha: &str) {
        let used = self.plugins.values().any(|p| p.sha256 == sha)
            || self.bindings.values().any(|b| b.sha256 == sha);
        if !used {
            PluginTable::of(batch).remove_module(sha);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        name: &str,
        sha256: &str,
        size: u64,
        offset: u64,
        data: &[u8],
        installed: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<PluginOutcome, PluginError> {
        let bad = |reason: String| PluginError::BadChunk {
            name: name.to_string(),
            reason,
        };
        let sha256 = check_upload(name, sha256, size).map_err(bad)?;
        // Installing the bytes a name already has changes nothing.
        if let Some(p) = self.plugins.get(name)
            && p.sha256 == sha256
        {
            return Ok(PluginOutcome::Install {
                received: size,
                installed: true,
            });
        }
        let mut upload = match self.uploads.remove(name) {
            Some(u) if u.sha256 == sha256 && u.size == size => u,
            // A different module restarts the upload, from offset 0 only.
            _ => Upload {
                sha256: sha256.clone(),
                size,
                data: Vec::new(),
            },
        };
        let have = upload.data.len() as u64;
        if offset != have {
            let expected = have;
            self.uploads.insert(name.to_string(), upload);
            return Err(bad(format!(
                "chunk at offset {offset}, expected offset {expected}"
            )));
        }
        if have + data.len() as u64 > size {
            return Err(bad(format!("chunks run past the declared size {size}")));
        }
        upload.data.extend_from_slice(data);
        let received = upload.data.len() as u64;
        if received < size {
            PluginTable::of(batch).put_upload(name, &upload);
            self.uploads.insert(name.to_string(), upload);
            return Ok(PluginOutcome::Install {
                received,
                installed: false,
            });
        }
        PluginTable::of(batch).remove_upload(name);
        self.complete_upload(batch, name, upload, installed)?;
        Ok(PluginOutcome::Install {
            received,
            installed: true,
        })
    }

    /// The last chunk arrived: checks the digest and the module, and installs it under
    /// `name` (dropping the module it replaces if nothing else uses it).
    fn complete_upload(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        name: &str,
        upload: Upload,
        installed: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<(), PluginError> {
        let digest = hex(&Sha256::digest(&upload.data));
        if digest != upload.sha256 {
            return Err(PluginError::BadChunk {
                name: name.to_string(),
                reason: format!(
                    "the bytes have sha256 {digest}, not the declared {}",
                    upload.sha256
                ),
            });
        }
        let validated = validate(&upload.data).map_err(|reason| PluginError::Rejected {
            name: name.to_string(),
            reason,
        })?;
        let record = PluginRecord {
            name: name.to_string(),
            sha256: upload.sha256.clone(),
            size: upload.size,
            exports: validated.exports,
        };
        let previous = self.plugins.insert(name.to_string(), record.clone());
        let mut table = PluginTable::of(batch);
        table.put_plugin(&record);
        table.put_module(&upload.sha256, upload.data.clone());
        if let Some(old) = previous {
            self.drop_module_if_unused(batch, &old.sha256);
        }
        installed(&upload.sha256, &upload.data);
        Ok(())
    }

    fn bind(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        spec: &Binding,
        options: ReactorOptions,
    ) -> Result<PluginOutcome, PluginError> {
        let bad = |reason: String| PluginError::BadBinding {
            name: spec.name.clone(),
            reason,
        };
        if spec.name.is_empty() {
            return Err(bad("the binding needs a name".into()));
        }
        if spec.name.len() > MAX_NAME_BYTES {
            return Err(bad(format!("the name is over {MAX_NAME_BYTES} bytes")));
        }
        let Some(plugin) = self.plugins.get(&spec.plugin) else {
            return Err(PluginError::PluginNotFound(spec.plugin.clone()));
        };
        if !plugin
            .exports
            .iter()
            .any(|e| hook_of(e) == Some(spec.kind.hook()))
        {
            return Err(bad(format!(
                "plugin {:?} does not export the {} hook (it exports {:?})",
                spec.plugin,
                spec.kind.hook(),
                plugin.exports
            )));
        }
        if matches!(spec.kind, Kind::Guard | Kind::Policy | Kind::Reactor)
            && spec.key.is_empty()
            && spec.range_end.is_empty()
        {
            return Err(bad(format!(
                "a {} needs a key or key range (--key K, with --prefix or --range-end; \
                 --key '' --prefix binds every key)",
                spec.kind.hook()
            )));
        }
        let fuel = if spec.fuel == 0 {
            DEFAULT_FUEL
        } else {
            spec.fuel
        };
        if fuel > MAX_FUEL {
            return Err(bad(format!("fuel {fuel} is above the limit {MAX_FUEL}")));
        }
        let memory_bytes = if spec.memory_bytes == 0 {
            DEFAULT_MEMORY_BYTES
        } else {
            spec.memory_bytes
        };
        if memory_bytes > MAX_MEMORY_BYTES {
            return Err(bad(format!(
                "memory {memory_bytes} bytes is above the limit {MAX_MEMORY_BYTES}"
            )));
        }
        let binding = Binding {
            fuel,
            memory_bytes,
            sha256: plugin.sha256.clone(),
            stats: BindingStats::default(),
            ..spec.clone()
        };
        if options.max_depth > MAX_REACTOR_DEPTH {
            return Err(bad(format!(
                "reactor depth {} is above the limit {MAX_REACTOR_DEPTH}",
                options.max_depth
            )));
        }
        let replaced = self.bindings.insert(spec.name.clone(), binding.clone());
        PluginTable::of(batch).put_binding(&binding);
        // A (re)bound reactor starts from the revision it is bound at, unpaused; another kind
        // bound under a reactor's name leaves no reactor state behind.
        self.reactors.remove(&spec.name);
        if binding.kind == Kind::Reactor {
            let state = ReactorState {
                options,
                cursor: batch.revisions().current,
                ..ReactorState::default()
            };
            PluginTable::of(batch).put_reactor(&spec.name, &state);
            self.reactors.insert(spec.name.clone(), state);
        } else {
            PluginTable::of(batch).remove_reactor(&spec.name);
        }
        if let Some(old) = replaced
            && old.sha256 != binding.sha256
        {
            self.drop_module_if_unused(batch, &old.sha256);
        }
        Ok(PluginOutcome::Done)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
