//! `cairnctl`: Cairn's command-line client, a superset of etcdctl.
//!
//! It takes etcdctl's commands, flags and environment variables and prints what etcdctl prints
//! in each of its output formats; it adds Cairn's computed compares (`txn`), watch filters
//! (`watch --filter`), the plugin registry (`plugin ...`) and etcdutl's file commands
//! (`snapshot status|restore`, through `cairn::backup`).
//!
//! ```text
//!  env ──▶ env (ETCDCTL_*/CAIRNCTL_* as flags) ──▶ cli (clap) ──▶ run::Session
//!                                                                   │ dial (endpoint)
//!   keys · lease · cluster · recipes · watch · auth · snapshot ◀────┘ plugin (run.rs)
//!     │ responses
//!     ▼
//!  print: simple | json (gojson: Go's encoding/json) | fields | protobuf | table ──▶ stdout
//! ```
//!
//! The parsers (`txn_parse`, `key_range`, `units`, `env`) and `module` are pure: no I/O, no
//! network, so tests check them directly. Only the command modules and `endpoint` talk to a
//! server, and only `main.rs` touches the process (exit status, `Error:` on stderr).

pub mod auth;
pub mod bench;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod endpoint;
pub mod env;
pub mod error;
pub mod key_range;
pub mod keys;
pub mod lease;
pub mod mirror;
pub mod module;
pub mod output;
pub mod plugin_logs;
pub mod print;
pub mod recipes;
pub mod run;
pub mod sandbox;
pub mod scaffold;
pub mod snapshot;
pub mod tls;
pub mod txn_parse;
pub mod units;
pub mod watch;

pub use error::Error;
pub use run::run;
