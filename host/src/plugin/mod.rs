//! WebAssembly plugins: the replicated registry, install-time validation, and the
//! deterministic engine that runs guards, computed compares and policy hooks in apply.
//!
//! - `registry.rs`: what is installed and bound. Replicated state: changed only by
//!   [`PluginCommand`]s in apply, stored in the `plugins` keyspace (so snapshots carry it),
//!   mirrored in memory for the apply path.
//! - `validate.rs`: the checks every member runs on the same bytes in apply (component of a
//!   known contract version, imports only from the contract, size and memory caps), so every
//!   member accepts or rejects the same module.
//! - `engine.rs`: wasmtime with everything nondeterministic turned off; compiles modules
//!   off the apply path, caches them per member, and runs one fresh instance per call under a
//!   fuel budget and a memory limit.
//! - `hooks.rs`: the store's `WriteHooks` on top of the registry and the engine.
//! - `carry.rs` and `vet.rs`: guards and write-side policy hooks evaluated once, by the
//!   proposer; the entry carries their verdicts and what they read, and apply takes a carried
//!   verdict only while everything it depended on still holds.
//! - `filter.rs`: watch filters, on an engine of their own with wall-clock deadlines, one
//!   instance per watcher, on the member serving it (outside the state machine).
//! - `reactor.rs`: reactors, run by the leader over committed events; their writes and
//!   cursor move in one entry, so each source revision is reacted to exactly once.
//! - `policy.rs`: RBAC policy hooks: how their answers combine with the user's roles, in
//!   apply for writes and on the serving member for reads and watches.
//!
//! Failure semantics: a trap, fuel exhaustion or a limit hit is a deterministic outcome,
//! identical on every member, handled by the binding's failure policy. A fault of the host
//! itself (the engine cannot compile a module every member validated) is not a decision: the
//! member stops applying rather than decide differently from the others.

pub mod carry;
pub mod engine;
pub mod filter;
pub mod hooks;
pub mod logs;
pub mod policy;
pub mod reactor;
pub mod registry;
pub mod validate;
pub mod vet;

pub use engine::Engine;
pub use registry::{
    Binding, BindingStats, FailurePolicy, Kind, PluginCommand, PluginError, PluginOutcome,
    PluginRecord, Registry,
};

/// The contract version this build speaks, as component interface names carry it.
pub const CONTRACT_VERSION: &str = "0.1.0";
/// Largest module accepted (installs travel in chunks, so this is above a request's limit).
pub const MAX_MODULE_BYTES: usize = 8 << 20;
/// Default and largest fuel per call.
pub const DEFAULT_FUEL: u64 = 10_000_000;
pub const MAX_FUEL: u64 = 1_000_000_000;
/// Default and largest linear memory per instance.
pub const DEFAULT_MEMORY_BYTES: u64 = 16 << 20;
pub const MAX_MEMORY_BYTES: u64 = 64 << 20;
