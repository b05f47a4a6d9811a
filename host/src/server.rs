//! Starts a member: opens storage, starts Raft, binds the client listeners and serves the
//! gRPC services until shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairn_raft::peer_server::PeerServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::api::{ApiContext, GRPC_OVERHEAD_BYTES, Limits};
use crate::config::ListenUrl;
use crate::config::{Config, ConfigError};
use crate::identity::Identity;
use crate::raft::transport::peers::MAX_PEER_MESSAGE_BYTES;
use crate::raft::transport::service::PeerService;
use crate::raft::{
    Bootstrap, MemberInfo, MembershipChange, RaftConfig, RaftNode, StartError, StartParams,
};
use crate::storage::Storage;

/// How long a stopping member lets in-flight requests and streams finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping member keeps its peer connections for calls in flight.
const PEER_DRAIN: Duration = Duration::from_millis(500);
/// Rounds (of 500 ms) between asking a peer whether this member was removed.
const REMOVAL_CHECK_ROUNDS: u64 = 4;
/// How long a member started with `--initial-cluster-state existing` looks for the cluster.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot use data dir {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("cannot listen on {url}: {reason}")]
    Listen { url: String, reason: String },
    #[error(transparent)]
    Raft(#[from] StartError),
    #[error("cannot join the cluster: {reason}")]
    Join { reason: String },
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    #[error("serving {url}: {reason}")]
    Serve { url: String, reason: String },
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
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        config.validate()?;
        let listen = config.client_listen_urls()?;
        let dir = config.data_dir();
        let data_dir_error = |reason: String| ServerError::DataDir {
            dir: dir.display().to_string(),
            reason,
        };
        // Bind first: a busy port fails fast, before anything is written to the data dir.
        let listeners = bind_all(&listen).await?;
        let http_listeners = bind_all(&config.client_http_listen_urls()?).await?;
        let metrics_listeners = bind_all(&config.metrics_listen_urls()?).await?;
        let peer_listeners = bind_all(&config.peer_listen_urls()?).await?;
        if dir.exists() && !dir.is_dir() {
            return Err(data_dir_error(
                "it exists and is not a directory".to_string(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| data_dir_error(e.to_string()))?;
        let storage = {
            let db_dir = dir.join("db");
            tokio::task::spawn_blocking(move || Storage::open(&db_dir))
                .await
                .map_err(|e| data_dir_error(e.to_string()))?
                .map_err(|e| match e {
                    fjall::Error::Locked => {
                        data_dir_error("it is in use by another process".to_string())
                    }
                    other => data_dir_error(other.to_string()),
                })?
        };
        let raft_config = RaftConfig {
            heartbeat_interval_ms: config.heartbeat_interval,
            election_timeout_ms: config.election_timeout,
            snapshot_count: config.snapshot_count,
            catchup_entries: config.experimental_snapshot_catchup_entries,
            strict_reconfig_check: config.strict_reconfig_check,
        };
        let (identity, bootstrap) = enter_cluster(&config, &storage).await?;
        let (member_id, cluster_id) = (identity.member_id, identity.cluster_id);
        let raft = RaftNode::start(StartParams {
            id: member_id,
            cluster_id,
            storage: storage.clone(),
            data_dir: &dir,
            config: &raft_config,
            bootstrap,
            fault_injection: config.experimental_fault_injection,
        })
        .await?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Tasks::default();
        // Peers first: the election needs them.
        for (url, listener) in peer_listeners {
            let service = raft.peer_service(dir.join("snap"), stopped.clone());
            tasks.spawn(
                "peer listener",
                serve_peer(url, listener, service, stopped.clone()),
            );
        }
        let election = Duration::from_millis(config.election_timeout);
        if !raft.wait_for_leader(election * 4).await {
            tracing::warn!(
                "no leader yet; serving anyway, writes fail with \"no leader\" until one is elected"
            );
        }
        let hub = crate::watch::EventHub::start(storage.clone(), raft.subscribe(), stopped.clone());
        let ctx = Arc::new(ApiContext {
            hub,
            stopping: stopped.clone(),
            lessor: Arc::new(crate::lease::Lessor::new(
                member_id,
                wall_clock_ms(),
                config.experimental_lease_checkpoint_interval.0,
            )),
            raft: raft.clone(),
            storage,
            cluster_id,
            member_id,
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
            },
        });
        crate::api::lease::register_leader_handler(&ctx);
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
        tasks.spawn(
            "membership duties",
            membership_duties(raft.clone(), me, stopped.clone()),
        );
        {
            let raft = raft.clone();
            let stopped = stopped.clone();
            tasks.spawn("leader change counter", async move {
                raft.count_leader_changes(stopped).await;
                Ok(())
            });
        }
        {
            let raft = raft.clone();
            let stopped = stopped.clone();
            tasks.spawn("log purge", async move {
                raft.purge_duties(stopped).await;
                Ok(())
            });
        }
        // etcd serves gRPC and HTTP on the client URLs, unless HTTP has URLs of its own.
        let client_serves = if http_listeners.is_empty() {
            Serves::GrpcAndHttp
        } else {
            Serves::Grpc
        };
        let keepalive = Keepalive {
            interval: config.grpc_keepalive_interval.0,
            timeout: config.grpc_keepalive_timeout.0,
        };
        let mut client_addrs = Vec::new();
        for (url, listener) in listeners {
            client_addrs.push(listener.local_addr().map_err(|e| ServerError::Listen {
                url: url.clone(),
                reason: e.to_string(),
            })?);
            let router = client_router(&ctx, client_serves).await;
            tasks.spawn(
                "client listener",
                serve_client(url, listener, router, keepalive, stopped.clone()),
            );
        }
        for (serves, listeners) in [
            (Serves::Http, http_listeners),
            (Serves::Metrics, metrics_listeners),
        ] {
            for (url, listener) in listeners {
                let router = client_router(&ctx, serves).await;
                tasks.spawn(
                    "http listener",
                    serve_client(url, listener, router, keepalive, stopped.clone()),
                );
            }
        }
        let lessor_ctx = ctx.clone();
        tasks.spawn("lessor", async move {
            crate::api::lease::run_lessor(lessor_ctx).await;
            Ok(())
        });
        tracing::info!(name = %config.name, member_id = format!("{member_id:x}"), addrs = ?client_addrs, data_dir = %dir.display(), "ready to serve client requests");
        Ok(Server {
            client_addrs,
            stop,
            tasks: tasks.set,
            running: tasks.names,
            raft,
        })
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
                    return Err(ServerError::Serve {
                        url: "client listener".into(),
                        reason: e.to_string(),
                    });
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

/// Binds every URL, failing on the first that cannot be bound.
async fn bind_all(urls: &[ListenUrl]) -> Result<Vec<(String, TcpListener)>, ServerError> {
    let mut listeners = Vec::new();
    for url in urls {
        let listener = TcpListener::bind((url.host.as_str(), url.port))
            .await
            .map_err(|e| ServerError::Listen {
                url: url.url.clone(),
                reason: e.to_string(),
            })?;
        listeners.push((url.url.clone(), listener));
    }
    Ok(listeners)
}

/// Decides who this member is and how it enters its cluster. A data dir that has entered a
/// cluster keeps the identity stored in it (the `--initial-*` flags are then ignored, as etcd
/// ignores them); an empty one founds a cluster (`new`) or joins one (`existing`), and the
/// identity it gets is stored before Raft starts.
async fn enter_cluster(
    config: &Config,
    storage: &Storage,
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
        // A founding member that stopped before Raft initialized is brought in by the others.
        return Ok((identity, Bootstrap::Join));
    }
    let member_id = config.member_id();
    let initial = config.initial_members()?;
    let (cluster_id, bootstrap) = if config.initial_cluster_state == "new" {
        let members: BTreeMap<u64, MemberInfo> = initial
            .iter()
            .map(|(name, urls)| {
                let info = MemberInfo {
                    name: name.clone(),
                    peer_urls: urls.clone(),
                    // Identical on every founding member; each publishes its own later.
                    client_urls: Vec::new(),
                };
                (config.member_id_for(urls), info)
            })
            .collect();
        let ids: Vec<u64> = members.keys().copied().collect();
        (crate::identity::cluster_id(&ids), Bootstrap::New(members))
    } else {
        let others: Vec<String> = initial
            .iter()
            .filter(|(name, _)| *name != config.name)
            .flat_map(|(_, urls)| urls.clone())
            .collect();
        let join_error = |reason: String| ServerError::Join { reason };
        let reply = crate::raft::hello(member_id, &others, JOIN_PATIENCE)
            .await
            .map_err(|e| join_error(format!("no member of the cluster answered ({e})")))?;
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
        match publish_step(&raft, &me).await {
            Published::Unlisted if listed_once => return Err(ServerError::Removed),
            Published::Unlisted => {}
            Published::Yes | Published::Pending => {
                listed_once = true;
                // Every few seconds, ask a peer whether this member is still in the cluster.
                if round.is_multiple_of(REMOVAL_CHECK_ROUNDS) && raft.removed_by_peers().await {
                    return Err(ServerError::Removed);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stopped.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// Serves the peer service until the member stops. Peers hold long-lived streams (the
/// leader's replication and call streams) whose client side stays open after this member ends
/// them, so a graceful drain would wait for the peers rather than for work: after
/// [`PEER_DRAIN`] the connections are simply closed (peers reconnect or give up on their own).
async fn serve_peer(
    url: String,
    listener: TcpListener,
    service: PeerService,
    stopped: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut on_stop = stopped.clone();
    let serve = tonic::transport::Server::builder()
        .add_service(
            PeerServer::new(service)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = on_stop.wait_for(|s| *s).await;
            },
        );
    let mut drained = stopped;
    tokio::select! {
        served = serve => served.map_err(|e| ServerError::Serve {
            url,
            reason: e.to_string(),
        }),
        () = async move {
            let _ = drained.wait_for(|s| *s).await;
            tokio::time::sleep(PEER_DRAIN).await;
        } => Ok(()),
    }
}

/// What a client-side listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serves {
    /// etcd's default client port: gRPC, and HTTP/1.1 (gateway, health, version, metrics).
    GrpcAndHttp,
    /// The client URLs when `--listen-client-http-urls` is set.
    Grpc,
    /// `--listen-client-http-urls`.
    Http,
    /// `--listen-metrics-urls`: metrics and the health probes.
    Metrics,
}

/// The router of one client-side listener. gRPC calls go through etcd's interceptor (counted
/// for `/metrics`, `hasleader` honoured); unknown paths get gRPC's `Unimplemented` or an HTTP
/// 404, as the caller speaks.
async fn client_router(ctx: &Arc<ApiContext>, serves: Serves) -> axum::Router {
    let mut router = axum::Router::new();
    if matches!(serves, Serves::GrpcAndHttp | Serves::Grpc) {
        router = router.merge(grpc_routes(ctx).await.into_axum_router());
    }
    match serves {
        Serves::GrpcAndHttp | Serves::Http => router = router.merge(crate::api::http::routes(ctx)),
        Serves::Metrics => router = router.merge(crate::api::http::metrics_routes(ctx)),
        Serves::Grpc => {}
    }
    let router = router.fallback(crate::api::http::not_found);
    let router = if serves == Serves::Grpc {
        router
    } else {
        router.layer(axum::middleware::from_fn(crate::api::http::preflight))
    };
    router.layer(axum::middleware::from_fn_with_state(
        ctx.clone(),
        crate::api::intercept_grpc,
    ))
}

/// etcd's gRPC services, each accepting requests up to the size limit plus gRPC overhead.
async fn grpc_routes(ctx: &Arc<ApiContext>) -> tonic::service::Routes {
    let max_decoding = ctx.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(
            KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(max_decoding),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            LeaseServer::new(LeaseService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            WatchServer::new(WatchService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            LockServer::new(LockService::new(ctx.clone())).max_decoding_message_size(max_decoding),
        )
        .add_service(
            ElectionServer::new(ElectionService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            cairn_proto::cairn_plugin::plugin_server::PluginServer::new(
                crate::api::plugin::PluginService::new(ctx.clone()),
            )
            .max_decoding_message_size(max_decoding),
        )
        .add_service(health);
    routes.routes()
}

/// How a client connection is kept honest: HTTP/2 pings after `interval` of quiet, and the
/// connection closed when one goes unanswered for `timeout` (etcd's gRPC keepalive flags).
#[derive(Clone, Copy, Debug)]
struct Keepalive {
    interval: Duration,
    timeout: Duration,
}

async fn serve_client(
    url: String,
    listener: TcpListener,
    router: axum::Router,
    keepalive: Keepalive,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(keepalive.interval))
        .http2_keepalive_timeout(Some(keepalive.timeout))
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming_shutdown(
            // Small request/response messages: Nagle's algorithm would hold responses back.
            // Every connection goes through the `:authority` repair for etcd 3.4 clients.
            tokio_stream::StreamExt::map(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                |conn| conn.map(crate::authority::AuthorityRepair::new),
            ),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )
        .await
        .map_err(|e| ServerError::Serve {
            url,
            reason: e.to_string(),
        })
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): seeds lease ids.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
