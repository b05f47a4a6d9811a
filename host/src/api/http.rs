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
use crate::metrics::{CONTENT_TYPE, METRICS, counter_family};
use crate::mvcc::RangeRequest;
use prometheus::proto::MetricFamily;

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
        Ok(()) => {
            METRICS.health_success.inc();
            json(StatusCode::OK, &serde_json::json!({"health": "true"}))
        }
        Err(reason) => {
            METRICS.health_failures.inc();
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
    format!("{}.0", crate::metrics::major_minor(ETCD_VERSION))
}

/// `GET /metrics`: the process's instruments, with this member's Raft, storage and plugin
/// state read now.
async fn metrics(ctx: &Context) -> Response {
    // One scrape at a time: each sets the shared scrape-time gauges, and two interleaved
    // would drop series the other had just reset.
    static SCRAPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _scraping = SCRAPING.lock().await;
    let storage = ctx.storage.clone();
    let read = tokio::task::spawn_blocking(move || {
        let sizes = (storage.disk_space(), storage.disk_space_in_use());
        (sizes, crate::plugin::Registry::load(&storage).ok())
    });
    let keys = live_keys(ctx).await;
    let raft = ctx.raft.status();
    let m = &METRICS;
    m.has_leader.set(raft.leader.is_some().into());
    m.is_leader.set(raft.is_leader.into());
    m.is_learner.set(raft.is_learner.into());
    m.server_id.reset();
    m.server_id
        .with_label_values(&[&format!("{:x}", ctx.member_id)])
        .set(1);
    m.proposals_committed.set(gauge(raft.committed_index));
    m.proposals_applied.set(gauge(raft.applied_index));
    m.purged_index.set(gauge(raft.purged_index));
    m.quota_backend_bytes.set(ctx.quota.limit.map_or(0, gauge));
    if let Some((count, rev, compact_rev)) = keys {
        m.keys.set(count);
        m.current_revision.set(rev);
        m.compact_revision.set(compact_rev);
    }
    // etcd counts a peer active while its connection is up; Cairn's leader counts a peer
    // active while it acknowledges heartbeats within the leader lease (followers report none).
    let local = format!("{:x}", ctx.member_id);
    m.active_peers.reset();
    for (id, live) in ctx.raft.peer_liveness() {
        m.active_peers
            .with_label_values(&[&local, &format!("{id:x}")])
            .set(live.into());
    }
    let mut extra = Vec::new();
    if let Ok(((total, in_use), registry)) = read.await {
        for g in &m.db_size {
            g.set(gauge(total));
        }
        m.db_size_in_use.set(gauge(in_use));
        if let Some(registry) = registry {
            extra = plugin_families(&registry);
        }
    }
    let mut response = Response::new(Body::from(m.encode(extra)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// How long a count of the live keys stands for `etcd_debugging_mvcc_keys_total`: counting
/// reads the whole key index, which scrapes (unauthenticated) must not be able to repeat at
/// will.
const KEY_COUNT_STANDS: std::time::Duration = std::time::Duration::from_secs(5);

/// The live keys, the revision and the compaction revision, counted at most once per
/// [`KEY_COUNT_STANDS`] per member; `None` if the store cannot be read.
async fn live_keys(ctx: &Context) -> Option<(i64, i64, i64)> {
    type Counted = (std::time::Instant, (i64, i64, i64));
    static LAST: std::sync::Mutex<BTreeMap<u64, Counted>> = std::sync::Mutex::new(BTreeMap::new());
    let fresh = crate::metrics::lock(&LAST)
        .get(&ctx.member_id)
        .filter(|(at, _)| at.elapsed() < KEY_COUNT_STANDS)
        .map(|(_, counted)| *counted);
    if fresh.is_some() {
        return fresh;
    }
    let counted = ctx
        .read(true, |view| {
            let all = view.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                count_only: true,
                ..Default::default()
            })?;
            Ok((all.count, view.rev, view.compact_rev))
        })
        .await
        .ok()?;
    crate::metrics::lock(&LAST).insert(ctx.member_id, (std::time::Instant::now(), counted));
    Some(counted)
}

/// A count or size as a gauge's value (saturating: no real count is that large).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Per-binding counters from the registry: the same on every member, since apply keeps them.
fn plugin_families(registry: &crate::plugin::Registry) -> Vec<MetricFamily> {
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
    series
        .into_iter()
        .map(|(name, help, get)| {
            let samples = registry.bindings.values().map(|b| {
                let labels = vec![("binding", b.name.clone()), ("plugin", b.plugin.clone())];
                (labels, get(&b.stats))
            });
            counter_family(name, help, samples)
        })
        .collect()
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
