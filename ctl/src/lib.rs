//! `cairnctl`: Cairn's command-line client, in etcdctl's style.
//!
//! It speaks etcd's `KV` (for `txn`, with Cairn's computed compares), `Watch`, `Auth` (`user`,
//! `role`, `auth`, as etcdctl) and `Maintenance` (`snapshot save`), and Cairn's
//! `cairn.plugin.v1.Plugin` registry (install, bind, unbind, remove, list, get).
//! `snapshot status` and `snapshot restore` work on files, through `cairn::backup`.
//!
//! ```text
//!  argv ──▶ cli (clap) ──▶ run ──▶ endpoint::Connection ──gRPC──▶ a Cairn member
//!  stdin ──▶ txn_parse ──┘   │
//!  file.wasm ──▶ module ─────┘ (componentize, sha256, chunks)
//!                            └──▶ output (simple | json) ──▶ stdout
//! ```
//!
//! The parsers (`txn_parse`, `key_range`, `units`) and `module` are pure: no I/O, no network,
//! so `tests/` checks them directly. Only `run` and `endpoint` talk to a server, and only
//! `main.rs` touches the process (exit code, `Error:` on stderr).

pub mod auth;
pub mod cli;
pub mod endpoint;
pub mod error;
pub mod key_range;
pub mod module;
pub mod output;
pub mod run;
pub mod snapshot;
pub mod tls;
pub mod txn_parse;
pub mod units;
pub mod watch;

pub use error::Error;
pub use run::run;
