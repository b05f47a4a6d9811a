//! Prometheus metrics: etcd's series under etcd's names and meanings, plus Cairn's own.
//!
//! The instruments are tikv's `prometheus` types in one registry, process-wide as etcd's
//! are: the places that measure (the Raft log's fsync, the state machine's commit, the peer
//! transport, the watch streams, the gRPC layer in [`grpc`]) record into [`METRICS`] without
//! any plumbing. Values that already live elsewhere (the leader, the applied index, the
//! database size, the plugin registry's statistics) are read by the `/metrics` handler at
//! scrape time (`api/http.rs`): it sets the scrape-time gauges here, builds the registry's
//! counters into families, and encodes everything with the library's text encoder.
//!
//! Nothing here is read by the state machine, so metrics never influence what is applied.

pub mod grpc;

use std::sync::{LazyLock, Mutex};

use prometheus::core::Collector;
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use grpc::{CallTally, GrpcMethod, count_grpc, grpc_call, grpc_refused};

/// The process's instruments.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The exposition format `/metrics` answers in.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
/// etcd's buckets for snapshot transfers: 0.1 s to 51.2 s, doubling.
const SNAPSHOT_BUCKETS: [f64; 10] = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2];

/// etcd counts an apply slower than this as slow (its `warnApplyDuration`).
pub const SLOW_APPLY: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a guard or policy call was decided (see [`Metrics::carried`]).
const VERDICT_PLACES: [&str; 4] = ["proposed", "accepted", "stale", "evaluated"];

/// One of etcd's mvcc counters, which etcd 3.4 exports twice: under `etcd_mvcc_` and under
/// the older `etcd_debugging_mvcc_`.
#[derive(Clone, Debug)]
pub struct Twin([IntCounter; 2]);

impl Twin {
    pub fn inc(&self) {
        self.inc_by(1);
    }
    pub fn inc_by(&self, n: u64) {
        for c in &self.0 {
            c.inc_by(n);
        }
    }
}

/// Snapshot transfers in one direction: successes with their durations, and failures, per
/// peer.
#[derive(Debug)]
struct Transfers {
    success: IntCounterVec,
    failures: IntCounterVec,
    seconds: HistogramVec,
}

impl Transfers {
    fn record(&self, peer: &str, outcome: Result<std::time::Duration, ()>) {
        match outcome {
            Ok(elapsed) => {
                self.success.with_label_values(&[peer]).inc();
                self.seconds
                    .with_label_values(&[peer])
                    .observe(elapsed.as_secs_f64());
            }
            Err(()) => self.failures.with_label_values(&[peer]).inc(),
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,

    // etcd_server_*
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub is_learner: IntGauge,
    pub server_id: IntGaugeVec,
    pub leader_changes: IntCounter,
    pub heartbeat_send_failures: IntCounter,
    pub slow_apply: IntCounter,
    pub snapshot_apply_in_progress: IntGauge,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub quota_backend_bytes: IntGauge,
    pub health_success: IntCounter,
    pub health_failures: IntCounter,

    // etcd_mvcc_* and etcd_debugging_mvcc_*
    pub puts: Twin,
    pub deletes: Twin,
    pub ranges: Twin,
    pub txns: Twin,
    pub keys: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    pub db_size: [IntGauge; 2],
    pub db_size_in_use: IntGauge,
    /// Open watchers, and those still reading history to catch up (etcd's "slow" ones).
    pub watchers: IntGauge,
    pub slow_watchers: IntGauge,
    pub watch_streams: IntGauge,

    // etcd_disk_*
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,

    // etcd_network_*
    pub client_sent_bytes: IntCounter,
    pub client_received_bytes: IntCounter,
    peer_sent_bytes: IntCounterVec,
    peer_received_bytes: IntCounterVec,
    peer_sent_failures: IntCounterVec,
    peer_received_failures: IntCounterVec,
    pub active_peers: IntGaugeVec,
    peer_rtt: HistogramVec,
    snapshot_sends: Transfers,
    snapshot_receives: Transfers,

    // grpc_server_*
    pub(crate) grpc: grpc::GrpcMetrics,

    /// The members ever seen in this process's memberships: only these label per-peer
    /// series, so a sender on the peer port cannot grow the label sets with made-up IDs.
    known_peers: Mutex<std::collections::BTreeSet<u64>>,

    // cairn_*
    pub corruption_checks: IntCounter,
    pub purged_index: IntGauge,
    plugin_calls: HistogramVec,
    plugin_verdicts: IntCounterVec,
}

/// Locks a map whose contents stay valid whatever a panicking holder did (counts, caches),
/// so a poisoned lock is simply taken over.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers instruments in one registry. A failed registration can only be a name or
/// label clash among the constants of this file, which the unit tests exercise; the
/// instrument then still counts, it is only missing from `/metrics`.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn register<C: Collector + Clone + 'static>(&self, c: C) -> C {
        if let Err(e) = self.registry.register(Box::new(c.clone())) {
            tracing::error!(error = %e, "registering a metric");
        }
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        // Only an invalid name fails here; the names are constants checked by the tests.
        self.register(IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(Histogram::with_opts(opts).expect("valid metric name"))
    }

    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], b: &[f64]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(b.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid metric name"))
    }

    /// etcd's three series of snapshot transfers in one direction (`what`: `send` or
    /// `receive`), labelled with the peer (`To` or `From`).
    fn transfers(&self, what: &str, peer: &str) -> Transfers {
        let name = |tail: &str| format!("etcd_network_snapshot_{what}_{tail}");
        Transfers {
            success: self.counter_vec(
                &name("success"),
                &format!("Total number of successful snapshot {what}s"),
                &[peer],
            ),
            failures: self.counter_vec(
                &name("failures"),
                &format!("Total number of snapshot {what} failures"),
                &[peer],
            ),
            seconds: self.histogram_vec(
                &name("total_duration_seconds"),
                &format!("Total latency distributions of v3 snapshot {what}s"),
                &[peer],
                &SNAPSHOT_BUCKETS,
            ),
        }
    }

    fn twin(&self, what: &str, help: &str) -> Twin {
        Twin([
            self.counter(&format!("etcd_mvcc_{what}"), help),
            self.counter(&format!("etcd_debugging_mvcc_{what}"), help),
        ])
    }

    /// A gauge with one label, set once to 1 for the label's value (etcd's version series).
    fn info(&self, name: &str, help: &str, label: &str, value: &str) {
        self.gauge_vec(name, help, &[label])
            .with_label_values(&[value])
            .set(1);
    }
}

impl Metrics {
    fn new() -> Metrics {
        let b = Builder {
            registry: Registry::new(),
        };
        // The process collector: memory, CPU, file descriptors, threads (Linux only).
        if let Err(e) = b.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::error!(error = %e, "registering the process collector");
        }
        let api = crate::api::maintenance::ETCD_VERSION;
        b.info(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            api,
        );
        b.info(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            &major_minor(api),
        );
        b.info(
            "cairn_build_info",
            "Which Cairn is running. 1 for the 'version' label with the current version.",
            "version",
            env!("CARGO_PKG_VERSION"),
        );
        let (to, from) = (&["To"][..], &["From"][..]);
        let metrics = Metrics {
            has_leader: b.gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: b.gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            is_learner: b.gauge(
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            ),
            server_id: b.gauge_vec(
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                &["server_id"],
            ),
            leader_changes: b.counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            heartbeat_send_failures: b.counter(
                "etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            ),
            slow_apply: b.counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            snapshot_apply_in_progress: b.gauge(
                "etcd_server_snapshot_apply_in_progress_total",
                "1 if the server is applying the incoming snapshot. 0 if none.",
            ),
            proposals_committed: b.gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: b.gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: b.gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: b.counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            quota_backend_bytes: b.gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            health_success: b.counter(
                "etcd_server_health_success",
                "The total number of successful health checks",
            ),
            health_failures: b.counter(
                "etcd_server_health_failures",
                "The total number of failed health checks",
            ),
            puts: b.twin("put_total", "Total number of puts seen by this member."),
            deletes: b.twin("delete_total", "Total number of deletes seen by this member."),
            ranges: b.twin("range_total", "Total number of ranges seen by this member."),
            txns: b.twin("txn_total", "Total number of txns seen by this member."),
            keys: b.gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            current_revision: b.gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            ),
            compact_revision: b.gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            db_size: [
                b.gauge(
                    "etcd_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                ),
                b.gauge(
                    "etcd_debugging_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                ),
            ],
            db_size_in_use: b.gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            watchers: b.gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers."),
            slow_watchers: b.gauge(
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
            ),
            watch_streams: b.gauge(
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            ),
            wal_fsync: b.histogram(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                &DISK_BUCKETS,
            ),
            backend_commit: b.histogram(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                &DISK_BUCKETS,
            ),
            client_sent_bytes: b.counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            client_received_bytes: b.counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
            peer_sent_bytes: b.counter_vec(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                to,
            ),
            peer_received_bytes: b.counter_vec(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                from,
            ),
            peer_sent_failures: b.counter_vec(
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                to,
            ),
            peer_received_failures: b.counter_vec(
                "etcd_network_peer_received_failures_total",
                "The total number of receive failures from peers.",
                from,
            ),
            active_peers: b.gauge_vec(
                "etcd_network_active_peers",
                "The current number of active peer connections.",
                &["Local", "Remote"],
            ),
            peer_rtt: b.histogram_vec(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
                to,
                &PEER_RTT_BUCKETS,
            ),
            snapshot_sends: b.transfers("send", "To"),
            snapshot_receives: b.transfers("receive", "From"),
            grpc: grpc::GrpcMetrics::new(&b),
            known_peers: Mutex::default(),
            corruption_checks: b.counter(
                "cairn_corruption_checks_total",
                "Periodic corruption checks this member ran as leader that compared at least one \
                 follower's HashKV with its own.",
            ),
            purged_index: b.gauge(
                "cairn_raft_log_purged_index",
                "The last Raft log index purged from this member's log (0 before the first purge).",
            ),
            plugin_calls: b.histogram_vec(
                "cairn_plugin_call_duration_seconds",
                "Wall time of plugin calls (instantiate and call) on this member, per binding.",
                &["binding"],
                &PLUGIN_CALL_BUCKETS,
            ),
            plugin_verdicts: b.counter_vec(
                "cairn_plugin_verdicts_total",
                "Guard and write-side policy calls, by where they were decided: proposed (carried \
                 in the entry by this member), accepted (apply took the carried answer), stale \
                 (apply ran the plugin again), evaluated (apply ran it, nothing carried).",
                &["place"],
            ),
            registry: b.registry,
        };
        for place in VERDICT_PLACES {
            metrics.plugin_verdicts.with_label_values(&[place]);
        }
        metrics
    }

    /// The label of member `id` in per-peer series: its hex ID if it is a member this process
    /// has seen, else `unknown`.
    fn peer(&self, id: u64) -> String {
        if lock(&self.known_peers).contains(&id) {
            hex(id)
        } else {
            "unknown".to_string()
        }
    }

    /// The round-trip histogram towards one peer.
    pub fn peer_rtt(&self, to: u64) -> Histogram {
        self.peer_rtt.with_label_values(&[&self.peer(to)])
    }

    /// Bytes of a message sent to member `to`, or a message to it that failed.
    pub fn peer_sent(&self, to: u64, bytes: usize) {
        self.peer_sent_bytes
            .with_label_values(&[&self.peer(to)])
            .inc_by(bytes as u64);
    }
    pub fn peer_send_failed(&self, to: u64) {
        self.peer_sent_failures
            .with_label_values(&[&self.peer(to)])
            .inc();
    }

    /// Bytes of a message received from member `from`, or a message from it refused.
    pub fn peer_received(&self, from: u64, bytes: usize) {
        self.peer_received_bytes
            .with_label_values(&[&self.peer(from)])
            .inc_by(bytes as u64);
    }
    pub fn peer_receive_failed(&self, from: u64) {
        self.peer_received_failures
            .with_label_values(&[&self.peer(from)])
            .inc();
    }

    /// A snapshot sent to `to`, in `elapsed`, or failed.
    pub fn snapshot_sent(&self, to: u64, outcome: Result<std::time::Duration, ()>) {
        self.snapshot_sends.record(&self.peer(to), outcome);
    }

    /// A snapshot received from `from` and installed, in `elapsed`, or failed.
    pub fn snapshot_received(&self, from: u64, outcome: Result<std::time::Duration, ()>) {
        self.snapshot_receives.record(&self.peer(from), outcome);
    }

    /// Counts one guard or write-side policy call by where it was decided (`plugin/carry.rs`):
    /// `proposed` (evaluated by this member as the proposer and carried in the entry),
    /// `accepted` (apply took the carried answer), `stale` (apply found the carried answer
    /// no longer holds and ran the plugin), `evaluated` (apply ran the plugin, nothing carried).
    pub fn carried(&self, place: &str) {
        if VERDICT_PLACES.contains(&place) {
            self.plugin_verdicts.with_label_values(&[place]).inc();
        }
    }

    /// The call-duration histogram of one plugin binding.
    pub fn plugin_call(&self, binding: &str) -> Histogram {
        self.plugin_calls.with_label_values(&[binding])
    }

    /// Records `peers` as members, and makes the per-peer counters towards and from each
    /// exist (at zero until something is counted), so that an alert on their rate has a
    /// baseline before the first failure.
    pub fn know_peers(&self, peers: impl IntoIterator<Item = u64>) {
        for id in peers {
            lock(&self.known_peers).insert(id);
            let id = hex(id);
            for vec in [
                &self.peer_sent_bytes,
                &self.peer_received_bytes,
                &self.peer_sent_failures,
                &self.peer_received_failures,
            ] {
                vec.with_label_values(&[&id]);
            }
        }
    }

    /// Encodes the registry and `extra` (families built at scrape time) as Prometheus text,
    /// sorted by name.
    pub fn encode(&self, extra: Vec<MetricFamily>) -> String {
        let mut families = self.registry.gather();
        if !self.grpc.extensive() {
            families.retain(|f| f.name() != grpc::HANDLING_SECONDS);
        }
        // A family without samples (no plugin bindings yet) is left out, as the registry
        // leaves out its own empty vectors.
        families.extend(extra.into_iter().filter(|f| !f.get_metric().is_empty()));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            // Only a family with no samples of its type fails; what was written stands.
            tracing::warn!(error = %e, "encoding /metrics");
        }
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }
}

/// A counter family built at scrape time from values kept elsewhere (the plugin registry's
/// statistics, which apply keeps identical on every member).
pub fn counter_family<'a>(
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(MetricType::COUNTER);
    for (labels, value) in samples {
        let mut counter = prometheus::proto::Counter::default();
        counter.set_value(value as f64);
        let mut metric = Metric::default();
        metric.set_label(
            labels
                .into_iter()
                .map(|(k, v)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(k.to_string());
                    pair.set_value(v);
                    pair
                })
                .collect(),
        );
        metric.set_counter(counter);
        family.mut_metric().push(metric);
    }
    family
}

/// Member IDs are labels in hex, as etcd prints them.
fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// etcd labels its cluster version series with major.minor only.
pub fn major_minor(api: &str) -> String {
    let mut parts = api.split('.');
    let major = parts.next().unwrap_or("3");
    let minor = parts.next().unwrap_or("0");
    format!("{major}.{minor}")
}

/// Adds one to a gauge for as long as it lives.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instrument_registers_and_encodes() {
        let m = Metrics::new();
        m.wal_fsync.observe(0.0005);
        m.wal_fsync.observe(100.0);
        m.peer_sent(0xcd, 3);
        m.know_peers([0xab]);
        m.peer_sent(0xab, 10);
        m.puts.inc();
        let text = m.encode(vec![counter_family(
            "cairn_x_total",
            "x",
            [(vec![("binding", "a\"b".to_string())], 3)],
        )]);
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("etcd_network_peer_sent_bytes_total{To=\"ab\"} 10\n"));
        m.snapshot_sent(0xab, Ok(std::time::Duration::from_secs(1)));
        m.snapshot_received(0xab, Err(()));
        let snapshots = m.encode(Vec::new());
        for line in [
            "etcd_network_snapshot_send_success{To=\"ab\"} 1\n",
            "etcd_network_snapshot_send_total_duration_seconds_count{To=\"ab\"} 1\n",
            "etcd_network_snapshot_receive_failures{From=\"ab\"} 1\n",
            "# HELP etcd_network_snapshot_receive_failures Total number of snapshot receive failures\n",
            "# HELP etcd_network_snapshot_send_total_duration_seconds Total latency distributions of v3 snapshot sends\n",
        ] {
            assert!(snapshots.contains(line), "{line} in\n{snapshots}");
        }
        // An ID never seen in a membership is not a label of its own.
        assert!(text.contains("etcd_network_peer_sent_bytes_total{To=\"unknown\"} 3\n"));
        assert!(text.contains("etcd_mvcc_put_total 1\n"));
        assert!(text.contains("etcd_debugging_mvcc_put_total 1\n"));
        assert!(text.contains("cairn_x_total{binding=\"a\\\"b\"} 3\n"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("etcd_cluster_version{cluster_version=\""));
        // Families come out sorted, each once.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or(""))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn cluster_version_is_major_minor() {
        assert_eq!(major_minor("3.6.2"), "3.6");
    }
}
