//! Cairn: an etcd v3 compatible key-value store on openraft and fjall.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod alarm;
pub mod api;
pub mod auth;
pub mod backup;
pub mod compactor;
pub mod config;
pub mod config_file;
pub mod corrupt;
pub mod identity;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod mvcc;
pub mod net;
pub mod plugin;
pub mod raft;
pub mod server;
pub mod state_machine;
pub mod storage;
pub mod watch;

/// This member's clock, in milliseconds since the Unix epoch (0 before it). Never read in
/// apply: what apply needs of time comes from the log (`state_machine::Command::Stamped`).
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
