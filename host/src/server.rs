//! Starts a member: opens storage, starts Raft, binds the client listeners and serves the
//! gRPC services until shutdown.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::router::{Serves, client_router};
use crate::api::{ApiContext, Limits};
use crate::config::{Config, ConfigError};
use crate::identity::Identity;
use crate::net::{Keepalive, NetError, bind_all, serve_client, serve_peer};
use crate::raft::{
    Bootstrap, MemberInfo, MembershipChange, RaftConfig, RaftNode, StartError, StartParams,
};
use crate::storage::Storage;

/// How long a stopping member lets in-flight requests and streams finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Rounds (of 500 ms) between asking a peer whether this member was removed.
const REMOVAL_CHECK_ROUNDS: u64 = 4;
/// How long a removed member keeps serving before it stops (etcd waits one second too), so
/// the reply to the request that removed it reaches its client.
const REMOVED_STOP_DELAY: Duration = Duration::from_secs(1);
/// How long a member started with `--initial-cluster-state existing` looks for the cluster.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);
/// How long a joining member keeps asking until the member list names it.
const MEMBER_LIST_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot use data dir {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Raft(#[from] StartError),
    #[error("cannot join the cluster: {reason}")]
    Join { reason: String },
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// The initial corruption check found a peer whose history differs (etcd's words first).
    #[error("found data inconsistency with peers: {0}")]
    Corrupt(String),
    #[error("a server task failed: {0}")]
    Task(String),
}

/// A running member. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub client_addrs: Vec<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    /// The member's long-running tasks, each named for the shutdown report.
    tasks: JoinSet<(&'static str, Result<(), ServerError>)>,
    running: Vec<&'static str>,
    raft: RaftNode,
}

impl Server {
    /// Starts a member: binds every listener, opens the data dir, enters the cluster, starts
    /// Raft and the peer listeners, waits (bounded) for a leader, then serves clients.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let tokens = crate::auth::Tokens::new(config.token_config()?);
        let dir = config.data_dir();
        // Bind first: a busy port fails fast, before anything is written to the data dir.
        let mut listeners = Listeners::bind(&config).await?;
        // TLS next, still before the store opens: unreadable certificates fail fast.
        let client_tls = config.client_tls(&dir)?;
        let peer_tls = config.peer_tls(&dir)?;
        let storage = open_storage(&dir).await?;
        let peer_client_tls = peer_tls.as_ref().map(|t| t.client.clone());
        let (identity, bootstrap) =
            enter_cluster(&config, &storage, peer_client_tls.clone()).await?;
        let raft = RaftNode::start(StartParams {
            id: identity.member_id,
            cluster_id: identity.cluster_id,
            storage: storage.clone(),
            data_dir: &dir,
            config: &RaftConfig {
                heartbeat_interval_ms: config.heartbeat_interval,
                election_timeout_ms: config.election_timeout,
                snapshot_count: config.snapshot_count,
                catchup_entries: config.experimental_snapshot_catchup_entries,
                strict_reconfig_check: config.strict_reconfig_check,
            },
            bootstrap,
            filter: config.link_filter.clone(),
            tls: peer_client_tls,
        })
        .await?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Tasks::default();
        // Peers first: the election needs them.
        for (url, listener) in std::mem::take(&mut listeners.peer) {
            let routes = raft.peer_routes(dir.join("snap"), stopped.clone());
            let tls = peer_tls
                .as_ref()
                .filter(|_| url.starts_with("https://"))
                .map(|t| t.server.clone());
            let serve = serve_peer(url, listener, routes, tls, stopped.clone());
            tasks.spawn("peer listener", async move { Ok(serve.await?) });
        }
        let election = Duration::from_millis(config.election_timeout);
        if !raft.wait_for_leader(election * 4).await {
            tracing::warn!(
                "no leader yet; serving anyway, writes fail with \"no leader\" until one is elected"
            );
        }
        if config.experimental_initial_corrupt_check {
            initial_corrupt_check(&raft, &storage).await?;
        }
        let ctx = api_context(
            &config,
            &identity,
            raft.clone(),
            storage,
            tokens,
            stopped.clone(),
        );
        crate::api::lease::register_leader_handler(&ctx);
        tokio::spawn(crate::plugin::reactor::run(ctx.clone(), raft.reactors()));
        let me = MemberInfo {
            name: config.name.clone(),
            peer_urls: identity.peer_urls.clone(),
            client_urls: config.advertised_client_urls(),
        };
        // Like etcd, publish this member's name and client URLs before serving clients, so
        // a MemberList right after start shows them (bounded: a member that cannot reach the
        // leader yet serves anyway and keeps trying).
        if !publish(&raft, &me, election * 4).await {
            tracing::warn!("could not publish this member's name and client URLs yet; will retry");
        }
        let schedules = Schedules {
            auto_compaction: config.auto_compaction()?,
            corrupt_check: config.corrupt_check_every()?,
        };
        spawn_duties(&mut tasks, &ctx, me, schedules, &stopped);
        crate::metrics::METRICS
            .grpc
            .set_extensive(config.metrics == crate::config::MetricsLevel::Extensive);
        let keepalive = Keepalive {
            interval: config.grpc_keepalive_interval.0,
            timeout: config.grpc_keepalive_timeout.0,
            max_streams: config.max_concurrent_streams,
        };
        let client_addrs = serve_clients(
            &mut tasks,
            &ctx,
            listeners,
            keepalive,
            client_tls.as_ref(),
            &stopped,
        )
        .await?;
        tracing::info!(name = %config.name, member_id = format!("{:x}", identity.member_id), addrs = ?client_addrs, data_dir = %dir.display(), "ready to serve client requests");
        Ok(Server {
            client_addrs,
            stop,
            tasks: tasks.set,
            running: tasks.names,
            raft,
        })
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        self.raft.id()
    }

    /// Waits until a listener fails (an error) or [`Server::shutdown`] is called elsewhere.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok((name, result)) => {
                    self.running.retain(|n| *n != name);
                    result?;
                }
                Err(e) => {
                    return Err(ServerError::Task(e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Stops accepting requests, lets in-flight ones finish (for at most
    /// [`SHUTDOWN_GRACE`]), and stops Raft.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let running = &mut self.running;
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = tasks.join_next().await {
                if let Ok((name, _)) = done {
                    tracing::debug!(task = name, "stopped");
                    running.retain(|n| *n != name);
                }
            }
        })
        .await;
        if drained.is_err() {
            // Everything acknowledged is already durable; what is still running is dropped.
            tracing::warn!(grace = ?SHUTDOWN_GRACE, still_running = ?self.running, "requests still running at shutdown; dropping them");
            self.tasks.abort_all();
        }
        self.raft.shutdown().await;
    }
}

/// The member's tasks while they are being started, with their names.
#[derive(Default)]
struct Tasks {
    set: JoinSet<(&'static str, Result<(), ServerError>)>,
    names: Vec<&'static str>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = Result<(), ServerError>> + Send + 'static,
    ) {
        self.names.push(name);
        self.set.spawn(async move { (name, task.await) });
    }
}

/// The member's listeners, bound before anything else happens.
struct Listeners {
    client: Vec<(String, TcpListener)>,
    http: Vec<(String, TcpListener)>,
    metrics: Vec<(String, TcpListener)>,
    peer: Vec<(String, TcpListener)>,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        Ok(Listeners {
            client: bind_all(&config.client_listen_urls()?).await?,
            http: bind_all(&config.client_http_listen_urls()?).await?,
            metrics: bind_all(&config.metrics_listen_urls()?).await?,
            peer: bind_all(&config.peer_listen_urls()?).await?,
        })
    }
}

/// Opens (creating if need be) the data dir's databases; a data dir another process holds
/// is refused in words.
async fn open_storage(dir: &std::path::Path) -> Result<Storage, ServerError> {
    let data_dir_error = |reason: String| ServerError::DataDir {
        dir: dir.display().to_string(),
        reason,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(data_dir_error(
            "it exists and is not a directory".to_string(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| data_dir_error(e.to_string()))?;
    let db_dir = dir.join("db");
    tokio::task::spawn_blocking(move || Storage::open(&db_dir))
        .await
        .map_err(|e| data_dir_error(e.to_string()))?
        .map_err(|e| match e {
            fjall::Error::Locked => data_dir_error("it is in use by another process".to_string()),
            other => data_dir_error(other.to_string()),
        })
}

/// What every client-facing service shares: Raft, storage, the watch hub, the lessor, and
/// the limits etcd derives from its flags.
fn api_context(
    config: &Config,
    identity: &Identity,
    raft: RaftNode,
    storage: Storage,
    tokens: crate::auth::Tokens,
    stopped: watch::Receiver<bool>,
) -> Arc<ApiContext> {
    let election = Duration::from_millis(config.election_timeout);
    let hub = crate::watch::EventHub::start(storage.clone(), raft.subscribe(), stopped.clone());
    Arc::new(ApiContext {
        hub,
        stopping: stopped,
        lessor: Arc::new(crate::lease::Lessor::new(
            identity.member_id,
            crate::wall_clock_ms(),
            config.experimental_lease_checkpoint_interval.0,
        )),
        auth: raft.auth(),
        alarms: raft.alarms(),
        quota: Arc::new(crate::alarm::Quota::new(config.quota_backend_bytes)),
        policy_reads: raft.policy_reads(),
        watch_filters: raft.watch_filters(),
        tokens,
        client_cert_auth: config.client_cert_auth,
        // Half the cores (at least one) may hash passwords at once.
        bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        )),
        raft,
        storage,
        cluster_id: identity.cluster_id,
        member_id: identity.member_id,
        cluster_token: identity.cluster_token.clone(),
        limits: Limits {
            max_request_bytes: config.max_request_bytes as usize,
            max_txn_ops: config.max_txn_ops as usize,
            // etcd: 5 s plus two election timeouts.
            request_timeout: Duration::from_secs(5) + election * 2,
            // etcd: ceil(1.5 x election timeout), in seconds.
            min_lease_ttl_secs: (3 * config.election_timeout / 2).div_ceil(1000) as i64,
            watch_progress_notify_interval: config.watch_progress_notify_interval.0,
            election_timeout: election,
            bcrypt_cost: config.bcrypt_cost,
        },
    })
}

/// The member's background duties: publishing itself and noticing its removal, counting
/// leader changes, purging the log, and the lessor.
fn spawn_duties(
    tasks: &mut Tasks,
    ctx: &Arc<ApiContext>,
    me: MemberInfo,
    schedules: Schedules,
    stopped: &watch::Receiver<bool>,
) {
    let raft = &ctx.raft;
    tasks.spawn(
        "membership duties",
        membership_duties(raft.clone(), me, stopped.clone()),
    );
    let (counter, stop) = (raft.clone(), stopped.clone());
    tasks.spawn("metrics follower", async move {
        counter.follow_for_metrics(stop).await;
        Ok(())
    });
    let (purger, stop) = (raft.clone(), stopped.clone());
    tasks.spawn("log purge", async move {
        purger.purge_duties(stop).await;
        Ok(())
    });
    let (quota_ctx, stop) = (ctx.clone(), stopped.clone());
    tasks.spawn("quota sampler", async move {
        measure_quota(quota_ctx, stop).await;
        Ok(())
    });
    if let Some(every) = schedules.corrupt_check {
        let (check_ctx, stop) = (ctx.clone(), stopped.clone());
        tasks.spawn("corruption check", async move {
            check_corruption(check_ctx, every, stop).await;
            Ok(())
        });
    }
    if let Some(policy) = schedules.auto_compaction {
        let (compact_ctx, stop) = (ctx.clone(), stopped.clone());
        tasks.spawn("auto-compaction", async move {
            auto_compact(compact_ctx, policy, stop).await;
            Ok(())
        });
    }
    let lessor_ctx = ctx.clone();
    tasks.spawn("lessor", async move {
        crate::api::lease::run_lessor(lessor_ctx).await;
        Ok(())
    });
}

/// The periodic duties the flags turn on.
struct Schedules {
    auto_compaction: Option<crate::compactor::Policy>,
    corrupt_check: Option<Duration>,
}

/// `--experimental-initial-corrupt-check`: compares this member's HashKV with its peers'
/// before it serves (`corrupt.rs`); a mismatch stops the start.
async fn initial_corrupt_check(raft: &RaftNode, storage: &Storage) -> Result<(), ServerError> {
    let found = crate::corrupt::compare(raft, storage)
        .await
        .map_err(|e| ServerError::Corrupt(format!("cannot hash this member's history: {e}")))?;
    for (member, why) in &found.skipped {
        tracing::warn!(member = format!("{member:x}"), reason = %why, "initial corruption check skipped a peer");
    }
    if let Some(first) = found.mismatches.first() {
        for m in &found.mismatches {
            tracing::error!(%m, "initial corruption check: history differs");
        }
        return Err(ServerError::Corrupt(first.to_string()));
    }
    tracing::info!(agreed = found.agreed, "initial corruption check passed");
    Ok(())
}

/// `--experimental-corrupt-check-time`: while this member leads, compares its HashKV with
/// every follower's at that interval, and raises a CORRUPT alarm for each that differs.
async fn check_corruption(
    ctx: Arc<ApiContext>,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    use crate::alarm::{AlarmAction, AlarmKind};
    use crate::state_machine::Command;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if !ctx.raft.status().is_leader {
            continue;
        }
        let found = match crate::corrupt::compare(&ctx.raft, &ctx.storage).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "corruption check could not hash this member");
                continue;
            }
        };
        if found.agreed + found.mismatches.len() > 0 {
            crate::metrics::METRICS.corruption_checks.inc();
        }
        for m in found.mismatches {
            tracing::error!(%m, "corruption check: history differs; raising the CORRUPT alarm");
            let raise = Command::Alarm {
                action: AlarmAction::Activate,
                member: m.member,
                kind: AlarmKind::Corrupt,
            };
            if let Err(e) = ctx.propose(raise).await {
                tracing::warn!(error = %e.message(), "could not raise the CORRUPT alarm");
            }
        }
    }
}

/// Auto-compaction (`compactor.rs`): while this member leads, ticks the compactor and proposes
/// the compactions it decides, as the member's own commands. A member that stops leading
/// drops its samples; the next leader starts afresh, as etcd's compactor pauses and resumes.
async fn auto_compact(
    ctx: Arc<ApiContext>,
    policy: crate::compactor::Policy,
    mut stopped: watch::Receiver<bool>,
) {
    use crate::mvcc::{CompactRequest, MvccError, WriteRequest};
    use crate::state_machine::{Command, CommandResponse};
    let started = std::time::Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut compactor: Option<crate::compactor::Compactor> = None;
    let every = crate::compactor::Compactor::new(policy, 0).tick_every();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        if !ctx.raft.status().is_leader {
            compactor = None;
            continue;
        }
        let compactor =
            compactor.get_or_insert_with(|| crate::compactor::Compactor::new(policy, now_ms()));
        let revision = ctx.raft.subscribe().borrow().current;
        let Some(target) = compactor.tick(now_ms(), revision) else {
            continue;
        };
        let compact = Command::Kv(WriteRequest::Compact(CompactRequest {
            revision: target,
            physical: false,
        }));
        match ctx.propose(compact).await {
            Ok(CommandResponse::Kv(Ok(_) | Err(MvccError::Compacted))) => {
                tracing::info!(revision = target, "auto-compacted");
                compactor.compacted(now_ms(), target);
            }
            Ok(other) => {
                tracing::warn!(revision = target, response = ?other, "auto-compaction refused")
            }
            Err(e) => {
                tracing::warn!(revision = target, error = %e.message(), "auto-compaction failed; will retry")
            }
        }
    }
}

/// Measures the state database and the free disk space every `alarm::SAMPLE_EVERY`, for the
/// quota check (`ApiContext::check_quota`), until the member stops. A disk nearly full raises
/// this member's NOSPACE alarm at once, whoever is writing: the log and the state of every
/// member grow with the cluster's writes, not only with the writes this member receives.
async fn measure_quota(ctx: Arc<ApiContext>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::alarm::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let (storage, quota) = (ctx.storage.clone(), ctx.quota.clone());
        let Ok(free) = tokio::task::spawn_blocking(move || quota.measure(&storage)).await else {
            continue;
        };
        let raised = ctx
            .alarms
            .read()
            .expect("alarms lock poisoned")
            .list(Some(crate::alarm::AlarmKind::NoSpace))
            .contains(&(ctx.member_id, crate::alarm::AlarmKind::NoSpace));
        if free < crate::alarm::LOW_DISK_BYTES && !raised {
            tracing::warn!(
                free_bytes = free,
                "the data dir's disk is nearly full; raising the NOSPACE alarm"
            );
            let raise = crate::state_machine::Command::Alarm {
                action: crate::alarm::AlarmAction::Activate,
                member: ctx.member_id,
                kind: crate::alarm::AlarmKind::NoSpace,
            };
            if let Err(e) = ctx.propose(raise).await {
                tracing::warn!(error = %e.message(), "could not raise the NOSPACE alarm");
            }
        }
    }
}

/// Serves clients on every client, HTTP and metrics listener; returns the client addresses.
async fn serve_clients(
    tasks: &mut Tasks,
    ctx: &Arc<ApiContext>,
    listeners: Listeners,
    keepalive: Keepalive,
    tls: Option<&Arc<crate::net::tls::ServerTls>>,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<std::net::SocketAddr>, ServerError> {
    // Each `https://` URL is served over TLS.
    let tls_for = |url: &str| tls.filter(|_| url.starts_with("https://")).cloned();
    // etcd serves gRPC and HTTP on the client URLs, unless HTTP has URLs of its own.
    let client_serves = if listeners.http.is_empty() {
        Serves::GrpcAndHttp
    } else {
        Serves::Grpc
    };
    let mut client_addrs = Vec::new();
    for (url, listener) in listeners.client {
        client_addrs.push(listener.local_addr().map_err(|e| NetError::Listen {
            url: url.clone(),
            reason: e.to_string(),
        })?);
        let router = client_router(ctx, client_serves).await;
        let tls = tls_for(&url);
        let serve = serve_client(url, listener, router, keepalive, tls, stopped.clone());
        tasks.spawn("client listener", async move { Ok(serve.await?) });
    }
    for (serves, listeners) in [
        (Serves::Http, listeners.http),
        (Serves::Metrics, listeners.metrics),
    ] {
        for (url, listener) in listeners {
            let router = client_router(ctx, serves).await;
            let tls = tls_for(&url);
            let serve = serve_client(url, listener, router, keepalive, tls, stopped.clone());
            tasks.spawn("http listener", async move { Ok(serve.await?) });
        }
    }
    Ok(client_addrs)
}

/// Decides who this member is and how it enters its cluster. A data dir that has entered a
/// cluster keeps the identity stored in it (the `--initial-*` flags are then ignored, as etcd
/// ignores them); an empty one founds a cluster (`new`) or joins one (`existing`), and the
/// identity it gets is stored before Raft starts.
async fn enter_cluster(
    config: &Config,
    storage: &Storage,
    peer_tls: Option<Arc<crate::net::tls::ClientTls>>,
) -> Result<(Identity, Bootstrap), ServerError> {
    let data_dir_error = |reason: String| ServerError::DataDir {
        dir: config.data_dir().display().to_string(),
        reason,
    };
    if let Some(identity) = Identity::load(storage).map_err(|e| data_dir_error(e.to_string()))? {
        if identity.name != config.name {
            return Err(data_dir_error(format!(
                "it belongs to member {:?} ({:x}), not --name {:?}; start it with --name {:?}, \
                 or give this member a data dir of its own",
                identity.name, identity.member_id, config.name, identity.name
            )));
        }
        if config.force_new_cluster {
            let me = MemberInfo {
                name: identity.name.clone(),
                peer_urls: identity.peer_urls.clone(),
                client_urls: config.advertised_client_urls(),
            };
            return Ok((identity, Bootstrap::ForceNew(me)));
        }
        // A data dir made by `snapshot restore` founds its cluster (openraft initializes only
        // a member that has never been initialized, so later starts just resume).
        if let Some(members) =
            crate::identity::founding(storage).map_err(|e| data_dir_error(e.to_string()))?
        {
            return Ok((identity, Bootstrap::New(members)));
        }
        // A founding member that stopped before Raft initialized is brought in by the others.
        return Ok((identity, Bootstrap::Join));
    }
    let member_id = config.member_id();
    let initial = config.initial_members()?;
    let (cluster_id, bootstrap) = if config.initial_cluster_state == "new" {
        let members = crate::identity::founding_members(&initial, &config.initial_cluster_token);
        let ids: Vec<u64> = members.keys().copied().collect();
        (crate::identity::cluster_id(&ids), Bootstrap::New(members))
    } else {
        let others: Vec<String> = initial
            .iter()
            .filter(|(name, _)| *name != config.name)
            .flat_map(|(_, urls)| urls.clone())
            .collect();
        let join_error = |reason: String| ServerError::Join { reason };
        // The member that answers may not have applied the `member add` yet (it was
        // committed, but this one lags): ask again for a while before giving up.
        let asked = std::time::Instant::now();
        let reply = loop {
            let reply = crate::raft::hello(member_id, &others, peer_tls.clone(), JOIN_PATIENCE)
                .await
                .map_err(|e| join_error(format!("no member of the cluster answered ({e})")))?;
            let listed = reply.members.iter().any(|m| m.id == member_id);
            if listed || asked.elapsed() >= MEMBER_LIST_PATIENCE {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !reply.members.iter().any(|m| m.id == member_id) {
            return Err(join_error(format!(
                "this member ({member_id:x}) is not in the cluster's member list; add it first with `etcdctl member add {} --peer-urls={}`",
                config.name,
                config.initial_advertise_peer_urls.join(",")
            )));
        }
        (reply.cluster_id, Bootstrap::Join)
    };
    let identity = Identity {
        name: config.name.clone(),
        member_id,
        peer_urls: config.initial_advertise_peer_urls.clone(),
        cluster_id,
        cluster_token: config.initial_cluster_token.clone(),
    };
    identity
        .save(storage)
        .map_err(|e| data_dir_error(e.to_string()))?;
    Ok((identity, bootstrap))
}

/// Where this member's attributes stand after one attempt to record them.
enum Published {
    Yes,
    /// The membership does not list this member (not yet added, or removed).
    Unlisted,
    /// Listed with other attributes; the change did not go through (yet).
    Pending,
}

/// Records this member's name and URLs in the membership if they differ from `me` (etcd
/// publishes its attributes the same way): `member add` knows only peer URLs, and founding
/// members know only each other's names and peer URLs.
///
/// Peer URLs are the membership's to decide (`member update` changes them), so the ones
/// recorded there are kept.
async fn publish_step(raft: &RaftNode, me: &MemberInfo) -> Published {
    match raft.members().into_iter().find(|m| m.id == raft.id()) {
        None => Published::Unlisted,
        Some(m) if m.info.name == me.name && m.info.client_urls == me.client_urls => Published::Yes,
        Some(m) => {
            let change = MembershipChange::Publish {
                id: raft.id(),
                info: MemberInfo {
                    peer_urls: m.info.peer_urls,
                    ..me.clone()
                },
            };
            match raft.change_members(change).await {
                Ok(_) => Published::Yes,
                Err(e) => {
                    tracing::debug!(error = %e, "publishing this member's attributes; will retry");
                    Published::Pending
                }
            }
        }
    }
}

/// Tries (until `limit`) to record this member's attributes; true once they are there.
async fn publish(raft: &RaftNode, me: &MemberInfo, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let left = deadline - tokio::time::Instant::now();
        if let Ok(Published::Yes) = tokio::time::timeout(left, publish_step(raft, me)).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// This member's duties toward the membership, for as long as it runs:
/// - keep its attributes published (see [`publish_step`]);
/// - stop when it has been removed from the cluster, as etcd does, rather than linger as a
///   member nobody replicates to.
async fn membership_duties(
    raft: RaftNode,
    me: MemberInfo,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut listed_once = false;
    let mut round = 0u64;
    loop {
        round += 1;
        let removed = match publish_step(&raft, &me).await {
            Published::Unlisted => listed_once,
            Published::Yes | Published::Pending => {
                listed_once = true;
                // Every few seconds, ask a peer whether this member is still in the cluster.
                round.is_multiple_of(REMOVAL_CHECK_ROUNDS) && raft.removed_by_peers().await
            }
        };
        let pause = if removed {
            // This member may be the one that answers the MemberRemove that removed it (a
            // leader removing itself): give that answer time to leave, as etcd does.
            REMOVED_STOP_DELAY
        } else {
            Duration::from_millis(500)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|s| *s) => return Ok(()),
        }
        if removed {
            return Err(ServerError::Removed);
        }
    }
}
