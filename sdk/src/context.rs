//! What a hook is handed besides its arguments: the binding's config, the store, and a log.
//!
//! Contexts are made by the SDK only (the wasm adapters in `__private` and
//! [`crate::testing`]); plugin code just reads them.

use std::fmt;

use crate::store::Store;

/// How much an operator should care about a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for debugging a plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something an operator should look at.
    Warn,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
        })
    }
}

/// Where a test's log lines go.
pub(crate) trait LogSink {
    fn write(&self, level: Level, message: &str);
}

/// A context's store and log: the host's imports (`cairn:plugin/store`, `cairn:plugin/log`)
/// in a component, a test's in [`crate::testing`].
///
/// The host's imports are named only inside the accessors that use them ([`Context::store`],
/// [`Context::log`]), so the linker drops what a plugin never calls: a plugin that never reads
/// the store or never logs does not import that interface. That matters for speed: a
/// component with any import that passes a string or a list needs two more core instances
/// (wit-component's shim and fixup modules) on every call; see docs/plugins.md.
#[derive(Clone, Copy)]
pub(crate) enum Backend<'a> {
    Host,
    Test {
        store: &'a dyn Store,
        log: &'a dyn LogSink,
        now_ms: i64,
    },
}

impl<'a> Backend<'a> {
    fn store(self) -> &'a dyn Store {
        match self {
            Self::Host => crate::__private::host_store(),
            Self::Test { store, .. } => store,
        }
    }

    fn write(self, level: Level, message: &str) {
        match self {
            Self::Host => crate::__private::host_log(level, message),
            Self::Test { log, .. } => log.write(level, message),
        }
    }

    fn now_ms(self) -> i64 {
        match self {
            Self::Host => crate::__private::host_now_ms(),
            Self::Test { now_ms, .. } => now_ms,
        }
    }
}

/// What a guard, compare, policy hook or reactor is handed: the binding's config, the store
/// at the revision the hook runs at, the entry's time, and a log.
pub struct Context<'a> {
    config: &'a [u8],
    backend: Backend<'a>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(config: &'a [u8], backend: Backend<'a>) -> Self {
        Self { config, backend }
    }

    /// The binding's config bytes, as given to `cairnctl plugin bind --config` (often JSON).
    pub fn config(&self) -> &'a [u8] {
        self.config
    }

    /// The store, read-only, at the revision the hook runs at.
    pub fn store(&self) -> &'a dyn Store {
        self.backend.store()
    }

    /// Milliseconds since the Unix epoch: in apply, the time the leader stamped on the log
    /// entry (the same on every member, and never a member's own clock); for a policy check
    /// of a read or a watch, the serving member's clock. 0 for an entry no leader stamped.
    pub fn now_ms(&self) -> i64 {
        self.backend.now_ms()
    }

    /// Writes a line to the member's log under the plugin's name.
    pub fn log(&self, level: Level, message: &str) {
        self.backend.write(level, message);
    }

    /// Writes a debug line.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Writes an info line.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Writes a warning.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }
}

/// What a watch filter is handed: the binding's config and a log, but no store (a filter runs
/// on the member serving the watcher, outside the replicated state machine).
pub struct FilterContext<'a> {
    config: &'a [u8],
    backend: Backend<'a>,
}

impl<'a> FilterContext<'a> {
    pub(crate) fn new(config: &'a [u8], backend: Backend<'a>) -> Self {
        Self { config, backend }
    }

    /// The binding's config bytes.
    pub fn config(&self) -> &'a [u8] {
        self.config
    }

    /// Writes a line to the member's log under the plugin's name.
    pub fn log(&self, level: Level, message: &str) {
        self.backend.write(level, message);
    }

    /// Writes a debug line.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Writes an info line.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Writes a warning.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }
}
