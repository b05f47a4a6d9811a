//! The deterministic engine: wasmtime configured so that the same component, inputs and
//! store give the same answer and the same fuel on every member.
//!
//! - Fuel on, epochs off: a budget, not a clock, stops a runaway plugin.
//! - NaN canonicalization on; relaxed SIMD and 64-bit memories off (threads are not even
//!   compiled in).
//! - Backtraces off, so a trap's message is the same everywhere.
//! - A fixed memory limit per binding (growth past it fails inside the guest, which then
//!   traps: the same on every member).
//! - One fresh instance per call, from a pre-instantiated component: nothing a call leaves
//!   behind can reach the next one, and a member that restarted or installed a snapshot
//!   behaves like one that did not.
//! - The fuel protocol: a separate budget covers instantiation, the call's budget is set right
//!   before the call, host calls charge a fixed price, and a call that fails is charged its
//!   whole budget (fuel spent before a trap is not reported alike everywhere).
//!
//! Compilation is per member and off the apply path: installing a module starts compiling
//! it in the background; a call that finds it not compiled yet compiles it then (apply waits,
//! which costs time, not agreement). Members never exchange compiled code.
//!
//! Known limit: the point where deep recursion overflows the wasm stack depends on the
//! compiled code, so members must run the same Cairn build on the same architecture (as
//! every member of a cluster does today). A logical stack limit instrumented at install would
//! lift this.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};

use super::MAX_MEMORY_BYTES;
use super::carry::{self, Read, ReadOp, ReadSet};
use crate::metrics::lock;
use crate::mvcc::{self, KeyValue, ReadView, Revision};
use crate::storage::Storage;

mod guard_world {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "guard-plugin",
        imports: { default: trappable },
    });
}

mod compare_world {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "compare-plugin",
        imports: { default: trappable },
    });
}

mod policy_world {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "policy-plugin",
        imports: { default: trappable },
    });
}

mod reactor_world {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "reactor-plugin",
        imports: { default: trappable },
    });
}

/// Fuel for instantiating a component (its start-up code), apart from the call's budget.
const INSTANTIATE_FUEL: u64 = 10_000_000;
/// Host call prices, in fuel.
const HOST_CALL_FUEL: u64 = 1_000;
const PER_KEY_FUEL: u64 = 100;
/// Most keys one `range` returns.
const RANGE_CAP: u32 = 1_000;
/// Longest denial message or error a plugin may return, and longest log line.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest bytes value a compare may return.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Wasm stack per call.
const MAX_WASM_STACK: usize = 512 * 1024;
/// Bytes of each pooled linear memory (and table) reset in place between calls.
const KEEP_RESIDENT_BYTES: usize = 256 << 10;
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;

/// Instances the pooling allocator keeps room for (apply runs one call at a time; the
/// leader's `plugin::vet::Vetter` shares apply's engine and runs at most half this many).
pub(crate) const POOL_INSTANCES: u32 = 16;

/// The store a hook reads: the state before the write being checked, exactly as the store
/// sees it (committed data plus the writes of the batch so far), so what a plugin reads does
/// not depend on how the log was cut into batches. Cheap to clone.
#[derive(Clone)]
pub struct View {
    pub storage: Storage,
    pub snap: fjall::Snapshot,
    pub rev: Revision,
    pub compact_rev: Revision,
    /// The batch's uncommitted writes, shared with the batch (not copied).
    overlay: Option<mvcc::SharedOverlay>,
}

impl View {
    pub fn of(view: &ReadView<'_>) -> View {
        View {
            storage: view.storage.clone(),
            snap: view.snap.clone(),
            rev: view.rev,
            compact_rev: view.compact_rev,
            overlay: view.overlay.filter(|o| !o.is_empty()).cloned(),
        }
    }

    pub(crate) fn read(&self) -> ReadView<'_> {
        ReadView {
            storage: &self.storage,
            snap: self.snap.clone(),
            rev: self.rev,
            compact_rev: self.compact_rev,
            overlay: self.overlay.as_ref(),
        }
    }
}

/// A write as a guard sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
        ignore_value: bool,
        ignore_lease: bool,
    },
    DeleteRange {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// What a call decided, identically on every member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The plugin answered.
    Answered(T),
    /// It trapped, ran out of fuel, hit a limit or answered out of bounds.
    Failed(String),
}

/// A guard's answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    Allow,
    Deny(String),
}

/// A compare's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Computed {
    Int(i64),
    Bytes(Vec<u8>),
    /// The plugin returned an error: the compare is false.
    Error(String),
}

/// One call's result and the fuel charged for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call<T> {
    pub outcome: Outcome<T>,
    pub fuel: u64,
    /// Whether the call read the store or the clock. One that did not answered from its
    /// arguments and config alone, so the same arguments give the same answer while the
    /// binding stands (the read side of policy hooks memoizes only such answers).
    pub consulted: bool,
    /// What it read, when it ran with [`Target::recording`] (see `plugin/carry.rs`).
    pub reads: Option<ReadSet>,
}

/// Which binding a call runs, and under what limits and time.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub binding: &'a str,
    pub sha256: &'a str,
    pub config: &'a [u8],
    pub fuel: u64,
    pub memory_bytes: u64,
    /// What the clock import answers: in apply, the time stamped on the entry.
    pub now_ms: i64,
    /// Whether to record what the call reads (for a proposer's carried verdicts).
    pub record: bool,
}

impl<'a> Target<'a> {
    pub fn of(b: &'a super::Binding, now_ms: i64) -> Target<'a> {
        Target {
            binding: &b.name,
            sha256: &b.sha256,
            config: &b.config,
            fuel: b.fuel,
            memory_bytes: b.memory_bytes,
            now_ms,
            record: false,
        }
    }

    /// The same target, recording what the call reads.
    pub fn recording(self) -> Target<'a> {
        Target {
            record: true,
            ..self
        }
    }
}

/// What a policy hook is asked (see `plugin/policy.rs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyQuestion {
    pub user: String,
    pub roles: Vec<String>,
    pub operation: PolicyOperation,
    pub accesses: Vec<PolicyAccess>,
}

/// The request a policy hook is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyOperation {
    Range,
    Put,
    DeleteRange,
    Txn,
    Watch,
    LeaseRevoke,
}

/// One access a policy hook is shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyAccess {
    pub write: bool,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub lease: i64,
    pub allowed_by_roles: bool,
}

/// A policy hook's answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PolicyAnswer {
    Allow,
    Deny(String),
    Defer,
}

/// A failure of this member, not a decision: the caller must stop applying.
#[derive(Clone, Debug, thiserror::Error)]
#[error("plugin engine fault: {0}")]
pub struct HostFault(pub String);

/// What one call's store holds.
struct HostState {
    view: View,
    /// What the clock import answers: the entry's stamped time in apply.
    now_ms: i64,
    /// Whether the call read the store or the clock: its answer then depends on more than
    /// its arguments (see [`Call::consulted`]).
    consulted: bool,
    /// What the call read, when recording.
    reads: Option<ReadSet>,
    limits: StoreLimits,
    /// Fuel charged by host calls, and the call's budget they count against.
    host_fuel: u64,
    budget: u64,
    binding: String,
    /// Set when a host call failed for a reason of this member (a storage read error).
    fault: Option<String>,
    logs: super::logs::PluginLogs,
}

impl HostState {
    fn charge(&mut self, fuel: u64) -> wasmtime::Result<()> {
        self.host_fuel = self.host_fuel.saturating_add(fuel);
        if self.host_fuel > self.budget {
            return Err(wasmtime::Error::msg("all fuel consumed by host calls"));
        }
        Ok(())
    }

    fn storage_fault(&mut self, e: mvcc::Error) -> wasmtime::Error {
        let message = format!("reading the store: {e}");
        self.fault = Some(message.clone());
        wasmtime::Error::msg(message)
    }

    /// Records a read and its answer, when recording.
    fn recorded(&mut self, op: impl FnOnce() -> ReadOp, answer: impl FnOnce() -> [u8; 32]) {
        if let Some(reads) = &mut self.reads {
            reads.reads.push(Read {
                op: op(),
                answer: answer(),
            });
        }
    }

    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<KeyValue>> {
        self.consulted = true;
        self.charge(HOST_CALL_FUEL + key.len() as u64)?;
        let kv = self
            .view
            .read()
            .get(&key)
            .map_err(|e| self.storage_fault(e))?;
        self.recorded(
            || ReadOp::Get(key),
            || carry::answer_of_get(kv.as_ref().map(|kv| kv.mod_revision)),
        );
        if let Some(kv) = &kv {
            self.charge(kv.value.len() as u64)?;
        }
        Ok(kv)
    }

    fn range(
        &mut self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        limit: u32,
    ) -> wasmtime::Result<Vec<KeyValue>> {
        self.consulted = true;
        self.charge(HOST_CALL_FUEL)?;
        let limit = if limit == 0 || limit > RANGE_CAP {
            RANGE_CAP
        } else {
            limit
        };
        let op = ReadOp::Range {
            key,
            range_end,
            limit,
        };
        let req = op.request().expect("a range has a request");
        let resp = self
            .view
            .read()
            .range(&req)
            .map_err(|e| self.storage_fault(e))?;
        self.recorded(|| op, || carry::answer_of_range(&resp.kvs));
        let bytes: u64 = resp.kvs.iter().map(|kv| kv.size() as u64).sum();
        self.charge(PER_KEY_FUEL * resp.kvs.len() as u64 + bytes)?;
        Ok(resp.kvs)
    }

    fn count(&mut self, key: Vec<u8>, range_end: Vec<u8>) -> wasmtime::Result<u64> {
        self.consulted = true;
        self.charge(HOST_CALL_FUEL)?;
        let op = ReadOp::Count { key, range_end };
        let req = op.request().expect("a count has a request");
        let resp = self
            .view
            .read()
            .range(&req)
            .map_err(|e| self.storage_fault(e))?;
        let count = u64::try_from(resp.count).unwrap_or(0);
        self.recorded(|| op, || carry::answer_of_count(count));
        self.charge(count / 10)?;
        Ok(count)
    }

    fn log(&mut self, level: &'static str, message: String) -> wasmtime::Result<()> {
        self.charge(HOST_CALL_FUEL + message.len() as u64)?;
        let message = truncated(message);
        self.logs.write("plugin", &self.binding, level, message);
        Ok(())
    }
}

/// The host side of the contract, once per world (each world's bindings have their own
/// copies of the interface types).
macro_rules! host_imports {
    ($world:ident) => {
        impl $world::cairn::plugin::types::Host for HostState {}

        impl From<KeyValue> for $world::cairn::plugin::types::KeyValue {
            fn from(kv: KeyValue) -> Self {
                $world::cairn::plugin::types::KeyValue {
                    key: kv.key,
                    value: kv.value,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                }
            }
        }

        impl $world::cairn::plugin::store::Host for HostState {
            fn revision(&mut self) -> wasmtime::Result<i64> {
                self.consulted = true;
                if let Some(reads) = &mut self.reads {
                    reads.revision = true;
                }
                self.charge(HOST_CALL_FUEL)?;
                Ok(self.view.rev)
            }

            fn get(
                &mut self,
                key: Vec<u8>,
            ) -> wasmtime::Result<Option<$world::cairn::plugin::types::KeyValue>> {
                Ok(HostState::get(self, key)?.map(Into::into))
            }

            fn range(
                &mut self,
                key: Vec<u8>,
                range_end: Vec<u8>,
                limit: u32,
            ) -> wasmtime::Result<Vec<$world::cairn::plugin::types::KeyValue>> {
                Ok(HostState::range(self, key, range_end, limit)?
                    .into_iter()
                    .map(Into::into)
                    .collect())
            }

            fn count(&mut self, key: Vec<u8>, range_end: Vec<u8>) -> wasmtime::Result<u64> {
                HostState::count(self, key, range_end)
            }
        }

        impl $world::cairn::plugin::clock::Host for HostState {
            fn now_ms(&mut self) -> wasmtime::Result<i64> {
                self.consulted = true;
                self.charge(HOST_CALL_FUEL)?;
                Ok(self.now_ms)
            }
        }

        impl $world::cairn::plugin::log::Host for HostState {
            fn write(
                &mut self,
                level: $world::cairn::plugin::log::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                use $world::cairn::plugin::log::Level;
                let level = match level {
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                };
                self.log(level, message)
            }
        }
    };
}

host_imports!(guard_world);
host_imports!(compare_world);
host_imports!(policy_world);
host_imports!(reactor_world);

/// A module compiled on this member, ready to instantiate as each hook it exports.
struct Compiled {
    guard: Option<guard_world::GuardPluginPre<HostState>>,
    compare: Option<compare_world::ComparePluginPre<HostState>>,
    policy: Option<policy_world::PolicyPluginPre<HostState>>,
    reactor: Option<reactor_world::ReactorPluginPre<HostState>>,
}

/// The engine of one member. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    engine: wasmtime::Engine,
    guard_linker: Arc<Linker<HostState>>,
    compare_linker: Arc<Linker<HostState>>,
    policy_linker: Arc<Linker<HostState>>,
    reactor_linker: Arc<Linker<HostState>>,
    cache: Arc<Mutex<BTreeMap<String, Arc<Compiled>>>>,
    /// Modules installed by apply and not compiled yet, by sha256. A call can come in the
    /// same apply batch as the install (always so when a restarted member replays its log),
    /// before the module is in committed storage: it compiles from these bytes.
    pending: Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>,
    /// Whether the pooling allocator could reserve its memory on this machine.
    pub pooling: bool,
    /// Where the plugins' log lines go.
    logs: super::logs::PluginLogs,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(false)
        .cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(false)
        .wasm_memory64(false)
        .wasm_backtrace_max_frames(None)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_init_cow(true)
        // Bounds checks in the compiled code instead of guard pages. A plugin's memory grows
        // on nearly every call (its allocator asks for pages), and with guard pages every
        // instantiation then has to mprotect the slot back to its initial size: a syscall
        // plus a TLB shootdown on every core, which cost more than the call itself (the
        // `guard` cargo bench: 28 µs per call before, 7 µs after, with the two settings
        // below). Traps stay the same traps, on every member.
        .signals_based_traps(false)
        .memory_guard_size(0);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(MAX_MEMORY_BYTES as usize)
            // Reset a slot's first pages with memset instead of madvise, so the next
            // instance does not fault them back in; with PAGEMAP_SCAN (Linux 6.7+) only the
            // pages the call dirtied are reset.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config
            .memory_reservation(MAX_MEMORY_BYTES)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Engine {
    /// Builds the engine, with the pooling allocator when this machine can reserve its
    /// memory, else with on-demand allocation (same results, slower instantiation).
    pub fn new(logs: super::logs::PluginLogs) -> Result<Engine, HostFault> {
        let fault = |e: wasmtime::Error| HostFault(format!("{e:#}"));
        let (engine, pooling) = match wasmtime::Engine::new(&config(true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; instantiating on demand");
                (wasmtime::Engine::new(&config(false)).map_err(fault)?, false)
            }
        };
        let mut guard_linker = Linker::new(&engine);
        guard_world::GuardPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut guard_linker,
            |s| s,
        )
        .map_err(fault)?;
        let mut compare_linker = Linker::new(&engine);
        compare_world::ComparePlugin::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut compare_linker,
            |s| s,
        )
        .map_err(fault)?;
        let mut policy_linker = Linker::new(&engine);
        policy_world::PolicyPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut policy_linker,
            |s| s,
        )
        .map_err(fault)?;
        let mut reactor_linker = Linker::new(&engine);
        reactor_world::ReactorPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut reactor_linker,
            |s| s,
        )
        .map_err(fault)?;
        Ok(Engine {
            engine,
            guard_linker: Arc::new(guard_linker),
            compare_linker: Arc::new(compare_linker),
            policy_linker: Arc::new(policy_linker),
            reactor_linker: Arc::new(reactor_linker),
            cache: Arc::default(),
            pending: Arc::default(),
            pooling,
            logs,
        })
    }

    /// Compiles a newly installed module in the background, so the first call finds it ready.
    pub fn prepare(&self, sha256: &str, bytes: &[u8]) {
        if lock(&self.cache).contains_key(sha256) {
            return;
        }
        let bytes = Arc::new(bytes.to_vec());
        lock(&self.pending).insert(sha256.to_string(), bytes.clone());
        let (engine, sha256) = (self.clone(), sha256.to_string());
        let spawned = std::thread::Builder::new()
            .name("plugin-compile".into())
            .spawn(move || {
                if let Err(e) = engine.compile(&sha256, &bytes) {
                    tracing::warn!(%sha256, error = %e, "compiling a plugin in the background");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to compile a plugin; it compiles on first use");
        }
    }

    /// Whether the module is compiled on this engine (a call then never compiles).
    pub fn ready(&self, sha256: &str) -> bool {
        lock(&self.cache).contains_key(sha256)
    }

    fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<Arc<Compiled>, HostFault> {
        let fault = |e: wasmtime::Error| HostFault(format!("compiling module {sha256}: {e:#}"));
        let component = Component::new(&self.engine, bytes).map_err(fault)?;
        let guard = self
            .guard_linker
            .instantiate_pre(&component)
            .ok()
            .and_then(|pre| guard_world::GuardPluginPre::new(pre).ok());
        let compare = self
            .compare_linker
            .instantiate_pre(&component)
            .ok()
            .and_then(|pre| compare_world::ComparePluginPre::new(pre).ok());
        let policy = self
            .policy_linker
            .instantiate_pre(&component)
            .ok()
            .and_then(|pre| policy_world::PolicyPluginPre::new(pre).ok());
        let reactor = self
            .reactor_linker
            .instantiate_pre(&component)
            .ok()
            .and_then(|pre| reactor_world::ReactorPluginPre::new(pre).ok());
        let compiled = Arc::new(Compiled {
            guard,
            compare,
            policy,
            reactor,
        });
        lock(&self.cache).insert(sha256.to_string(), compiled.clone());
        lock(&self.pending).remove(sha256);
        Ok(compiled)
    }

    fn compiled(&self, sha256: &str, storage: &Storage) -> Result<Arc<Compiled>, HostFault> {
        if let Some(c) = lock(&self.cache).get(sha256) {
            return Ok(c.clone());
        }
        // Installed in this batch, or its background compile is still running: compile here
        // (the same module compiles to the same code; the later insert is harmless).
        let pending = lock(&self.pending).get(sha256).cloned();
        if let Some(bytes) = pending {
            return self.compile(sha256, &bytes);
        }
        let bytes = super::Registry::module(storage, sha256)
            .map_err(|e| HostFault(format!("reading module {sha256}: {e}")))?
            .ok_or_else(|| HostFault(format!("module {sha256} is bound but not stored")))?;
        self.compile(sha256, &bytes)
    }

    fn store(&self, view: View, target: &Target<'_>) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(target.memory_bytes).unwrap_or(usize::MAX))
            .instances(POOL_INSTANCES as usize)
            .trap_on_grow_failure(false)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                view,
                now_ms: target.now_ms,
                consulted: false,
                reads: target.record.then(ReadSet::default),
                limits,
                host_fuel: 0,
                budget: target.fuel,
                binding: target.binding.to_string(),
                fault: None,
                logs: self.logs.clone(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store
    }

    /// Runs a guard on `ops`.
    pub fn guard(
        &self,
        target: &Target<'_>,
        view: View,
        ops: &[GuardOp],
    ) -> Result<Call<Verdict>, HostFault> {
        use guard_world::cairn::plugin::types::{DeleteRange, Op, Put};
        let budget = target.fuel;
        let compiled = self.compiled(target.sha256, &view.storage)?;
        let Some(pre) = &compiled.guard else {
            return Ok(failed(budget, "the module does not export the guard hook"));
        };
        let ops: Vec<Op> = ops
            .iter()
            .map(|op| match op {
                GuardOp::Put {
                    key,
                    value,
                    lease,
                    ignore_value,
                    ignore_lease,
                } => Op::Put(Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: *lease,
                    ignore_value: *ignore_value,
                    ignore_lease: *ignore_lease,
                }),
                GuardOp::DeleteRange { key, range_end } => Op::DeleteRange(DeleteRange {
                    key: key.clone(),
                    range_end: range_end.clone(),
                }),
            })
            .collect();
        let timer = Timer::start(target.binding);
        let mut store = self.store(view, target);
        let instance = match start(&mut store, budget, |s| pre.instantiate(s))? {
            Ok(instance) => instance,
            Err(failure) => return Ok(failure),
        };
        let result = instance
            .cairn_plugin_guard()
            .call_check(&mut store, target.config, &ops);
        drop(timer);
        finish(&mut store, budget, result, |decision| match decision {
            guard_world::cairn::plugin::types::Decision::Allow => Ok(Verdict::Allow),
            guard_world::cairn::plugin::types::Decision::Deny(reason) => {
                bounded_message("denial message", reason).map(Verdict::Deny)
            }
        })
    }

    /// Runs a compare.
    pub fn compare(
        &self,
        target: &Target<'_>,
        view: View,
        argument: &[u8],
    ) -> Result<Call<Computed>, HostFault> {
        use compare_world::cairn::plugin::types::Value;
        let budget = target.fuel;
        let compiled = self.compiled(target.sha256, &view.storage)?;
        let Some(pre) = &compiled.compare else {
            return Ok(failed(
                budget,
                "the module does not export the compare hook",
            ));
        };
        let timer = Timer::start(target.binding);
        let mut store = self.store(view, target);
        let instance = match start(&mut store, budget, |s| pre.instantiate(s))? {
            Ok(instance) => instance,
            Err(failure) => return Ok(failure),
        };
        let result =
            instance
                .cairn_plugin_compare()
                .call_compute(&mut store, target.config, argument);
        drop(timer);
        finish(&mut store, budget, result, |answer| match answer {
            Ok(Value::Int(i)) => Ok(Computed::Int(i)),
            Ok(Value::Bytes(b)) if b.len() > MAX_VALUE_BYTES => Err(format!(
                "value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
                b.len()
            )),
            Ok(Value::Bytes(b)) => Ok(Computed::Bytes(b)),
            Err(e) => bounded_message("error message", e).map(Computed::Error),
        })
    }

    /// Runs a policy hook on `question`.
    pub fn policy(
        &self,
        target: &Target<'_>,
        view: View,
        question: &PolicyQuestion,
    ) -> Result<Call<PolicyAnswer>, HostFault> {
        use policy_world::exports::cairn::plugin::policy::{Access, Answer, Operation, Request};
        let budget = target.fuel;
        let compiled = self.compiled(target.sha256, &view.storage)?;
        let Some(pre) = &compiled.policy else {
            return Ok(failed(budget, "the module does not export the policy hook"));
        };
        let request = Request {
            user: question.user.clone(),
            roles: question.roles.clone(),
            operation: match question.operation {
                PolicyOperation::Range => Operation::Range,
                PolicyOperation::Put => Operation::Put,
                PolicyOperation::DeleteRange => Operation::DeleteRange,
                PolicyOperation::Txn => Operation::Txn,
                PolicyOperation::Watch => Operation::Watch,
                PolicyOperation::LeaseRevoke => Operation::LeaseRevoke,
            },
            accesses: question
                .accesses
                .iter()
                .map(|a| Access {
                    write: a.write,
                    key: a.key.clone(),
                    range_end: a.range_end.clone(),
                    value: a.value.clone(),
                    lease: a.lease,
                    allowed_by_roles: a.allowed_by_roles,
                })
                .collect(),
        };
        let timer = Timer::start(target.binding);
        let mut store = self.store(view, target);
        let instance = match start(&mut store, budget, |s| pre.instantiate(s))? {
            Ok(instance) => instance,
            Err(failure) => return Ok(failure),
        };
        let result = instance
            .cairn_plugin_policy()
            .call_check(&mut store, target.config, &request);
        drop(timer);
        finish(&mut store, budget, result, |answer| match answer {
            Answer::Allow => Ok(PolicyAnswer::Allow),
            Answer::Defer => Ok(PolicyAnswer::Defer),
            Answer::Deny(reason) => {
                bounded_message("denial message", reason).map(PolicyAnswer::Deny)
            }
        })
    }
}

impl Engine {
    /// Runs a reactor on the events of `revision` (on the leader, outside apply): the writes
    /// it returns, as the txn ops its step carries.
    pub fn react(
        &self,
        target: &Target<'_>,
        view: View,
        revision: i64,
        events: &[mvcc::Event],
    ) -> Result<Call<Vec<mvcc::RequestOp>>, HostFault> {
        use reactor_world::cairn::plugin::types as t;
        let budget = target.fuel;
        let compiled = self.compiled(target.sha256, &view.storage)?;
        let Some(pre) = &compiled.reactor else {
            return Ok(failed(
                budget,
                "the module does not export the reactor hook",
            ));
        };
        let events: Vec<t::Event> = events
            .iter()
            .map(|e| t::Event {
                type_: match e.kind {
                    mvcc::EventKind::Put => t::EventType::Put,
                    mvcc::EventKind::Delete => t::EventType::Delete,
                },
                kv: e.kv.clone().into(),
                prev_kv: e.prev_kv.clone().map(Into::into),
            })
            .collect();
        let timer = Timer::start(target.binding);
        let mut store = self.store(view, target);
        let instance = match start(&mut store, budget, |s| pre.instantiate(s))? {
            Ok(instance) => instance,
            Err(failure) => return Ok(failure),
        };
        let result = instance.cairn_plugin_reactor().call_react(
            &mut store,
            target.config,
            revision,
            &events,
        );
        drop(timer);
        finish(&mut store, budget, result, |ops| {
            if ops.len() > MAX_REACTOR_OPS {
                return Err(format!(
                    "{} writes, over the limit of {MAX_REACTOR_OPS}",
                    ops.len()
                ));
            }
            let ops: Vec<mvcc::RequestOp> = ops
                .into_iter()
                .map(|op| match op {
                    t::Op::Put(p) => mvcc::RequestOp::Put(mvcc::PutRequest {
                        key: p.key,
                        value: p.value,
                        lease: p.lease,
                        prev_kv: false,
                        ignore_value: p.ignore_value,
                        ignore_lease: p.ignore_lease,
                    }),
                    t::Op::DeleteRange(d) => {
                        mvcc::RequestOp::DeleteRange(mvcc::DeleteRangeRequest {
                            key: d.key,
                            range_end: d.range_end,
                            prev_kv: false,
                        })
                    }
                })
                .collect();
            let bytes = reactor_bytes(&ops);
            if bytes > MAX_REACTOR_BYTES {
                return Err(format!(
                    "writes of {bytes} bytes, over the limit of {MAX_REACTOR_BYTES}"
                ));
            }
            Ok(ops)
        })
    }
}

/// Most writes one reactor step may make, and most bytes of keys and values in them.
pub const MAX_REACTOR_OPS: usize = 256;
pub const MAX_REACTOR_BYTES: usize = 1 << 20;

/// The bytes of keys and values in reactor writes, as [`MAX_REACTOR_BYTES`] counts them.
pub fn reactor_bytes(ops: &[mvcc::RequestOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            mvcc::RequestOp::Put(p) => p.key.len() + p.value.len(),
            mvcc::RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
            _ => 0,
        })
        .sum()
}

/// What one reactor write touches: a put's key (`range_end` empty), a delete's range.
/// Reactors write nothing else.
pub fn reactor_written(op: &mvcc::RequestOp) -> Option<(&[u8], &[u8])> {
    match op {
        mvcc::RequestOp::Put(p) => Some((&p.key, &[])),
        mvcc::RequestOp::DeleteRange(d) => Some((&d.key, &d.range_end)),
        _ => None,
    }
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`], at a character boundary (for log lines).
pub(crate) fn truncated(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// A plugin's message, or why it is refused: longer than [`MAX_MESSAGE_BYTES`].
fn bounded_message(what: &str, message: String) -> Result<String, String> {
    if message.len() > MAX_MESSAGE_BYTES {
        Err(format!(
            "{what} of {} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
            message.len()
        ))
    } else {
        Ok(message)
    }
}

/// Times a call for `/metrics` (this member's wall time: observed, never decided on).
struct Timer {
    histogram: prometheus::Histogram,
    started: std::time::Instant,
}

impl Timer {
    fn start(binding: &str) -> Timer {
        Timer {
            histogram: crate::metrics::METRICS.plugin_call(binding),
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

fn failed<T>(budget: u64, reason: &str) -> Call<T> {
    Call {
        outcome: Outcome::Failed(reason.to_string()),
        fuel: budget,
        consulted: false,
        reads: None,
    }
}

/// Instantiates with the instantiation budget, then sets the call's budget. A trap while
/// instantiating is the plugin's failure; any other error is this member's fault.
fn start<I, T>(
    store: &mut Store<HostState>,
    budget: u64,
    instantiate: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<I>,
) -> Result<Result<I, Call<T>>, HostFault> {
    let fault = |e: wasmtime::Error| HostFault(format!("{e:#}"));
    store.set_fuel(INSTANTIATE_FUEL).map_err(fault)?;
    match instantiate(store) {
        Ok(instance) => {
            store.set_fuel(budget).map_err(fault)?;
            Ok(Ok(instance))
        }
        Err(e) if e.downcast_ref::<wasmtime::Trap>().is_some() => Ok(Err(failed(
            budget,
            &format!("trapped while starting: {}", trap_words(&e)),
        ))),
        Err(e) => Err(fault(e)),
    }
}

/// Turns a call's result into a [`Call`]: the fuel used (wasm plus host calls), or the whole
/// budget when it failed.
fn finish<R, T>(
    store: &mut Store<HostState>,
    budget: u64,
    result: wasmtime::Result<R>,
    answer: impl FnOnce(R) -> Result<T, String>,
) -> Result<Call<T>, HostFault> {
    if let Some(fault) = store.data_mut().fault.take() {
        return Err(HostFault(fault));
    }
    let consulted = store.data().consulted;
    let reads = store.data_mut().reads.take();
    let mut call = match result {
        Ok(r) => {
            let left = store.get_fuel().unwrap_or(0);
            let used = budget.saturating_sub(left) + store.data().host_fuel;
            match answer(r) {
                Ok(t) => Call {
                    outcome: Outcome::Answered(t),
                    fuel: used.min(budget),
                    consulted: false,
                    reads: None,
                },
                Err(reason) => failed(budget, &reason),
            }
        }
        Err(e) => failed(budget, &trap_words(&e)),
    };
    call.consulted = consulted;
    if matches!(call.outcome, Outcome::Answered(_)) {
        call.reads = reads;
    }
    Ok(call)
}

/// A trap in words that are the same on every member.
pub(crate) fn trap_words(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => "out of fuel".to_string(),
        Some(wasmtime::Trap::StackOverflow) => "stack overflow".to_string(),
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            "trap: unreachable (a panic, or an allocation over the memory limit)".to_string()
        }
        Some(trap) => format!("trap: {trap}"),
        None => format!("{e}"),
    }
}
