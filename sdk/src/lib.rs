//! Cairn's plugin SDK: guards, computed compares, policy hooks, watch filters and reactors
//! for Cairn, written in safe Rust and built as WebAssembly components.
//!
//! The contract is `wit/plugin.wit` (`cairn:plugin@0.1.0`). This crate owns its Rust view:
//! plain data types ([`Op`], [`Decision`], [`Value`], …), read-only [`Store`] access, the
//! [`Context`] every hook is handed, one trait per hook ([`Guard`], [`Compare`], [`Policy`],
//! [`WatchFilter`], [`Reactor`]), the `export_*!` macros that turn a type implementing one
//! into the component's export, and [`testing`] to run hooks natively. It must not expose the
//! canonical ABI: the generated bindings stay in the hidden `__private` module, which is the
//! only code here allowed `unsafe`.
//!
//! A plugin is a `cdylib` built with `cargo build --target wasm32-unknown-unknown --release`;
//! `cairnctl plugin install` turns the core module into a component. It imports only
//! `cairn:plugin/store@0.1.0`, `cairn:plugin/log@0.1.0` and `cairn:plugin/clock@0.1.0`: no
//! WASI, no wall clock (the clock is the log entry's time), no randomness, so hooks are
//! deterministic as long as their own code is. A panic traps the call; its message
//! goes to the host's log first (unless the export says `log_panics = false`). A plugin
//! imports only the interfaces it uses (see [`Context`] and [`export_guard!`]).
//!
//! ```
//! use cairn_sdk::{Context, Decision, Guard, Op};
//!
//! /// Values under the bound range must be at most 16 bytes.
//! struct ShortValues;
//!
//! impl Guard for ShortValues {
//!     fn check(_ctx: &Context<'_>, ops: &[Op]) -> Decision {
//!         for op in ops {
//!             if let Op::Put(put) = op
//!                 && !put.ignore_value
//!                 && put.value.len() > 16
//!             {
//!                 return Decision::deny("values hold at most 16 bytes");
//!             }
//!         }
//!         Decision::Allow
//!     }
//! }
//!
//! cairn_sdk::export_guard!(ShortValues);
//!
//! # use cairn_sdk::testing::{self, MemStore};
//! # let store = MemStore::new();
//! # assert!(testing::check::<ShortValues>(&store, b"", &[Op::put("k", "short")]).is_allowed());
//! ```

mod context;
mod export;
mod hooks;
mod store;
pub mod testing;
mod types;

#[doc(hidden)]
pub mod __private;

pub use context::{Context, FilterContext, Level};
pub use hooks::{Compare, Guard, Policy, Reactor, WatchFilter};
pub use store::{Store, prefix_end, range_contains};
pub use types::{
    Access, Answer, Decision, DeleteRange, Event, EventType, KeyValue, Op, Operation,
    PolicyRequest, Put, Value, Verdict, Watcher,
};
