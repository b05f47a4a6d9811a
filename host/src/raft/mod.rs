//! Consensus: the only module that names openraft types.
//!
//! ```text
//!  api ──write(Command)──▶ RaftNode ──client_write──▶ openraft core
//!                                                      │ append (fjall, group fsync)
//!                                                      │ commit on a majority
//!                                                      ▼
//!  api ◀──CommandResponse── StateMachineStore::apply ──▶ state_machine::StateMachine
//! ```
//!
//! [`RaftNode`] is the narrow face the rest of the server sees: propose a command, wait for a
//! linearizable read point, read status. Everything else (log store, state machine adapter,
//! network) stays inside this module.

pub mod log_store;
pub mod network;
pub mod state_machine;
#[cfg(test)]
mod storage_test;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{Config, Raft, ReadPolicy, ServerState, SnapshotPolicy};
use thiserror::Error;

use crate::state_machine::{Command, CommandResponse, StateMachine};
use crate::storage::Storage;
use log_store::LogStore;
use network::Network;
use state_machine::StateMachineStore;
pub use types::{MemberInfo, TypeConfig};

/// Raft timing and log retention, from the server's flags.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers (etcd's snapshot-catchup-entries).
    pub catchup_entries: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 10_000,
            catchup_entries: 5_000,
        }
    }
}

/// Why a proposal or a read barrier did not complete.
#[derive(Debug, Error)]
pub enum ProposeError {
    #[error("no leader")]
    NoLeader,
    #[error("not enough members to form a quorum")]
    NoQuorum,
    #[error("raft stopped: {0}")]
    Stopped(String),
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error("raft config: {0}")]
    Config(String),
    #[error("raft storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(String),
}

/// Raft's view of this member, for Status and response headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
}

#[derive(Clone)]
pub struct RaftNode {
    raft: Raft<TypeConfig, StateMachineStore>,
    id: u64,
    committed: tokio::sync::watch::Receiver<crate::mvcc::Revisions>,
}

impl RaftNode {
    /// Starts Raft for member `id` over `storage`; a fresh data dir bootstraps a one-member
    /// group, an existing one resumes from its log and state.
    pub async fn start(
        id: u64,
        me: MemberInfo,
        storage: Storage,
        data_dir: &Path,
        cfg: &RaftConfig,
    ) -> Result<Self, StartError> {
        let config = Config {
            cluster_name: "cairn".to_string(),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            election_timeout_min: cfg.election_timeout_ms,
            election_timeout_max: cfg.election_timeout_ms * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: cfg.catchup_entries,
            purge_batch_size: 256,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let log_store = LogStore::new(storage.clone())?;
        let state_machine =
            StateMachine::new(storage).map_err(|e| StartError::Raft(e.to_string()))?;
        let committed = state_machine.subscribe();
        let sm = StateMachineStore::new(state_machine, data_dir.join("snap"))?;
        let raft = Raft::new(id, Arc::new(config), Network, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            raft.initialize(BTreeMap::from([(id, me)]))
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        }
        Ok(RaftNode {
            raft,
            id,
            committed,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Follows the revisions of this member's applied state (see `StateMachine::subscribe`).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<crate::mvcc::Revisions> {
        self.committed.clone()
    }

    /// Proposes `command`; returns once it is committed, durable and applied here.
    pub async fn write(&self, command: Command) -> Result<CommandResponse, ProposeError> {
        match self.raft.client_write(command).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(if f.leader_id.is_none() {
                    ProposeError::NoLeader
                } else {
                    ProposeError::NoQuorum
                })
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Stopped(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex),
    /// so a local read after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(if f.leader_id.is_none() {
                    ProposeError::NoLeader
                } else {
                    ProposeError::NoQuorum
                })
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                Err(ProposeError::NoQuorum)
            }
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        RaftStatus {
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |id| id.index),
            is_leader: m.state == ServerState::Leader,
        }
    }

    /// Waits until some member leads (bounded by `timeout`).
    pub async fn wait_for_leader(&self, timeout: std::time::Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader elected")
            .await
            .is_ok()
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
