//! Watch filters: plugins that pass, drop or rewrite the events of one watcher, on the member
//! serving it.
//!
//! They run outside the replicated state machine, so they use an engine of their own, apart
//! from the deterministic one (`engine.rs`):
//!
//! - epoch interruption on, with a ticker thread: every call has a wall-clock deadline
//!   ([`CALL_DEADLINE`]) besides its binding's fuel, so a filter that loops costs its watcher
//!   a bounded pause, never the member a thread;
//! - one instance per watcher that lives as long as the watcher: a filter may keep state
//!   between events (the instance's memory is bounded by the binding's memory limit);
//! - on-demand allocation rather than a pool: instances live long and may be many.
//!
//! A failing call (trap, fuel, deadline, bad answer) fails that watcher's filter only: the
//! caller cancels the watcher with the reason, and every other watcher goes on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Store, StoreLimits, StoreLimitsBuilder};

use super::engine::{HostFault, truncated};
use super::registry::{Binding, Kind, Published, Registry};
use crate::metrics::lock;
use crate::mvcc::{Event, EventKind, KeyRange};
use crate::storage::Storage;

mod filter_world {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "watch-filter-plugin",
        imports: { default: trappable },
    });
}

use filter_world::WatchFilterPlugin;
use filter_world::exports::cairn::plugin::watch_filter as wit;

/// How often the ticker advances the engine's epoch. Every member runs the ticker, filters or
/// not: at 1 ms it woke a thousand times a second and took about 2% of a core on an idle
/// member; at 10 ms a deadline is a tick less precise (a call runs 40 to 50 ms before it
/// traps), which a bound against runaway filters does not need.
const TICK: Duration = Duration::from_millis(10);
/// A call's wall-clock deadline: it traps at most this long after it starts.
pub const CALL_DEADLINE: Duration = Duration::from_millis(50);
/// Ticks a call may run: [`CALL_DEADLINE`] in ticks.
const DEADLINE_TICKS: u64 = ticks(CALL_DEADLINE);
/// Most filter instances open at once on a member (one per filtered watcher): each may hold
/// up to its binding's memory, so their number is bounded, not their watchers' whim.
pub const MAX_OPEN_FILTERS: usize = 4096;
/// Fuel for instantiating and opening a filter.
const OPEN_FUEL: u64 = 10_000_000;
/// Ticks instantiating and opening a filter may take (1 s): longer than a call, since a
/// watcher is opened once and many are often opened at once (their calls then share the cores).
const OPEN_DEADLINE_TICKS: u64 = ticks(Duration::from_secs(1));

/// `deadline` in whole [`TICK`]s.
const fn ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() / TICK.as_millis()) as u64
}
/// Largest value a filter may rewrite an event to: etcd's default request limit, so a
/// rewritten event is never larger than one a client could have written.
pub const MAX_REWRITE_BYTES: usize = 1536 << 10;

/// What one filter instance's store holds.
struct FilterState {
    limits: StoreLimits,
    binding: String,
    logs: super::logs::PluginLogs,
}

impl filter_world::cairn::plugin::types::Host for FilterState {}

impl filter_world::cairn::plugin::log::Host for FilterState {
    fn write(
        &mut self,
        level: filter_world::cairn::plugin::log::Level,
        message: String,
    ) -> wasmtime::Result<()> {
        use filter_world::cairn::plugin::log::Level;
        let level = match level {
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        };
        let message = truncated(message);
        self.logs
            .write("watch filter", &self.binding, level, message);
        Ok(())
    }
}

/// The watch filters of one member: its registry's watch-filter bindings and the engine
/// that runs them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Filters {
    registry: Arc<Mutex<Registry>>,
    published: Arc<Published>,
    engine: FilterEngine,
}

impl Filters {
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        published: Arc<Published>,
        engine: FilterEngine,
    ) -> Filters {
        Filters {
            registry,
            published,
            engine,
        }
    }

    /// The bindings a watcher of `[key, range_end)` runs, in name order, each with whether
    /// the watcher named it: every watch-filter binding whose range overlaps the watcher's,
    /// and the binding `named`, if any. `Err` names what is wrong with `named`.
    pub fn for_watcher(
        &self,
        key: &[u8],
        range_end: &[u8],
        named: Option<&str>,
    ) -> Result<Vec<(Binding, bool)>, String> {
        // No watch filter bound (the usual case): the registry, which apply holds for a whole
        // batch, is not even locked.
        if named.is_none()
            && self
                .published
                .watch_filters
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
        {
            return Ok(Vec::new());
        }
        let registry = lock(&self.registry);
        let mut out: Vec<(Binding, bool)> = registry
            .bindings
            .values()
            .filter(|b| {
                b.kind == Kind::WatchFilter && !(b.key.is_empty() && b.range_end.is_empty())
            })
            .filter(|b| KeyRange::pairs_overlap((&b.key, &b.range_end), (key, range_end)))
            .map(|b| (b.clone(), false))
            .collect();
        if let Some(name) = named {
            match registry.bindings.get(name) {
                Some(b)
                    if b.kind == Kind::WatchFilter
                        && (!b.key.is_empty() || !b.range_end.is_empty()) =>
                {
                    return Err(format!(
                        "cairn: watch filter {name:?} is bound to a key range and applies there by \
                         itself; only filters bound without a range can be named"
                    ));
                }
                Some(b) if b.kind == Kind::WatchFilter => out.push((b.clone(), true)),
                Some(b) => {
                    return Err(format!(
                        "cairn: binding {name:?} is a {} binding, not a watch filter",
                        b.kind.hook()
                    ));
                }
                None => return Err(format!("cairn: no watch filter binding named {name:?}")),
            }
        }
        Ok(out)
    }

    /// The registry's change counter: watch streams check their watchers' filters again
    /// when it moves.
    pub fn generation(&self) -> u64 {
        self.published.generation()
    }

    /// Opens `binding` for `watcher` (see [`FilterEngine::open`]), off the async runtime.
    pub async fn open(
        &self,
        binding: Binding,
        named: bool,
        watcher: Watcher,
    ) -> Result<Result<OpenFilter, String>, HostFault> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.open(&binding, named, &watcher))
            .await
            .map_err(|e| HostFault(format!("opening a watch filter: {e}")))?
    }
}

/// Who a filter is opened for.
#[derive(Clone, Debug, Default)]
pub struct Watcher {
    pub user: String,
    pub roles: Vec<String>,
    pub argument: Vec<u8>,
}

/// The engine watch filters run on; one per member, cheap to clone.
#[derive(Clone)]
pub struct FilterEngine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<FilterState>>,
    compiled: Arc<Mutex<BTreeMap<String, Arc<filter_world::WatchFilterPluginPre<FilterState>>>>>,
    storage: Storage,
    /// Filter instances open now (see [`MAX_OPEN_FILTERS`]).
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// Held while compiling a module.
    compiling: Arc<Mutex<()>>,
    /// Where the filters' log lines go.
    logs: super::logs::PluginLogs,
}

impl std::fmt::Debug for FilterEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterEngine").finish_non_exhaustive()
    }
}

impl FilterEngine {
    /// Builds the engine and starts its epoch ticker (a thread that ends with the engine).
    pub fn new(storage: Storage, logs: super::logs::PluginLogs) -> Result<FilterEngine, HostFault> {
        let fault = |e: wasmtime::Error| HostFault(format!("{e:#}"));
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .wasm_backtrace_max_frames(None)
            .max_wasm_stack(512 << 10);
        let engine = wasmtime::Engine::new(&config).map_err(fault)?;
        let mut linker = Linker::new(&engine);
        WatchFilterPlugin::add_to_linker::<FilterState, HasSelf<FilterState>>(&mut linker, |s| s)
            .map_err(fault)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("filter-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| HostFault(format!("starting the watch filter ticker: {e}")))?;
        Ok(FilterEngine {
            engine,
            linker: Arc::new(linker),
            compiled: Arc::default(),
            storage,
            open: Arc::default(),
            compiling: Arc::default(),
            logs,
        })
    }

    fn compiled(
        &self,
        sha256: &str,
    ) -> Result<Result<Arc<filter_world::WatchFilterPluginPre<FilterState>>, String>, HostFault>
    {
        if let Some(pre) = lock(&self.compiled).get(sha256) {
            return Ok(Ok(pre.clone()));
        }
        // One compile at a time: the watchers opened together after a bind (a client
        // reconnecting a thousand watchers) wait for the first one's compile instead of each
        // compiling the same module.
        let _compiling = lock(&self.compiling);
        if let Some(pre) = lock(&self.compiled).get(sha256) {
            return Ok(Ok(pre.clone()));
        }
        let bytes = Registry::module(&self.storage, sha256)
            .map_err(|e| HostFault(format!("reading module {sha256}: {e}")))?
            .ok_or_else(|| HostFault(format!("module {sha256} is bound but not stored")))?;
        let component = Component::new(&self.engine, &bytes)
            .map_err(|e| HostFault(format!("compiling module {sha256}: {e:#}")))?;
        let pre = match self
            .linker
            .instantiate_pre(&component)
            .and_then(filter_world::WatchFilterPluginPre::new)
        {
            Ok(pre) => Arc::new(pre),
            Err(e) => {
                return Ok(Err(format!(
                    "the module does not fit the watch-filter world: {e:#}"
                )));
            }
        };
        lock(&self.compiled).insert(sha256.to_string(), pre.clone());
        Ok(Ok(pre))
    }

    /// Instantiates `binding`'s filter for `watcher` and opens it. Blocking (it may compile
    /// the module): call it off the async runtime. `Ok(Err(reason))` when the filter refused
    /// or failed to open.
    pub fn open(
        &self,
        binding: &Binding,
        named: bool,
        watcher: &Watcher,
    ) -> Result<Result<OpenFilter, String>, HostFault> {
        use std::sync::atomic::Ordering;
        let slot = OpenSlot(self.open.clone());
        if slot.0.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN_FILTERS {
            return Ok(Err(format!(
                "this member has {MAX_OPEN_FILTERS} filtered watchers open, its limit"
            )));
        }
        let pre = match self.compiled(&binding.sha256)? {
            Ok(pre) => pre,
            Err(reason) => return Ok(Err(reason)),
        };
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(binding.memory_bytes).unwrap_or(usize::MAX))
            .instances(4)
            .trap_on_grow_failure(false)
            .build();
        let mut store = Store::new(
            &self.engine,
            FilterState {
                limits,
                binding: binding.name.clone(),
                logs: self.logs.clone(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let fault = |e: wasmtime::Error| HostFault(format!("{e:#}"));
        store.set_fuel(OPEN_FUEL).map_err(fault)?;
        store.set_epoch_deadline(OPEN_DEADLINE_TICKS);
        let instance = match pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => return Ok(Err(format!("starting: {}", trap_words(&e)))),
        };
        let opened = instance.cairn_plugin_watch_filter().call_open(
            &mut store,
            &binding.config,
            &wit::Watcher {
                user: watcher.user.clone(),
                roles: watcher.roles.clone(),
                argument: watcher.argument.clone(),
            },
        );
        match opened {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => return Ok(Err(truncated(refused))),
            Err(e) => return Ok(Err(trap_words(&e))),
        }
        Ok(Ok(OpenFilter {
            _slot: slot,
            binding: binding.name.clone(),
            range: (!named).then(|| KeyRange::new(&binding.key, &binding.range_end)),
            fuel: binding.fuel,
            store,
            instance,
        }))
    }
}

/// Counts one open filter instance while it lives.
struct OpenSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A filter opened for one watcher.
pub struct OpenFilter {
    _slot: OpenSlot,
    pub binding: String,
    /// The keys whose events it sees; `None` (a filter the watcher named): every event.
    range: Option<KeyRange>,
    fuel: u64,
    store: Store<FilterState>,
    instance: WatchFilterPlugin,
}

impl std::fmt::Debug for OpenFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFilter")
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

impl OpenFilter {
    /// Runs the filter on `event` if it sees its key: the event as the watcher gets it (or
    /// `None`, dropped), or why the filter failed.
    pub fn apply(&mut self, mut event: Event) -> Result<Option<Event>, String> {
        if self
            .range
            .as_ref()
            .is_some_and(|range| !range.contains(&event.kv.key))
        {
            return Ok(Some(event));
        }
        let wit_event = to_wit(&event);
        self.store
            .set_fuel(self.fuel)
            .map_err(|e| format!("{e:#}"))?;
        self.store.set_epoch_deadline(DEADLINE_TICKS);
        let verdict = self
            .instance
            .cairn_plugin_watch_filter()
            .call_filter(&mut self.store, &wit_event)
            .map_err(|e| trap_words(&e))?;
        Ok(match verdict {
            wit::Verdict::Pass => Some(event),
            wit::Verdict::Drop => None,
            wit::Verdict::Rewrite(values) => {
                let longest = values.value.len().max(values.prev_value.len());
                if longest > MAX_REWRITE_BYTES {
                    return Err(format!(
                        "rewrote a value to {longest} bytes, over the {MAX_REWRITE_BYTES}-byte limit"
                    ));
                }
                event.kv.value = values.value;
                if let Some(prev) = &mut event.prev_kv {
                    prev.value = values.prev_value;
                }
                Some(event)
            }
        })
    }
}

fn to_wit(event: &Event) -> filter_world::cairn::plugin::types::Event {
    use filter_world::cairn::plugin::types as t;
    let kv = |kv: &crate::mvcc::KeyValue| t::KeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    };
    t::Event {
        type_: match event.kind {
            EventKind::Put => t::EventType::Put,
            EventKind::Delete => t::EventType::Delete,
        },
        kv: kv(&event.kv),
        prev_kv: event.prev_kv.as_ref().map(kv),
    }
}

/// A trap in words.
/// A trap in words: the deterministic engine's, plus the deadline this engine adds.
fn trap_words(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!("past its {} ms deadline", CALL_DEADLINE.as_millis())
        }
        _ => truncated(super::engine::trap_words(e)),
    }
}
