//! Consensus: the only module that names openraft types.
//!
//! ```text
//!  api ──write(Command)──▶ RaftNode ──(not leader? Peer.Forward to the leader)──┐
//!                              │                                                 ▼
//!                              └──────────────▶ client_write ──▶ openraft core (leader)
//!                                                      │ append (fjall, group fsync)
//!                                                      │ replicate over Peer.AppendEntries
//!                                                      │ commit on a majority
//!                                                      ▼
//!  api ◀──CommandResponse── StateMachineStore::apply ──▶ state_machine::StateMachine
//! ```
//!
//! [`RaftNode`] is the narrow face the rest of the server sees: propose a command, wait for a
//! linearizable read point, change membership, read status. Any member serves any of these:
//! what only the leader can do is forwarded to it (`transport/forward.rs`). Everything else (log store,
//! state machine adapter, peer transport) stays inside this module.

mod force;
mod log_cache;
pub mod log_store;
mod membership;
mod purge;
pub mod state_machine;
#[cfg(test)]
mod storage_test;
pub mod transport;
pub mod types;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{Config, Raft, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::state_machine::{Command, CommandResponse, StateMachine};
use crate::storage::Storage;
use log_store::LogStore;
pub use membership::MembershipError;
use state_machine::StateMachineStore;
pub use transport::forward::LessorHandler;
use transport::forward::{self, ForwardReply, ForwardRequest};
use transport::network::Network;
use transport::peers::Peers;
use transport::service;
pub use types::{Member, MemberInfo, MembershipChange, TypeConfig};

/// Raft timing and log retention, from the server's flags.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers (etcd's snapshot-catchup-entries).
    pub catchup_entries: u64,
    /// etcd's `--strict-reconfig-check`: refuse membership changes that risk the quorum.
    pub strict_reconfig_check: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 10_000,
            catchup_entries: 5_000,
            strict_reconfig_check: true,
        }
    }
}

/// How a member with an empty data dir enters its cluster.
#[derive(Clone, Debug)]
pub enum Bootstrap {
    /// Founding member of a new cluster of these members (`--initial-cluster-state new`).
    New(BTreeMap<u64, MemberInfo>),
    /// Joining a running cluster that already lists it (`--initial-cluster-state existing`):
    /// wait for the leader to replicate to it.
    Join,
    /// etcd's `--force-new-cluster`: a used data dir becomes a one-member cluster of this
    /// member (described here), keeping what it had committed (see `force.rs`).
    ForceNew(MemberInfo),
}

/// Everything [`RaftNode::start`] needs.
pub struct StartParams<'a> {
    pub id: u64,
    pub cluster_id: u64,
    pub storage: Storage,
    pub data_dir: &'a Path,
    pub config: &'a RaftConfig,
    pub bootstrap: Bootstrap,
    /// The link filter (only tests that run members in-process install one).
    pub filter: transport::filter::Filter,
    /// TLS towards peers whose URLs are `https://`.
    pub tls: Option<Arc<crate::net::tls::ClientTls>>,
}

/// Why a proposal, a read barrier or a leader-only request did not complete.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeError {
    #[error("no leader")]
    NoLeader,
    /// The member that got the request does not lead (any more); `leader` is its hint.
    #[error("not leader")]
    NotLeader { leader: Option<u64> },
    /// Leadership changed while the request was in flight: its outcome is unknown.
    #[error("leader changed")]
    LeaderChanged,
    /// The request could not be delivered to the leader (nothing was proposed).
    #[error("not delivered to the leader: {0}")]
    NotSent(String),
    /// The connection to the leader broke after the request was sent: outcome unknown.
    #[error("connection to the leader lost")]
    ConnectionLost,
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// The leader's lessor could not answer.
    #[error("{0}")]
    Lessor(String),
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
    /// The highest log index this member knows to be committed.
    pub committed_index: u64,
    pub applied_index: u64,
    /// The last log index purged from this member's log (0 before the first purge): a
    /// member that needs entries up to here gets a snapshot instead.
    pub purged_index: u64,
    pub is_leader: bool,
    pub is_learner: bool,
}

#[derive(Clone)]
pub struct RaftNode {
    raft: Raft<TypeConfig, StateMachineStore>,
    id: u64,
    committed: tokio::sync::watch::Receiver<crate::mvcc::Revisions>,
    peers: Peers,
    lessor: Arc<OnceLock<Arc<dyn LessorHandler>>>,
    /// Serializes membership changes on the leader.
    membership_lock: Arc<tokio::sync::Mutex<()>>,
    /// How long a request waits for a leader to appear before it fails with "no leader".
    leader_patience: Duration,
    /// The index of the last entry this member applied (see `StateMachineStore`).
    applied: tokio::sync::watch::Receiver<u64>,
    /// Two election timeouts: a leader without a quorum acknowledgement for this long reports
    /// no leader (see `status`), and members not heard from for this long count as down.
    /// (openraft's own lease is shorter, see `start`: such a leader takes no proposals.)
    leader_lease: Duration,
    /// Log retention (see `purge.rs`).
    snapshot_count: u64,
    catchup_entries: u64,
    /// See [`RaftConfig::strict_reconfig_check`].
    strict_reconfig_check: bool,
    /// The auth store as this member applied it.
    auth: crate::state_machine::SharedAuth,
    alarms: crate::alarm::SharedAlarms,
    /// The member's storage (for the HashKV its peers ask of it).
    storage: crate::storage::Storage,
    /// The state machine's side of snapshots (shared with openraft's copy), for re-pinning.
    snapshots: StateMachineStore,
    /// Policy hooks' decisions on reads, over the registry this member applied.
    policy_reads: crate::plugin::policy::Reads,
    /// Watch filters, over the registry this member applied.
    watch_filters: crate::plugin::filter::Filters,
    plugin_logs: crate::plugin::logs::PluginLogs,
    /// Reactors, over the registry this member applied (run while it leads).
    reactors: crate::plugin::reactor::Reactors,
    /// Evaluates writes' guards and policy hooks before this member, leading, proposes them.
    vetter: crate::plugin::vet::Vetter,
}

impl RaftNode {
    /// Starts Raft for member `params.id`. An empty data dir enters the cluster as
    /// `params.bootstrap` says; a used one resumes from its log and state.
    pub async fn start(params: StartParams<'_>) -> Result<Self, StartError> {
        let cfg = params.config;
        let config = Config {
            cluster_name: "cairn".to_string(),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            // When a follower that stops hearing from its leader campaigns. etcd campaigns
            // a random time between one and two election timeouts (E) after the last
            // heartbeat. openraft first lets its leader lease run out, which is
            // `election_timeout_max`, then waits a random time in [min, max): between
            // min + max and 2 max in all. Its usual max = 2E meant 3E to 4E, and a failover
            // of 3.4 s at E = 1 s against etcd's 2.1 s. With these, E to 1.5E: never sooner
            // than etcd (the same margin against needless elections on a busy machine), on
            // average sooner. A follower refuses votes for 3E/4 after a heartbeat, so the
            // first candidate gets them. (etcd's flags ensure E >= 5 heartbeats, so min is
            // above a heartbeat, as openraft requires.)
            election_timeout_min: cfg.election_timeout_ms.div_ceil(4),
            election_timeout_max: cfg.election_timeout_ms * 3 / 4,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
            // Purging is Cairn's own (`purge.rs`): openraft's rule would purge what a lagging
            // follower still needs.
            max_in_snapshot_log_to_keep: u64::MAX,
            purge_batch_size: 256,
            enable_pre_vote: Some(true),
            // After failed replication requests, openraft waits before each request to the
            // follower until one succeeds. Its default doubles from 200 ms up to 1 s, so a
            // follower back from a pause or a restart waited up to a second, often more, for
            // what it had missed, while its clients waited for it; etcd's leader sends at the
            // follower's next heartbeat answer. Here a constant quarter of a heartbeat interval.
            // A member that stays down costs no more for it: a replication stream to it fails
            // to open only after a heartbeat interval (`network.rs`).
            backoff: {
                let step = (cfg.heartbeat_interval_ms / 4).max(1);
                format!("{step}ms {step}ms {step}ms")
            },
            // A restarted leader must win an election like anyone else (standard Raft, and
            // etcd). openraft can instead resume leadership from the persisted vote, but the
            // commit index is saved without its own fsync and applied state is not synced, so
            // after a power loss such a leader
            // answers ReadIndex with the index it recovered to, below what the cluster
            // committed and acknowledged before the crash: a stale linearizable read. Seen by
            // the linearizability test (seed 10388387267164590337).
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let mut log_store = LogStore::new(params.storage.clone())?;
        let storage = params.storage.clone();
        let state_machine =
            StateMachine::new(params.storage).map_err(|e| StartError::Raft(e.to_string()))?;
        let committed = state_machine.subscribe();
        let auth = state_machine.auth();
        let alarms = state_machine.alarms();
        let policy_reads = state_machine.policy_reads();
        let reactors = state_machine.reactors();
        let vetter = state_machine.vetter();
        let plugin_logs = state_machine.plugin_logs();
        let watch_filters = state_machine
            .watch_filters()
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let mut sm = StateMachineStore::new(state_machine, params.data_dir.join("snap"))?;
        if let Bootstrap::ForceNew(me) = &params.bootstrap {
            force::rewrite_as_one_member(&mut log_store, &mut sm, params.id, me.clone()).await?;
        }
        let applied = sm.applied_index();
        let snapshots = sm.clone();
        let peers = Peers::new(params.id, params.cluster_id, params.filter, params.tls);
        let network = Network {
            peers: peers.clone(),
        };
        let raft = Raft::new(params.id, Arc::new(config), network, log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if let (false, Bootstrap::New(members)) = (initialized, params.bootstrap) {
            // Every founding member initializes with the same membership, which openraft
            // allows: the election picks one leader.
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        }
        Ok(RaftNode {
            raft,
            id: params.id,
            committed,
            peers,
            lessor: Arc::default(),
            membership_lock: Arc::default(),
            leader_patience: Duration::from_millis(cfg.election_timeout_ms * 3),
            leader_lease: Duration::from_millis(cfg.election_timeout_ms * 2),
            applied,
            snapshot_count: cfg.snapshot_count.max(1),
            catchup_entries: cfg.catchup_entries,
            strict_reconfig_check: cfg.strict_reconfig_check,
            auth,
            alarms,
            storage,
            snapshots,
            policy_reads,
            watch_filters,
            plugin_logs,
            reactors,
            vetter,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.peers.cluster_id()
    }

    /// The gRPC service for the peer port; its streams end once `stopping` turns true.
    pub fn peer_routes(
        &self,
        snapshot_dir: std::path::PathBuf,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> tonic::service::Routes {
        use cairn_proto::cairn_raft::peer_server::PeerServer;
        let service = service::PeerService::new(self.clone(), snapshot_dir, stopping);
        tonic::service::Routes::new(
            PeerServer::new(service)
                .max_decoding_message_size(transport::peers::MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(transport::peers::MAX_PEER_MESSAGE_BYTES),
        )
    }

    /// The auth store as this member applied it (see `StateMachine::auth`).
    pub fn auth(&self) -> crate::state_machine::SharedAuth {
        self.auth.clone()
    }

    /// Moves the pin the current snapshot holds on fjall's garbage collection to now, so
    /// compaction can drop what only the old view still read (defragment does this): the
    /// same snapshot re-pinned when nothing was applied since, or else a fresh snapshot
    /// (openraft's trigger), waited for up to `limit`.
    pub async fn refresh_snapshot(&self, limit: Duration) -> Result<(), ProposeError> {
        // Nothing applied since the last snapshot: the same snapshot, pinned afresh.
        if self
            .snapshots
            .repin()
            .map_err(|e| ProposeError::Stopped(e.to_string()))?
        {
            return Ok(());
        }
        let applied = self.status().applied_index;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        self.raft
            .wait(Some(limit))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot refreshed",
            )
            .await
            .map(|_| ())
            .map_err(|e| ProposeError::Stopped(e.to_string()))
    }

    /// The active alarms as this member applied them.
    pub fn alarms(&self) -> crate::alarm::SharedAlarms {
        self.alarms.clone()
    }

    /// Reactors (see `StateMachine::reactors`).
    pub fn reactors(&self) -> crate::plugin::reactor::Reactors {
        self.reactors.clone()
    }

    /// Where this member's plugins write their log lines (see `plugin/logs.rs`).
    pub fn plugin_logs(&self) -> crate::plugin::logs::PluginLogs {
        self.plugin_logs.clone()
    }

    /// Watch filters (see `StateMachine::watch_filters`).
    pub fn watch_filters(&self) -> crate::plugin::filter::Filters {
        self.watch_filters.clone()
    }

    /// Policy hooks' decisions on reads (see `StateMachine::policy_reads`).
    pub fn policy_reads(&self) -> crate::plugin::policy::Reads {
        self.policy_reads.clone()
    }

    /// Follows the revisions of this member's applied state (see `StateMachine::subscribe`).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<crate::mvcc::Revisions> {
        self.committed.clone()
    }

    /// Proposes `command` on the leader; returns once it is committed, durable and applied
    /// there.
    pub async fn write(&self, command: Command) -> Result<CommandResponse, ProposeError> {
        if self.takes_proposals() {
            // The common case: no clone of the command, no serialization.
            return self
                .write_local(command)
                .await
                .map(|(response, _)| response);
        }
        match self.on_leader(ForwardRequest::Write(command)).await? {
            ForwardReply::Write { response, index } => {
                // Answer only once this member has applied the write too, as etcd does for a
                // proposal made through it: a serializable read here then sees it.
                self.wait_applied(index).await?;
                Ok(response)
            }
            other => Err(forward::unexpected(&other)),
        }
    }

    /// Proposes `command` on this member, which leads: its response and log index. Every
    /// command is stamped with this leader's time (see `Command::Stamped`), so plugins in
    /// apply (guards on a reactor's writes too) see when it was proposed. A client's write
    /// meeting guards or policy hooks also carries their verdicts, evaluated here with that
    /// time (see `Command::Vetted`).
    async fn write_local(&self, command: Command) -> Result<(CommandResponse, u64), ProposeError> {
        let unix_ms = crate::wall_clock_ms();
        let calls = self.vetter.vet(&command, unix_ms).await;
        let command = if calls.is_empty() {
            command
        } else {
            Command::Vetted {
                calls,
                command: Box::new(command),
            }
        };
        let command = Command::Stamped {
            unix_ms,
            command: Box::new(command),
        };
        match self.raft.client_write(command).await {
            Ok(resp) => {
                tracing::debug!(log_id = %resp.log_id, "write applied");
                Ok((resp.data, resp.log_id.index))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(ProposeError::LeaderChanged)
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Stopped(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex,
    /// asked of the leader), so a local read after it is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        let index = if self.status().is_leader {
            match self.read_index_local().await {
                Err(ProposeError::NotLeader { .. }) => self.read_index_remote().await?,
                other => other?,
            }
        } else {
            self.read_index_remote().await?
        };
        tracing::debug!(index, "read barrier");
        self.wait_applied(index).await
    }

    /// Waits until this member has applied log index `index`.
    async fn wait_applied(&self, index: u64) -> Result<(), ProposeError> {
        let mut applied = self.applied.clone();
        applied
            .wait_for(|i| *i >= index)
            .await
            .map(|_| ())
            .map_err(|_| ProposeError::Stopped("state machine stopped".into()))
    }

    async fn read_index_remote(&self) -> Result<u64, ProposeError> {
        match self.on_leader(ForwardRequest::ReadIndex).await? {
            ForwardReply::ReadIndex(index) => Ok(index),
            other => Err(forward::unexpected(&other)),
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index reads must wait
    /// for.
    async fn read_index_local(&self) -> Result<u64, ProposeError> {
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _applied)) => {
                tracing::debug!(
                    index = read_log_id.index(),
                    leadership = %read_log_id.committed_leader_id(),
                    "read index"
                );
                Ok(read_log_id.index())
            }
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                Err(ProposeError::NoLeader)
            }
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Hands leadership to member `to`. Only the leader may; the transfer is done when `to`
    /// leads (bounded by `limit`).
    pub async fn transfer_leader(&self, to: u64, limit: Duration) -> Result<(), ProposeError> {
        let status = self.status();
        if !status.is_leader {
            return Err(ProposeError::NotLeader {
                leader: status.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        self.raft
            .wait(Some(limit))
            .metrics(|m| m.current_leader == Some(to), "leader transferred")
            .await
            .map(|_| ())
            .map_err(|_| ProposeError::LeaderChanged)
    }

    /// Whether this member leads and openraft takes proposals from it now: it heard from a
    /// quorum within openraft's own lease (shorter than the two election timeouts after which
    /// [`Self::status`] reports no leader; see `start`). A leader past that lease answers a
    /// proposal with "forward to the leader", naming none. So [`Self::write`] sends such a
    /// write the forwarding way, which waits (bounded) for a leader and ends in
    /// `no leader`, as etcd's does.
    fn takes_proposals(&self) -> bool {
        // openraft's lease is its `election_timeout_max`.
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader && quorum_heard_within(&m, lease)
    }

    pub fn status(&self) -> RaftStatus {
        // Read in place: this runs several times per request.
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let leader = known_leader(&m, self.leader_lease);
        RaftStatus {
            term: m.current_term,
            leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.map_or(0, |id| id.index),
            applied_index: m.last_applied.map_or(0, |id| id.index),
            purged_index: m.purged.map_or(0, |id| id.index),
            is_leader: m.state == ServerState::Leader && leader == Some(self.id),
            is_learner: m.state == ServerState::Learner,
        }
    }

    /// On the leader: every other member of the configuration, and whether it acknowledged a
    /// heartbeat within the leader lease. Empty on a member that does not lead.
    pub fn peer_liveness(&self) -> BTreeMap<u64, bool> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader {
            return BTreeMap::new();
        }
        m.membership_config
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.id)
            .map(|id| (id, heard_within(&m, id, self.leader_lease)))
            .collect()
    }

    /// Until `stopped`, counts leader changes into `etcd_server_leader_changes_seen_total` as
    /// etcd does (each time a leader is known that differs from the last one seen: losing the
    /// leader and getting it back counts again), and tells the metrics which members exist,
    /// the only IDs per-peer series are labelled with.
    pub async fn follow_for_metrics(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut metrics = self.raft.metrics();
        let (mut last, mut membership_seen) = (None, None);
        loop {
            let (leader, membership) = {
                let m = metrics.borrow_watched();
                (m.current_leader, m.membership_config.clone())
            };
            if leader.is_some() && leader != last {
                crate::metrics::METRICS.leader_changes.inc();
            }
            last = leader;
            if membership_seen != Some(*membership.log_id()) {
                membership_seen = Some(*membership.log_id());
                let peers = membership
                    .nodes()
                    .map(|(id, _)| *id)
                    .filter(|id| *id != self.id);
                crate::metrics::METRICS.know_peers(peers);
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// Waits until some member leads (bounded by `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
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

/// Asks the members at `peer_urls` who is in their cluster (for a member joining with
/// `--initial-cluster-state existing`). Returns the first answer.
pub async fn hello(
    me: u64,
    peer_urls: &[String],
    tls: Option<Arc<crate::net::tls::ClientTls>>,
    limit: Duration,
) -> Result<service::HelloReply, String> {
    hello_through(
        &Peers::new(me, 0, transport::filter::Filter::default(), tls),
        peer_urls,
        limit,
    )
    .await
}

/// [`hello`] over existing peer channels.
async fn hello_through(
    peers: &Peers,
    peer_urls: &[String],
    limit: Duration,
) -> Result<service::HelloReply, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = String::from("no peer URLs to ask");
    while tokio::time::Instant::now() < deadline {
        for url in peer_urls {
            let mut client = match peers.client(url) {
                Ok(c) => c,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let call = client.hello(peers.envelope(Vec::new()));
            match tokio::time::timeout(Duration::from_secs(2), call).await {
                Ok(Ok(reply)) => {
                    return postcard::from_bytes(&reply.into_inner().payload)
                        .map_err(|e| format!("undecodable answer from {url}: {e}"));
                }
                Ok(Err(status)) => last_error = format!("{url}: {}", status.message()),
                Err(_) => last_error = format!("{url}: no answer"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last_error)
}

/// The leader as this member reports it ([`RaftNode::status`]): openraft's, except that a
/// leader that has not heard from a quorum within `lease` cannot commit and reports none, as
/// etcd's leader does when CheckQuorum makes it step down. (openraft keeps the role and
/// rejects proposals meanwhile; it resumes when the quorum answers, or steps down when it
/// hears of a newer term.) Whatever waits for a leader must judge by this too: openraft's own
/// `current_leader` names such a leader still.
fn known_leader(m: &openraft::RaftMetrics<TypeConfig>, lease: Duration) -> Option<u64> {
    if m.state == ServerState::Leader && !quorum_heard_within(m, lease) {
        None
    } else {
        m.current_leader
    }
}

/// Whether a quorum acknowledged this leader within `lease`. Always true with one voter; and
/// true before any acknowledgement is recorded, which means just elected by a quorum
/// (openraft fills the metric in only seconds after an election).
fn quorum_heard_within(m: &openraft::RaftMetrics<TypeConfig>, lease: Duration) -> bool {
    m.membership_config.voter_ids().count() <= 1
        || m.last_quorum_acked
            .is_none_or(|at| at.into_inner().elapsed() <= lease)
}

/// Whether member `id` acknowledged a heartbeat of this leader within `lease`: Raft's own
/// measure of who is alive, which log purging, strict reconfiguration and the
/// `etcd_network_active_peers` metric share.
fn heard_within(m: &openraft::RaftMetrics<TypeConfig>, id: u64, lease: Duration) -> bool {
    m.heartbeat
        .as_ref()
        .and_then(|h| h.get(&id).copied().flatten())
        .is_some_and(|at| at.into_inner().elapsed() <= lease)
}
