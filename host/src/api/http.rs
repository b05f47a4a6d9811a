//! The plain-HTTP side of the client port: `/health`, `/livez`, `/readyz`, `/version`,
//! `/metrics`, the JSON gateway (`gateway.rs`) and the answer to unknown paths.
//!
//! etcd serves all of these on the same listener as gRPC; `--listen-client-http-urls` and
//! `--listen-metrics-urls` split them off (see `server.rs`).

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;

use super::Context;
use super::maintenance::ETCD_VERSION;
use crate::metrics::{CONTENT_TYPE, METRICS, TextEncoder};
use crate::mvcc::RangeRequest;

/// Everything but gRPC: the gateway, health, version and metrics.
pub fn routes(ctx: &Context) -> Router {
    super::gateway::routes(ctx)
        .merge(probes(ctx))
        .layer(axum::middleware::map_response(allow_cors))
}

/// What a `--listen-metrics-urls` listener serves: metrics and the health probes.
pub fn metrics_routes(ctx: &Context) -> Router {
    probes(ctx).layer(axum::middleware::map_response(allow_cors))
}

fn probes(ctx: &Context) -> Router {
    let c = ctx.clone();
    let health = get(move |uri: Uri| {
        let ctx = c.clone();
        async move { health(&ctx, &uri).await }
    });
    let c = ctx.clone();
    let metrics = get(move || {
        let ctx = c.clone();
        async move { metrics(&ctx).await }
    });
    let mut router = Router::new()
        .route("/health", health)
        .route("/metrics", metrics)
        .route("/version", get(version));
    for probe in [Probe::Livez, Probe::Readyz] {
        let c = ctx.clone();
        let all = get(move |uri: Uri| {
            let ctx = c.clone();
            async move { probe.answer(&ctx, &uri, None).await }
        });
        let c = ctx.clone();
        let one = get(move |uri: Uri, Path(check): Path<String>| {
            let ctx = c.clone();
            async move { probe.answer(&ctx, &uri, Some(&check)).await }
        });
        router = router
            .route(probe.path(), all)
            .route(&format!("{}/{{check}}", probe.path()), one);
    }
    router
}

/// etcd's gateway answers browsers' cross-origin requests on every HTTP path.
async fn allow_cors(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    response
}

/// Answers CORS preflights (`OPTIONS`) on every HTTP path with 200, as etcd does.
pub async fn preflight(request: Request, next: axum::middleware::Next) -> Response {
    if request.method() == axum::http::Method::OPTIONS {
        return allow_cors(Response::new(Body::empty())).await;
    }
    next.run(request).await
}

/// Unknown paths. A gRPC client gets gRPC's `Unimplemented`; an HTTP client gets a 404 as
/// from etcd: grpc-gateway's `Not Found` under its prefixes, Go's `404 page not found`
/// elsewhere.
pub async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let mut response = Response::new(Body::empty());
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            "grpc-status",
            HeaderValue::from(tonic::Code::Unimplemented as i32),
        );
        return response;
    }
    let path = request.uri().path();
    let body = if path.starts_with("/v3/") || path.starts_with("/v3beta/") {
        "Not Found\n"
    } else {
        "404 page not found\n"
    };
    let response = text(StatusCode::NOT_FOUND, body.to_string());
    allow_cors(response).await
}

fn text(code: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(code: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn query(uri: &Uri) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(k.to_string()).or_default().push(v.to_string());
    }
    out
}

/// One probe: a read of one key, linearizable (through a ReadIndex) or serializable (local).
async fn read_check(ctx: &Context, serializable: bool) -> Result<(), String> {
    ctx.read(serializable, |view| {
        view.range(&RangeRequest {
            key: b"health".to_vec(),
            keys_only: true,
            limit: 1,
            ..Default::default()
        })
    })
    .await
    .map(|_| ())
    .map_err(|status| status.message().to_string())
}

/// `GET /health`: etcd's check. Alarms first (any active alarm whose type `?exclude=` does not
/// name: `ALARM NOSPACE`), then a leader unless `?serializable=true`, then a read.
async fn health(ctx: &Context, uri: &Uri) -> Response {
    let q = query(uri);
    let serializable = q
        .get("serializable")
        .is_some_and(|v| v.iter().any(|s| s == "true"));
    let excluded = q.get("exclude").cloned().unwrap_or_default();
    let alarm = ctx
        .alarms
        .read()
        .expect("alarms lock poisoned")
        .list(None)
        .into_iter()
        .map(|(_, kind)| kind.name())
        .find(|name| !excluded.iter().any(|e| e == name));
    let verdict = if let Some(name) = alarm {
        Err(format!("ALARM {name}"))
    } else if !serializable && ctx.raft.status().leader.is_none() {
        Err("RAFT NO LEADER".to_string())
    } else {
        read_check(ctx, serializable)
            .await
            .map_err(|e| format!("RANGE ERROR:{e}"))
    };
    match verdict {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"health": "true"})),
        Err(reason) => {
            tracing::warn!(%reason, "serving /health false");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"health": "false", "reason": reason}),
            )
        }
    }
}

/// Kubernetes-style probes, as etcd 3.6 has them.
#[derive(Clone, Copy)]
enum Probe {
    Livez,
    Readyz,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Livez => "/livez",
            Probe::Readyz => "/readyz",
        }
    }

    fn checks(self) -> &'static [&'static str] {
        match self {
            Probe::Livez => &["serializable_read"],
            Probe::Readyz => &[
                "data_corruption",
                "serializable_read",
                "linearizable_read",
                "non_learner",
            ],
        }
    }

    /// Runs every check (or only `only`), minus `?exclude=`; `?verbose` lists each one.
    async fn answer(self, ctx: &Context, uri: &Uri, only: Option<&str>) -> Response {
        let q = query(uri);
        let verbose = q.contains_key("verbose");
        let excluded: Vec<&str> = q
            .get("exclude")
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let name = &self.path()[1..];
        let checks: Vec<&str> = match only {
            Some(check) if self.checks().contains(&check) => vec![check],
            Some(_) => return text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
            None => self.checks().to_vec(),
        };
        let mut report = String::new();
        let mut failed = false;
        for check in checks {
            if excluded.contains(&check) {
                report.push_str(&format!("[+]{check} excluded: ok\n"));
                continue;
            }
            match run_check(ctx, check).await {
                Ok(()) => report.push_str(&format!("[+]{check} ok\n")),
                Err(e) => {
                    failed = true;
                    report.push_str(&format!("[-]{check} failed: {e}\n"));
                }
            }
        }
        if failed {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{report}{name} check failed\n"),
            )
        } else if verbose {
            text(StatusCode::OK, format!("{report}{name} check passed\n"))
        } else {
            text(StatusCode::OK, "ok\n".into())
        }
    }
}

async fn run_check(ctx: &Context, check: &str) -> Result<(), String> {
    match check {
        // etcd 3.6's check: no CORRUPT alarm is active.
        "data_corruption" => {
            let alarms = ctx.alarms.read().expect("alarms lock poisoned");
            if alarms.has(crate::alarm::AlarmKind::Corrupt) {
                Err("alarm activated: CORRUPT".into())
            } else {
                Ok(())
            }
        }
        "serializable_read" => read_check(ctx, true).await,
        "linearizable_read" => read_check(ctx, false).await,
        "non_learner" if ctx.raft.status().is_learner => Err("this member is a learner".into()),
        _ => Ok(()),
    }
}

/// `GET /version`: etcd's two fields, 3.6's `storage`, and Cairn's own version.
async fn version() -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "etcdserver": ETCD_VERSION,
            "etcdcluster": cluster_version(),
            "storage": ETCD_VERSION,
            "cairn": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// etcd reports the cluster version as major.minor.0.
fn cluster_version() -> String {
    let mut parts = ETCD_VERSION.split('.');
    let major = parts.next().unwrap_or("3");
    let minor = parts.next().unwrap_or("0");
    format!("{major}.{minor}.0")
}

/// `GET /metrics`: the process's instruments and this member's Raft and storage state.
async fn metrics(ctx: &Context) -> Response {
    let storage = ctx.storage.clone();
    let sizes =
        tokio::task::spawn_blocking(move || (storage.disk_space(), storage.disk_space_in_use()))
            .await
            .ok();
    let raft = ctx.raft.status();
    let mut out = TextEncoder::default();
    member_metrics(ctx, &raft, &mut out);
    raft_metrics(&raft, &mut out);
    storage_metrics(sizes, ctx.quota.limit, &mut out);
    peer_metrics(ctx, &mut out);
    plugin_metrics(ctx, &mut out).await;
    METRICS.encode(&mut out);
    let mut response = Response::new(Body::from(out.finish()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// 1.0 or 0.0.
fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Who this member is, and whether it leads.
fn member_metrics(ctx: &Context, raft: &crate::raft::RaftStatus, out: &mut TextEncoder) {
    out.gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        flag(raft.leader.is_some()),
    );
    out.gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        flag(raft.is_leader),
    );
    out.gauge(
        "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        flag(raft.is_learner),
    );
    out.labeled_gauge(
        "etcd_server_id",
        "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
        &[("server_id", &format!("{:x}", ctx.member_id))],
        1.0,
    );
    out.labeled_gauge(
        "etcd_server_version",
        "Which version is running. 1 for 'server_version' label with current version.",
        &[("server_version", ETCD_VERSION)],
        1.0,
    );
    out.labeled_gauge(
        "cairn_build_info",
        "Which Cairn is running. 1 for the 'version' label with the current version.",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
}

/// The Raft log's commit, apply and purge points.
fn raft_metrics(raft: &crate::raft::RaftStatus, out: &mut TextEncoder) {
    out.gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed (the Raft commit index).",
        raft.committed_index as f64,
    );
    out.gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied (the applied index).",
        raft.applied_index as f64,
    );
    out.gauge(
        "cairn_raft_log_purged_index",
        "The last Raft log index purged from this member's log (0 before the first purge).",
        raft.purged_index as f64,
    );
}

/// The database's size and quota.
fn storage_metrics(sizes: Option<(u64, u64)>, quota: Option<u64>, out: &mut TextEncoder) {
    if let Some((total, in_use)) = sizes {
        out.gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            total as f64,
        );
        out.gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            in_use as f64,
        );
    }
    out.gauge(
        "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.",
        quota.map_or(0.0, |q| q as f64),
    );
}

/// On the leader: which members answer heartbeats.
fn peer_metrics(ctx: &Context, out: &mut TextEncoder) {
    // etcd counts a peer active while its connection is up; Cairn's leader counts a peer
    // active while it acknowledges heartbeats within the leader lease (followers report none).
    let local = format!("{:x}", ctx.member_id);
    out.header(
        "etcd_network_active_peers",
        "The current number of active peer connections.",
        "gauge",
    );
    for (id, live) in ctx.raft.peer_liveness() {
        out.sample(
            "etcd_network_active_peers",
            &[("Local", &local), ("Remote", &format!("{id:x}"))],
            flag(live),
        );
    }
}

/// Per-binding counters from the registry: the same on every member, since apply keeps them.
async fn plugin_metrics(ctx: &Context, out: &mut TextEncoder) {
    let storage = ctx.storage.clone();
    let Ok(Ok(registry)) =
        tokio::task::spawn_blocking(move || crate::plugin::Registry::load(&storage)).await
    else {
        return;
    };
    type Counter = fn(&crate::plugin::BindingStats) -> u64;
    let series: [(&str, &str, Counter); 4] = [
        (
            "cairn_plugin_calls_total",
            "Plugin calls, per binding.",
            |s| s.calls,
        ),
        (
            "cairn_plugin_denials_total",
            "Writes a guard denied, per binding.",
            |s| s.denials,
        ),
        (
            "cairn_plugin_failures_total",
            "Calls that trapped, ran out of fuel or hit a limit, per binding.",
            |s| s.failures,
        ),
        (
            "cairn_plugin_fuel_used_total",
            "Fuel charged, per binding.",
            |s| s.fuel_used,
        ),
    ];
    for (name, help, get) in series {
        out.header(name, help, "counter");
        for b in registry.bindings.values() {
            out.sample(
                name,
                &[("binding", &b.name), ("plugin", &b.plugin)],
                get(&b.stats) as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_versions() {
        let uri: Uri = "/health?serializable=true&exclude=NOSPACE&exclude=CORRUPT&verbose"
            .parse()
            .expect("uri");
        let q = query(&uri);
        assert_eq!(q["serializable"], ["true"]);
        assert_eq!(q["exclude"], ["NOSPACE", "CORRUPT"]);
        assert_eq!(q["verbose"], [""]);
        assert!(cluster_version().ends_with(".0"));
    }
}
