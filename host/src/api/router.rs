//! What a client-side listener serves: etcd's gRPC services (each with the request size
//! limit), gRPC health, and the HTTP routes (gateway, probes, version, metrics), behind the
//! interceptor every gRPC call passes. `net` serves the router this builds.

use std::sync::Arc;

use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;

use super::auth::AuthService;
use super::cluster::ClusterService;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use super::watch_wire::WatchServer;
use super::{ApiContext, GRPC_OVERHEAD_BYTES};

/// What a client-side listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
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
pub async fn client_router(ctx: &Arc<ApiContext>, serves: Serves) -> axum::Router {
    let mut router = axum::Router::new();
    if matches!(serves, Serves::GrpcAndHttp | Serves::Grpc) {
        router = router.merge(grpc_routes(ctx).await.into_axum_router());
    }
    match serves {
        Serves::GrpcAndHttp | Serves::Http => router = router.merge(super::http::routes(ctx)),
        Serves::Metrics => router = router.merge(super::http::metrics_routes(ctx)),
        Serves::Grpc => {}
    }
    let router = router.fallback(super::http::not_found);
    let router = if serves == Serves::Grpc {
        router
    } else {
        router.layer(axum::middleware::from_fn(super::http::preflight))
    };
    router.layer(axum::middleware::from_fn_with_state(
        ctx.clone(),
        super::intercept_grpc,
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
        .add_service(WatchServer::new(ctx.clone(), max_decoding))
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
            AuthServer::new(AuthService::new(ctx.clone())).max_decoding_message_size(max_decoding),
        )
        .add_service(
            cairn_proto::cairn_plugin::plugin_server::PluginServer::new(
                super::plugin::PluginService::new(ctx.clone()),
            )
            .max_decoding_message_size(max_decoding),
        )
        .add_service(health);
    routes.routes()
}
