//! Cairn: an etcd v3 compatible key-value store on openraft and fjall.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod api;
pub mod auth;
pub mod config;
pub mod identity;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod net;
pub mod plugin;
pub mod raft;
pub mod server;
pub mod state_machine;
pub mod storage;
pub mod watch;
