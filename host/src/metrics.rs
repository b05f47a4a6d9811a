//! Prometheus metrics: etcd's most-watched series under etcd's names and meanings, plus
//! Cairn's own.
//!
//! The instruments are process-wide, as etcd's are: the places that measure (the Raft log's
//! fsync, the state machine's commit, the peer transport, the watch streams, the gRPC layer)
//! record into [`METRICS`] without any plumbing. Values that already live elsewhere (the
//! leader, the applied index, the database size) are not duplicated here: the `/metrics`
//! handler reads them at scrape time and writes them with the same [`TextEncoder`].
//!
//! Nothing here is read by the state machine, so metrics never influence what is applied.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http_body::Frame;

/// The process's instruments.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// etcd's buckets for disk latencies: 1 ms to 8 s, doubling.
const DISK_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];
/// Plugin call durations: 10 µs to about 0.33 s, doubling.
const PLUGIN_CALL_BUCKETS: [f64; 16] = [
    0.00001, 0.00002, 0.00004, 0.00008, 0.00016, 0.00032, 0.00064, 0.00128, 0.00256, 0.00512,
    0.01024, 0.02048, 0.04096, 0.08192, 0.16384, 0.32768,
];
/// etcd's buckets for peer round trips: 100 µs to 3.2 s, doubling.
const PEER_RTT_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Adds one to a gauge for as long as it lives.
#[derive(Debug)]
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn new(gauge: &'static Gauge) -> Self {
        gauge.add(1);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// A latency histogram with fixed upper bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or under each bound (not cumulative; summed when encoded).
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One gRPC method, as go-grpc-prometheus labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcMethod {
    pub service: &'static str,
    pub method: &'static str,
    pub kind: &'static str,
    /// Its row in [`GRPC_METHODS`], where its counters are.
    index: usize,
}

const UNARY: &str = "unary";
const BIDI: &str = "bidi_stream";
const SERVER_STREAM: &str = "server_stream";

/// Every etcd RPC with its kind. Only these are counted, so a client sending made-up paths
/// cannot grow the label sets without bound.
const GRPC_METHODS: [(&str, &str, &str); 48] = [
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Maintenance", "Downgrade", UNARY),
    ("etcdserverpb.Auth", "AuthEnable", UNARY),
    ("etcdserverpb.Auth", "AuthDisable", UNARY),
    ("etcdserverpb.Auth", "AuthStatus", UNARY),
    ("etcdserverpb.Auth", "Authenticate", UNARY),
    ("etcdserverpb.Auth", "UserAdd", UNARY),
    ("etcdserverpb.Auth", "UserGet", UNARY),
    ("etcdserverpb.Auth", "UserList", UNARY),
    ("etcdserverpb.Auth", "UserDelete", UNARY),
    ("etcdserverpb.Auth", "UserChangePassword", UNARY),
    ("etcdserverpb.Auth", "UserGrantRole", UNARY),
    ("etcdserverpb.Auth", "UserRevokeRole", UNARY),
    ("etcdserverpb.Auth", "RoleAdd", UNARY),
    ("etcdserverpb.Auth", "RoleGet", UNARY),
    ("etcdserverpb.Auth", "RoleList", UNARY),
    ("etcdserverpb.Auth", "RoleDelete", UNARY),
    ("etcdserverpb.Auth", "RoleGrantPermission", UNARY),
    ("etcdserverpb.Auth", "RoleRevokePermission", UNARY),
    ("v3lockpb.Lock", "Lock", UNARY),
    ("v3lockpb.Lock", "Unlock", UNARY),
    ("v3electionpb.Election", "Campaign", UNARY),
    ("v3electionpb.Election", "Proclaim", UNARY),
    ("v3electionpb.Election", "Leader", UNARY),
    ("v3electionpb.Election", "Observe", SERVER_STREAM),
    ("v3electionpb.Election", "Resign", UNARY),
];

/// gRPC has 17 status codes.
const CODES: usize = 17;

impl GrpcMethod {
    /// The method named by a gRPC path (`/etcdserverpb.KV/Range`), if it is one of etcd's.
    pub fn from_path(path: &str) -> Option<GrpcMethod> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        Self::get(service, method)
    }

    pub fn get(service: &str, method: &str) -> Option<GrpcMethod> {
        let index = GRPC_METHODS
            .iter()
            .position(|(s, m, _)| *m == method && *s == service)?;
        let (service, method, kind) = GRPC_METHODS[index];
        Some(GrpcMethod {
            service,
            method,
            kind,
            index,
        })
    }
}

/// gRPC status codes by number, with go-grpc-prometheus's names.
fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("Unknown")
}

/// Where a guard or policy call was decided (see [`Metrics::carried`]).
const VERDICT_PLACES: [&str; 4] = ["proposed", "accepted", "stale", "evaluated"];

#[derive(Debug)]
pub struct Metrics {
    pub leader_changes: Counter,
    /// Corruption checks this member ran as leader that compared at least one follower.
    pub corruption_checks: Counter,
    pub proposals_failed: Counter,
    pub proposals_pending: Gauge,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    /// Open watchers, and those still reading history to catch up (etcd's "slow" ones).
    pub watchers: Gauge,
    pub slow_watchers: Gauge,
    peer_rtt: Mutex<BTreeMap<u64, Arc<Histogram>>>,
    /// Snapshots received from each peer and installed.
    snapshots_received: Mutex<BTreeMap<u64, u64>>,
    /// Wall time of plugin calls on this member, per binding.
    plugin_calls: Mutex<BTreeMap<String, Arc<Histogram>>>,
    /// Guard and policy calls by where they were decided (see [`Metrics::carried`]).
    plugin_verdicts: [Counter; VERDICT_PLACES.len()],
    /// Per row of [`GRPC_METHODS`]; handled also per status code.
    grpc_started: Vec<AtomicU64>,
    grpc_handled: Vec<[AtomicU64; CODES]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            leader_changes: Counter::default(),
            corruption_checks: Counter::default(),
            proposals_failed: Counter::default(),
            proposals_pending: Gauge::default(),
            wal_fsync: Histogram::new(&DISK_BUCKETS),
            backend_commit: Histogram::new(&DISK_BUCKETS),
            watchers: Gauge::default(),
            slow_watchers: Gauge::default(),
            peer_rtt: Mutex::default(),
            snapshots_received: Mutex::default(),
            plugin_calls: Mutex::default(),
            plugin_verdicts: Default::default(),
            grpc_started: GRPC_METHODS.iter().map(|_| AtomicU64::new(0)).collect(),
            grpc_handled: GRPC_METHODS
                .iter()
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }
}

/// Locks a map whose contents stay valid whatever a panicking holder did (counts, caches),
/// so a poisoned lock is simply taken over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    /// The round-trip histogram towards one peer.
    pub fn peer_rtt(&self, to: u64) -> Arc<Histogram> {
        lock(&self.peer_rtt)
            .entry(to)
            .or_insert_with(|| Arc::new(Histogram::new(&PEER_RTT_BUCKETS)))
            .clone()
    }

    /// Counts a snapshot from member `from`, received and installed.
    pub fn snapshot_received(&self, from: u64) {
        *lock(&self.snapshots_received).entry(from).or_default() += 1;
    }

    /// Counts one guard or write-side policy call by where it was decided (`plugin/carry.rs`):
    /// `proposed` (evaluated by this member as the proposer and carried in the entry),
    /// `accepted` (apply took the carried answer), `stale` (apply found the carried answer
    /// no longer holds and ran the plugin), `evaluated` (apply ran the plugin, nothing carried).
    pub fn carried(&self, place: &str) {
        if let Some(i) = VERDICT_PLACES.iter().position(|p| *p == place) {
            self.plugin_verdicts[i].inc();
        }
    }

    /// The call-duration histogram of one plugin binding.
    pub fn plugin_call(&self, binding: &str) -> Arc<Histogram> {
        let mut calls = lock(&self.plugin_calls);
        if let Some(h) = calls.get(binding) {
            return h.clone();
        }
        let h = Arc::new(Histogram::new(&PLUGIN_CALL_BUCKETS));
        calls.insert(binding.to_string(), h.clone());
        h
    }

    pub fn grpc_started(&self, method: GrpcMethod) {
        self.grpc_started[method.index].fetch_add(1, Ordering::Relaxed);
    }

    /// A call answered with `code` before its handler ran: started and handled at once.
    pub fn grpc_refused(&self, method: GrpcMethod, code: i32) {
        self.grpc_started(method);
        self.grpc_handled(method, code);
    }

    /// Counts a call whose outcome is a `Result` (the HTTP gateway's calls): started now,
    /// handled with the code it ends with.
    pub async fn count_call<T>(
        &self,
        method: Option<GrpcMethod>,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        if let Some(m) = method {
            self.grpc_started(m);
        }
        let result = call.await;
        if let Some(m) = method {
            self.grpc_handled(m, result.as_ref().map_or_else(|s| s.code() as i32, |_| 0));
        }
        result
    }

    pub fn grpc_handled(&self, method: GrpcMethod, code: i32) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < CODES)
            .unwrap_or(2); // Unknown
        self.grpc_handled[method.index][code].fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the instruments this struct owns.
    pub fn encode(&self, out: &mut TextEncoder) {
        self.encode_server(out);
        self.encode_disk(out);
        self.encode_watch(out);
        self.encode_peers(out);
        self.encode_plugins(out);
        self.encode_grpc(out);
    }

    /// Leader changes and proposals.
    fn encode_server(&self, out: &mut TextEncoder) {
        out.counter(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            self.leader_changes.get(),
        );
        out.counter(
            "cairn_corruption_checks_total",
            "Periodic corruption checks this member ran as leader that compared at least one \
             follower's HashKV with its own.",
            self.corruption_checks.get(),
        );
        out.counter(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            self.proposals_failed.get(),
        );
        out.gauge(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            self.proposals_pending.get() as f64,
        );
    }

    /// fsyncs of the log and commits of the state machine.
    fn encode_disk(&self, out: &mut TextEncoder) {
        out.histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by the Raft log.",
            &[],
            &self.wal_fsync,
        );
        out.histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commits by the state machine's backend.",
            &[],
            &self.backend_commit,
        );
    }

    /// Watchers, and those catching up.
    fn encode_watch(&self, out: &mut TextEncoder) {
        out.gauge(
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            self.watchers.get() as f64,
        );
        out.gauge(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            self.slow_watchers.get() as f64,
        );
    }

    /// Heartbeat round trips and snapshots received, per peer.
    fn encode_peers(&self, out: &mut TextEncoder) {
        {
            let rtt = lock(&self.peer_rtt);
            out.header(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-trip time histogram between peers (heartbeats).",
                "histogram",
            );
            for (to, h) in rtt.iter() {
                out.histogram_samples(
                    "etcd_network_peer_round_trip_time_seconds",
                    &[("To", &format!("{to:x}"))],
                    h,
                );
            }
        }
        {
            let received = lock(&self.snapshots_received);
            out.header(
                "etcd_network_snapshot_receive_success",
                "Total number of successful snapshot receives (received and installed).",
                "counter",
            );
            for (from, n) in received.iter() {
                out.sample(
                    "etcd_network_snapshot_receive_success",
                    &[("From", &format!("{from:x}"))],
                    *n as f64,
                );
            }
        }
    }

    /// Plugin call durations, per binding.
    fn encode_plugins(&self, out: &mut TextEncoder) {
        {
            let calls = lock(&self.plugin_calls);
            out.header(
                "cairn_plugin_call_duration_seconds",
                "Wall time of plugin calls (instantiate and call) on this member, per binding.",
                "histogram",
            );
            for (binding, h) in calls.iter() {
                out.histogram_samples(
                    "cairn_plugin_call_duration_seconds",
                    &[("binding", binding)],
                    h,
                );
            }
        }
        out.header(
            "cairn_plugin_verdicts_total",
            "Guard and write-side policy calls, by where they were decided: proposed (carried in \
             the entry by this member), accepted (apply took the carried answer), stale (apply \
             ran the plugin again), evaluated (apply ran it, nothing carried).",
            "counter",
        );
        for (place, n) in VERDICT_PLACES.iter().zip(&self.plugin_verdicts) {
            out.sample(
                "cairn_plugin_verdicts_total",
                &[("place", place)],
                n.get() as f64,
            );
        }
    }

    /// gRPC calls started and handled, as go-grpc-prometheus counts them.
    fn encode_grpc(&self, out: &mut TextEncoder) {
        out.header(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            "counter",
        );
        for (row, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            let n = self.grpc_started[row].load(Ordering::Relaxed);
            if n > 0 {
                out.sample(
                    "grpc_server_started_total",
                    &[
                        ("grpc_method", method),
                        ("grpc_service", service),
                        ("grpc_type", kind),
                    ],
                    n as f64,
                );
            }
        }
        out.header(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            "counter",
        );
        for (row, (service, method, kind)) in GRPC_METHODS.iter().enumerate() {
            for (code, count) in self.grpc_handled[row].iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                if n > 0 {
                    out.sample(
                        "grpc_server_handled_total",
                        &[
                            ("grpc_code", code_name(code as i32)),
                            ("grpc_method", method),
                            ("grpc_service", service),
                            ("grpc_type", kind),
                        ],
                        n as f64,
                    );
                }
            }
        }
    }
}

/// Writes Prometheus' text exposition format (version 0.0.4).
#[derive(Debug, Default)]
pub struct TextEncoder {
    out: String,
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl TextEncoder {
    pub fn finish(self) -> String {
        self.out
    }

    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, &[], value);
    }

    pub fn labeled_gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, labels, value);
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, &[], value as f64);
    }

    pub fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.header(name, help, "histogram");
        self.histogram_samples(name, labels, h);
    }

    fn histogram_samples(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let le = bound.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative as f64);
        }
        let count = h.count.load(Ordering::Relaxed);
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, count as f64);
        let sum = Duration::from_nanos(h.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }
}

/// The etcd RPC a request calls, if it is a gRPC call of one.
pub fn grpc_call(request: &Request) -> Option<GrpcMethod> {
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return None;
    }
    GrpcMethod::from_path(request.uri().path())
}

/// Counts a gRPC call started and handled, by method and code, as go-grpc-prometheus does
/// for etcd. The code comes from the response headers (trailers-only responses) or from the
/// trailers at the end of the body; a body dropped before its trailers counts as `Canceled`.
pub async fn count_grpc(
    method: GrpcMethod,
    response: impl std::future::Future<Output = Response>,
) -> Response {
    METRICS.grpc_started(method);
    let response = response.await;
    if let Some(code) = grpc_status(response.headers()) {
        METRICS.grpc_handled(method, code);
        return response;
    }
    response.map(|inner| {
        Body::new(CountingBody {
            inner,
            method,
            counted: false,
        })
    })
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

struct CountingBody {
    inner: Body,
    method: GrpcMethod,
    counted: bool,
}

impl CountingBody {
    fn count(&mut self, code: i32) {
        if !self.counted {
            self.counted = true;
            METRICS.grpc_handled(self.method, code);
        }
    }
}

impl http_body::Body for CountingBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.count(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.count(tonic::Code::Internal as i32),
            Poll::Ready(None) => self.count(tonic::Code::Unknown as i32),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        self.count(tonic::Code::Cancelled as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text() {
        let h = Histogram::new(&DISK_BUCKETS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut enc = TextEncoder::default();
        enc.histogram("x_seconds", "help", &[("To", "a\"b")], &h);
        let text = enc.finish();
        assert!(text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"0.001\"} 1\n"));
        assert!(text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"0.004\"} 2\n"));
        assert!(text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"8.192\"} 2\n"));
        assert!(text.contains("x_seconds_bucket{To=\"a\\\"b\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("x_seconds_count{To=\"a\\\"b\"} 3\n"));
        assert!(text.contains("x_seconds_sum{To=\"a\\\"b\"} 100.0035\n"));
    }

    #[test]
    fn only_etcds_methods_are_labels() {
        let m = GrpcMethod::from_path("/etcdserverpb.Watch/Watch").expect("known");
        assert_eq!(m.kind, "bidi_stream");
        assert!(GrpcMethod::from_path("/etcdserverpb.KV/Made-Up").is_none());
        assert!(GrpcMethod::from_path("/nope").is_none());
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Unknown");
    }
}
