//! Starts a member: opens storage, starts Raft, binds the client listeners and serves the
//! gRPC services until shutdown.

use std::sync::Arc;
use std::time::Duration;

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

use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::watch::WatchService;
use crate::api::{ApiContext, Limits};
use crate::config::{Config, ConfigError};
use crate::raft::{MemberInfo, RaftConfig, RaftNode, StartError};
use crate::storage::Storage;

/// gRPC accepts this much more than `--max-request-bytes`, as etcd does, so that an oversized
/// request reaches the handler and gets etcd's "request is too large" rather than a transport
/// error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

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
    #[error("serving {url}: {reason}")]
    Serve { url: String, reason: String },
}

/// A running member. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub client_addrs: Vec<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<(), ServerError>>,
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
        let member_id = config.member_id();
        let me = MemberInfo {
            name: config.name.clone(),
            peer_urls: config.initial_advertise_peer_urls.clone(),
            client_urls: config.advertise_client_urls.clone(),
        };
        let raft_config = RaftConfig {
            heartbeat_interval_ms: config.heartbeat_interval,
            election_timeout_ms: config.election_timeout,
            snapshot_count: config.snapshot_count,
            ..RaftConfig::default()
        };
        // Bind before starting Raft so a busy port fails fast and cleanly.
        let mut listeners = Vec::new();
        for url in &listen {
            let listener = TcpListener::bind((url.host.as_str(), url.port))
                .await
                .map_err(|e| ServerError::Listen {
                    url: url.url.clone(),
                    reason: e.to_string(),
                })?;
            listeners.push((url.url.clone(), listener));
        }
        let raft = RaftNode::start(member_id, me, storage.clone(), &dir, &raft_config).await?;
        let election = Duration::from_millis(config.election_timeout);
        if !raft.wait_for_leader(election * 4).await {
            tracing::warn!(
                "no leader yet; serving anyway, writes fail with \"no leader\" until one is elected"
            );
        }
        let (stop, stopped) = watch::channel(false);
        let ctx = Arc::new(ApiContext {
            stopping: stopped.clone(),
            lessor: Arc::new(crate::lease::Lessor::new(member_id)),
            raft: raft.clone(),
            storage,
            cluster_id: config.cluster_id(&[member_id]),
            member_id,
            limits: Limits {
                max_request_bytes: config.max_request_bytes as usize,
                max_txn_ops: config.max_txn_ops as usize,
                // etcd: 5 s plus two election timeouts.
                request_timeout: Duration::from_secs(5) + election * 2,
                // etcd: ceil(1.5 x election timeout), in seconds.
                min_lease_ttl_secs: (3 * config.election_timeout / 2).div_ceil(1000) as i64,
                watch_progress_notify_interval: config.watch_progress_notify_interval.0,
            },
        });
        let mut tasks = JoinSet::new();
        let mut client_addrs = Vec::new();
        for (url, listener) in listeners {
            client_addrs.push(listener.local_addr().map_err(|e| ServerError::Listen {
                url: url.clone(),
                reason: e.to_string(),
            })?);
            tasks.spawn(serve_client(url, listener, ctx.clone(), stopped.clone()));
        }
        let lessor_ctx = ctx.clone();
        tasks.spawn(async move {
            crate::api::lease::run_lessor(lessor_ctx).await;
            Ok(())
        });
        tracing::info!(name = %config.name, member_id = format!("{member_id:x}"), addrs = ?client_addrs, data_dir = %dir.display(), "ready to serve client requests");
        Ok(Server {
            client_addrs,
            stop,
            tasks,
            raft,
        })
    }

    /// Waits until a listener fails (an error) or [`Server::shutdown`] is called elsewhere.
    pub async fn wait(&mut self) -> Result<(), ServerError> {
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
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

    /// Stops accepting requests, lets in-flight ones finish, and stops Raft.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.raft.shutdown().await;
    }
}

async fn serve_client(
    url: String,
    listener: TcpListener,
    ctx: Arc<ApiContext>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let max_decoding = ctx.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let kv = KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(max_decoding);
    let maintenance = MaintenanceServer::new(MaintenanceService::new(ctx.clone()))
        .max_decoding_message_size(max_decoding);
    tonic::transport::Server::builder()
        .add_service(kv)
        .add_service(maintenance)
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
        .add_service(health)
        .serve_with_incoming_shutdown(
            // Small request/response messages: Nagle's algorithm would hold responses back.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
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
