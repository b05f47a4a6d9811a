//! Put, range, watch fan-out and lease keepalive throughput and latency, Cairn against real
//! etcd, side by side in one run.
//!
//! Starts fresh Cairn (the release binary next to this tool, or `CAIRN_BIN`) and etcd (from
//! `PATH`) servers, each in its own temporary data dir on loopback, runs the same workloads
//! against both at every level (`--clients`, or `--watchers` for `watch-fanout`), and prints one
//! Markdown table per workload, preceded by a header line (command line, members, endpoints
//! mode, value size, seconds, `nproc` and CPU model) ready to paste into `docs/benchmarks.md`.
//! Both servers fsync every acknowledged write. Only one server's load runs at any moment.
//!
//! Workloads (`--workload`, a comma-separated list; `all` runs the first three in this order):
//! - `put`: each client puts 8-byte keys (as etcd's benchmark tool does) back to back.
//! - `range-linearizable`: 1,000 keys `bench/<n>` are written once per server first, then each
//!   client gets a random one of them back to back (etcd-client's default, linearizable `get`).
//! - `range-serializable`: the same with serializable (member-local) gets.
//! - `watch-fanout` (long, only when named): for each `--watchers` level W, W watchers on the
//!   prefix `fan/` are opened on one member (the first endpoint of the level: the only member,
//!   the leader with `--endpoints-mode leader`, a follower with `all`), spread over
//!   `--watch-streams` gRPC watch streams on at most `--conns` connections, so every watcher
//!   sees every event. Once all are created, one writer puts `fan/<n>` through that member at
//!   `--watch-rate` puts/s for `--seconds`, each value its send time (nanoseconds since a base
//!   `Instant`, ASCII). One task per stream records every event's delivery latency (receive −
//!   send) in a fixed-size histogram and counts events per watcher. The table gives events
//!   delivered per second over all watchers (from the first put to the last event), p50/p99
//!   delivery latency; the notes under it say whether every watcher got every acknowledged put
//!   (W × puts), and the missing count if not, and the puts' own p50/p99 round trips (the
//!   commit part of every delivery latency). Receivers wait for stragglers at most 60 s after
//!   the last put, and give up after 10 s without any event.
//! - `lease-keepalive` (long, only when named): `--leases` leases (TTL 60 s) are granted per
//!   server (64 at a time over the connection pool), then at each `--clients` level every
//!   client owns a slice of them (lease i to client i % clients) and one `LeaseKeepAlive`
//!   stream, and renews its leases round-robin, one keepalive in flight at a time, as fast as
//!   the server answers. The table gives keepalives/s and p50/p99 round trips. The stream is
//!   driven through the generated tonic client, since etcd-client's `LeaseKeeper` renews one
//!   fixed lease per stream. The leases are revoked after the workload's last level.
//!
//! Members (`--members`):
//! - 1 (default): one single-member Cairn and one single-member etcd run side by side for the
//!   whole run; each level is measured on etcd, then on Cairn.
//! - N > 1: an N-member Cairn cluster is started, measured on every workload and level, and
//!   stopped; then the same for an N-member etcd cluster (`cairn_tests::Cluster`, etcd's flags
//!   on free loopback ports), so the two never compete for the CPU. Tables print at the end.
//!
//! The clients share a pool of at most `--conns` gRPC connections (never more than clients).
//! `--endpoints-mode` decides where they go in a cluster: `all` (default) spreads them over
//! every member, connection i to endpoint i % N like etcd's benchmark with several
//! `--endpoints`, with the members ordered followers first and leader last so that both
//! servers get the same mix of leader and follower connections whichever member won the
//! election (one client talks to a follower); `leader` sends everything to the leader. The
//! leader is looked up again before every level. Failed requests are counted, not retried,
//! and reported under the tables; every request has a 10 s timeout, so a run always ends.
//!
//! ```sh
//! cargo build --release --bins -p cairn -p cairn-tests
//! # single member, puts, as before
//! ./target/release/cairn-bench --clients 1,16,256 --seconds 10
//! # 3-member clusters, every workload, connections spread over all members
//! ./target/release/cairn-bench --members 3 --workload all --clients 1,16,256 --seconds 10
//! # 3-member clusters, everything sent to the leader
//! ./target/release/cairn-bench --members 3 --workload all --endpoints-mode leader --clients 1,16,256 --seconds 10
//! # several workloads in one run
//! ./target/release/cairn-bench --workload put,range-serializable --clients 16 --seconds 10
//! # watch fan-out: 1,000 and 10,000 watchers over 100 streams, 100 puts/s
//! ./target/release/cairn-bench --workload watch-fanout --watchers 1000,10000 --seconds 10
//! # lease keepalives: 10,000 leases renewed by 16 and by 256 clients
//! ./target/release/cairn-bench --workload lease-keepalive --leases 10000 --clients 16,256 --seconds 10
//! # failover: kill a 3-member cluster's leader, time the first write accepted after it
//! ./target/release/cairn-bench --members 3 --failover-rounds 6
//! # puts under a schedule of leader kills and member pauses, 16 clients, 2 rounds each
//! ./target/release/cairn-bench --fault-rounds 2 --clients 16
//! # RSS, disk and restart time after a million keys, one member each, 2 rounds
//! ./target/release/cairn-bench --scale-keys 1000000
//! # the same after ten million revisions of 100,000 keys, values random (incompressible)
//! ./target/release/cairn-bench --scale-keys 100000 --scale-revisions 10000000 --scale-random-values
//! # load running endpoints only (profiling), e.g. a cluster started by hand
//! ./target/release/cairn-bench --target 127.0.0.1:2379,127.0.0.1:22379 --workload range-linearizable --clients 16
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use cairn_tests::{CairnNode, Cluster, EtcdNode, Flavor};
use clap::{Parser, ValueEnum};
use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions};
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Keys written before a range workload, `bench/0` .. `bench/999`.
const RANGE_KEYS: usize = 1_000;
/// Every request's timeout, so a hung server cannot hang the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack past `--seconds` for a level to finish (in-flight requests, connecting).
const LEVEL_SLACK: Duration = Duration::from_secs(60);
/// The prefix every fan-out watcher watches and the writer writes under.
const FAN_PREFIX: &str = "fan/";
/// Longest a fan-out level may take to create its watchers.
const WATCH_CREATE_LIMIT: Duration = Duration::from_secs(120);
/// After the last put, receivers give up once no event arrived for this long...
const WATCH_STALL: Duration = Duration::from_secs(10);
/// ...and at the latest this long after the last put.
const WATCH_DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// Slack past `--seconds` for a fan-out level: creating watchers, draining, connecting.
const WATCH_LEVEL_SLACK: Duration = Duration::from_secs(240);
/// Largest watch response the fan-out receivers accept (a lagging watcher gets batches).
const MAX_WATCH_MESSAGE: usize = 64 << 20;
/// TTL of the leases the keepalive workload renews.
const LEASE_TTL: i64 = 60;
/// Lease grants (and revokes) in flight at once while preparing the keepalive workload.
const LEASE_GRANT_CONCURRENCY: usize = 64;

#[derive(Parser, Debug)]
#[command(
    about = "Put, range, watch fan-out and lease keepalive throughput and latency: Cairn vs etcd on this machine"
)]
struct Args {
    /// Concurrency levels (clients issuing requests back to back).
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Seconds of load per workload, level and server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes (etcd's benchmark default is 256).
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Most gRPC connections shared by the clients.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Members per server: 1 runs single-member servers side by side, N > 1 runs an N-member
    /// Cairn cluster and then an N-member etcd cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    members: u16,
    /// Workloads to run, comma-separated (`all`: put, range-linearizable, range-serializable).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "put")]
    workload: Vec<WorkloadArg>,
    /// Where clients send requests in a cluster (ignored with one member).
    #[arg(long, value_enum, default_value_t = EndpointsMode::All)]
    endpoints_mode: EndpointsMode,
    /// Load these already-running endpoints only (comma-separated, for profiling) instead of
    /// starting servers; `all` uses them in the order given.
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
    /// watch-fanout: watcher counts, one level each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    watchers: Vec<usize>,
    /// watch-fanout: gRPC watch streams the watchers are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    watch_streams: u32,
    /// watch-fanout: the writer's puts per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    watch_rate: u32,
    /// lease-keepalive: leases granted per server (TTL 60 s).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    leases: u32,
    /// Plugin overhead instead of Cairn vs etcd: on one Cairn cluster (or member), the
    /// workload without and with this plugin (a .wasm, installed with cairnctl) bound as
    /// `--plugin-kind` over `--plugin-key` (a prefix; all keys by default), in the order
    /// plain, with, with, plain at each level. Guards and policies load puts (values are
    /// JSON strings of --val-size bytes; a policy needs --auth), watch filters the
    /// watch-fanout workload; a reactor measures reactor lag instead (see `reactor_lag`).
    #[arg(long)]
    plugin: Option<std::path::PathBuf>,
    /// Defragment overhead instead of Cairn vs etcd: on one Cairn cluster (or member), puts
    /// without and with a loop that compacts to 1,000 revisions back and defragments every
    /// member, then waits a second, in the order plain, with, with, plain at each level.
    #[arg(long, conflicts_with = "plugin")]
    defrag_under_load: bool,
    /// Failover instead of throughput: this many rounds, each on fresh `--members`-member
    /// Cairn and etcd clusters (alternating etcd, Cairn, Cairn, etcd, ...): kill the leader
    /// with SIGKILL, then write through the surviving members, each attempt bounded by 1 s and
    /// retried at once, and time the kill to the first accepted write.
    #[arg(long, conflicts_with_all = ["plugin", "defrag_under_load"])]
    failover_rounds: Option<u32>,
    /// Puts under faults instead of throughput: this many rounds, each on fresh 3-member Cairn
    /// and etcd clusters (alternating etcd, Cairn, Cairn, etcd, ...), the first `--clients`
    /// level putting for 30 s while the same schedule kills, pauses and restarts members;
    /// counts the puts acknowledged.
    #[arg(long, conflicts_with_all = ["plugin", "defrag_under_load", "failover_rounds"])]
    fault_rounds: Option<u32>,
    /// Memory, disk and restart time instead of throughput: one member of each server in
    /// turn, this many keys (`scale/<n>`, `--val-size` values) written 256 at a time, then RSS
    /// and the data dir's size on disk, then a restart timed to the first linearizable read
    /// of the last key; `--scale-rounds` rounds alternating etcd, Cairn, Cairn, etcd, ...
    #[arg(long, conflicts_with_all = ["plugin", "defrag_under_load", "failover_rounds", "fault_rounds"])]
    scale_keys: Option<usize>,
    #[arg(long, default_value_t = 2)]
    scale_rounds: u32,
    /// With `--scale-keys`: write this many revisions (puts) in all, cycling over the keys, so
    /// each key has about revisions/keys versions; nothing is compacted (default: one put per
    /// key).
    #[arg(long, requires = "scale_keys")]
    scale_revisions: Option<usize>,
    /// With `--scale-keys`: every value `--val-size` random bytes, different for every put,
    /// so neither server can compress them (default: `--val-size` repeated letters, as every
    /// other workload writes).
    #[arg(long, requires = "scale_keys")]
    scale_random_values: bool,
    #[arg(long, value_enum, default_value_t = PluginKind::Guard)]
    plugin_kind: PluginKind,
    /// The binding config (default: the json-schema guard's `{"type":"string"}`).
    #[arg(long, default_value = r#"{"type":"string"}"#)]
    plugin_config: String,
    /// The prefix the plugin is bound to.
    #[arg(long, default_value = "")]
    plugin_key: String,
    /// Authentication on both servers: `off`, `simple` tokens, or `jwt` (RS256, the test key
    /// pair in tests/testdata). With it on, every client runs as a user holding READWRITE over
    /// all keys (not root, so each request's permission is checked).
    #[arg(long, value_enum, default_value_t = AuthMode::Off)]
    auth: AuthMode,
    /// Serve clients over TLS on both servers (one member each only): a fresh CA and server
    /// certificate, clients verifying it.
    #[arg(long)]
    tls: bool,
}

/// The CA clients verify servers with, once `--tls` has made one.
static CLIENT_CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `--tls`: a CA and a server certificate in `dir`; the flags that serve them.
fn tls_flags(dir: &std::path::Path) -> Vec<String> {
    let ca = cairn_tests::pki::Ca::new(dir, "bench-ca");
    let server = ca.issue("bench-server", "server");
    let _ = CLIENT_CA.set(std::fs::read_to_string(&ca.cert).expect("read CA"));
    vec![
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PluginKind {
    Guard,
    Policy,
    WatchFilter,
    Reactor,
}

impl PluginKind {
    /// The name cairnctl's `--kind` takes.
    fn name(self) -> &'static str {
        match self {
            PluginKind::Guard => "guard",
            PluginKind::Policy => "policy",
            PluginKind::WatchFilter => "watch-filter",
            PluginKind::Reactor => "reactor",
        }
    }

    /// The server's name in the bench's progress lines, with this plugin bound.
    fn bound(self) -> &'static str {
        match self {
            PluginKind::Guard => "Cairn+guard",
            PluginKind::Policy => "Cairn+policy",
            PluginKind::WatchFilter => "Cairn+watch-filter",
            PluginKind::Reactor => "Cairn+reactor",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AuthMode {
    Off,
    Simple,
    Jwt,
}

/// The user every client authenticates as, once `--auth` has turned authentication on.
static CREDENTIALS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// The flags `--auth` adds to both servers.
fn auth_flags(args: &Args) -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    match args.auth {
        AuthMode::Off | AuthMode::Simple => Vec::new(),
        AuthMode::Jwt => vec![format!(
            "--auth-token=jwt,pub-key={dir}/jwt-rs256.pub,priv-key={dir}/jwt-rs256.key,sign-method=RS256"
        )],
    }
}

/// With `--auth`, adds root and the bench user (READWRITE over every key) and turns
/// authentication on, through `endpoint`.
async fn enable_auth(args: &Args, endpoint: &str) {
    if args.auth == AuthMode::Off {
        return;
    }
    let fail = |what: &str, e: etcd_client::Error| panic!("--auth: {what} on {endpoint}: {e}");
    let mut client = match Client::connect([endpoint], Some(anonymous_options())).await {
        Ok(client) => client,
        Err(e) => panic!("--auth: connect to {endpoint}: {e}"),
    };
    client
        .user_add("root", "rootpw", None)
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("user add root", e));
    client
        .user_grant_role("root", "root")
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("grant root", e));
    client
        .user_add("bench", "benchpw", None)
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("user add bench", e));
    client
        .role_add("bench")
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("role add", e));
    let everything =
        etcd_client::Permission::new(etcd_client::PermissionType::Readwrite, "").with_from_key();
    client
        .role_grant_permission("bench", everything)
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("grant permission", e));
    client
        .user_grant_role("bench", "bench")
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("grant bench", e));
    client
        .auth_enable()
        .await
        .map(drop)
        .unwrap_or_else(|e| fail("auth enable", e));
    let _ = CREDENTIALS.set(("bench".to_owned(), "benchpw".to_owned()));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    Put,
    RangeLinearizable,
    RangeSerializable,
    WatchFanout,
    LeaseKeepalive,
    All,
}

impl WorkloadArg {
    fn expand(self) -> Vec<Workload> {
        match self {
            WorkloadArg::Put => vec![Workload::Put],
            WorkloadArg::RangeLinearizable => vec![Workload::RangeLinearizable],
            WorkloadArg::RangeSerializable => vec![Workload::RangeSerializable],
            WorkloadArg::WatchFanout => vec![Workload::WatchFanout],
            WorkloadArg::LeaseKeepalive => vec![Workload::LeaseKeepalive],
            WorkloadArg::All => vec![
                Workload::Put,
                Workload::RangeLinearizable,
                Workload::RangeSerializable,
            ],
        }
    }
}

/// The workloads named on the command line, in order, each once.
fn expand_workloads(args: &[WorkloadArg]) -> Vec<Workload> {
    let mut out = Vec::new();
    for w in args.iter().flat_map(|a| a.expand()) {
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Put,
    RangeLinearizable,
    RangeSerializable,
    WatchFanout,
    LeaseKeepalive,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeLinearizable => "range-linearizable",
            Workload::RangeSerializable => "range-serializable",
            Workload::WatchFanout => "watch-fanout",
            Workload::LeaseKeepalive => "lease-keepalive",
        }
    }

    fn is_range(self) -> bool {
        matches!(
            self,
            Workload::RangeLinearizable | Workload::RangeSerializable
        )
    }

    /// What a level counts (the table's second column).
    fn level_name(self) -> &'static str {
        match self {
            Workload::WatchFanout => "watchers",
            _ => "clients",
        }
    }

    /// The levels this workload runs.
    fn levels(self, args: &Args) -> &[usize] {
        match self {
            Workload::WatchFanout => &args.watchers,
            _ => &args.clients,
        }
    }

    /// What the throughput column counts per second.
    fn unit(self) -> &'static str {
        match self {
            Workload::WatchFanout => "events/s",
            Workload::LeaseKeepalive => "keepalives/s",
            _ => "ops/s",
        }
    }

    /// Slack past `--seconds` for one level.
    fn slack(self) -> Duration {
        match self {
            Workload::WatchFanout => WATCH_LEVEL_SLACK,
            _ => LEVEL_SLACK,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EndpointsMode {
    Leader,
    All,
}

/// One level's measurement on one server.
#[derive(Debug, Clone)]
struct Stats {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    first_error: Option<String>,
    /// A line for under the tables (watch fan-out: whether every event was delivered).
    note: Option<String>,
}

/// Where one level's connections go.
#[derive(Debug)]
struct Plan {
    /// Connection i goes to `endpoints[i % len]`.
    endpoints: Vec<String>,
    /// The leader's name, when known (clusters only).
    leader: Option<String>,
}

/// The servers one measurement runs against.
enum Deployment<'a> {
    Single(String),
    Cluster(&'a Cluster),
    Target(Vec<String>),
}

impl Deployment<'_> {
    /// Every member's client endpoint.
    fn members(&self) -> Vec<String> {
        match self {
            Deployment::Single(e) => vec![e.clone()],
            Deployment::Cluster(c) => c.endpoints(),
            Deployment::Target(t) => t.clone(),
        }
    }

    /// Which member `endpoint` is, for the notes.
    fn describe(&self, endpoint: &str, plan: &Plan) -> String {
        match self {
            Deployment::Single(_) => "the only member".to_string(),
            Deployment::Cluster(cluster) => {
                let name = cluster
                    .members
                    .iter()
                    .find(|m| m.endpoint() == endpoint)
                    .map(|m| m.name.clone())
                    .unwrap_or_else(|| endpoint.to_string());
                let role = if plan.leader.as_deref() == Some(name.as_str()) {
                    "leader"
                } else {
                    "follower"
                };
                format!("member {name} ({role})")
            }
            Deployment::Target(_) => endpoint.to_string(),
        }
    }

    /// The endpoints for the next level (the leader looked up now).
    async fn plan(&self, mode: EndpointsMode) -> Plan {
        match self {
            Deployment::Single(e) => Plan {
                endpoints: vec![e.clone()],
                leader: None,
            },
            Deployment::Cluster(cluster) => {
                let leader = cluster.wait_for_leader(Duration::from_secs(60)).await;
                let leader_member = &cluster.members[leader];
                let endpoints = match mode {
                    EndpointsMode::Leader => vec![leader_member.endpoint()],
                    EndpointsMode::All => {
                        let mut eps: Vec<String> = cluster
                            .members
                            .iter()
                            .enumerate()
                            .filter(|(i, m)| *i != leader && m.is_running())
                            .map(|(_, m)| m.endpoint())
                            .collect();
                        eps.push(leader_member.endpoint());
                        eps
                    }
                };
                Plan {
                    endpoints,
                    leader: Some(leader_member.name.clone()),
                }
            }
            Deployment::Target(targets) => match mode {
                EndpointsMode::All => Plan {
                    endpoints: targets.clone(),
                    leader: None,
                },
                EndpointsMode::Leader => {
                    let leader = find_leader(targets).await;
                    Plan {
                        endpoints: vec![leader.clone()],
                        leader: Some(leader),
                    }
                }
            },
        }
    }
}

/// Options for every client: with `--auth`, as the bench user.
fn connect_options() -> ConnectOptions {
    let options = anonymous_options();
    match CREDENTIALS.get() {
        Some((user, password)) => options.with_user(user, password),
        None => options,
    }
}

/// Options without a user (etcd-client refuses a user while authentication is off).
fn anonymous_options() -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(REQUEST_TIMEOUT);
    if let Some(ca) = CLIENT_CA.get() {
        options = options.with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(ca.as_bytes())),
        );
    }
    options
}

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], Some(connect_options()))
        .await
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// A plain tonic channel to `endpoint`, for the generated clients (bounded: 10 s).
async fn grpc_channel(endpoint: &str) -> Channel {
    let uri = format!("http://{endpoint}");
    let target = Channel::from_shared(uri)
        .unwrap_or_else(|e| panic!("endpoint {endpoint}: {e}"))
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    tokio::time::timeout(REQUEST_TIMEOUT, target.connect())
        .await
        .unwrap_or_else(|_| {
            panic!("connect to {endpoint}: no connection within {REQUEST_TIMEOUT:?}")
        })
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"))
}

/// The endpoint among `endpoints` whose Status says it leads (bounded: 30 s).
async fn find_leader(endpoints: &[String]) -> String {
    let start = Instant::now();
    loop {
        for ep in endpoints {
            let probe = async {
                let mut client = Client::connect([ep], Some(connect_options())).await.ok()?;
                let status = client.status().await.ok()?;
                let me = status.header()?.member_id();
                (status.leader() == me).then_some(())
            };
            if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return ep.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no leader among {endpoints:?} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `bench/0` .. `bench/999` through `endpoint`, then checks with a linearizable count
/// on every member that each sees all of them (so serializable reads find them too).
async fn seed(server: &str, endpoint: &str, members: &[String], value: &[u8]) {
    let work = async {
        let client = connect(endpoint).await;
        let results: Vec<_> = futures::stream::iter(0..RANGE_KEYS)
            .map(|n| {
                let mut client = client.clone();
                let value = value.to_vec();
                async move { client.put(format!("bench/{n}"), value, None).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for r in results {
            r.unwrap_or_else(|e| panic!("{server}: writing the range keys via {endpoint}: {e}"));
        }
        for m in members {
            let mut client = connect(m).await;
            let count = client
                .get(
                    "bench/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .unwrap_or_else(|e| panic!("{server}: counting the range keys on {m}: {e}"))
                .count();
            assert_eq!(
                count, RANGE_KEYS as i64,
                "{server}: {m} sees {count} range keys, wrote {RANGE_KEYS}"
            );
        }
    };
    let limit = Duration::from_secs(120);
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| panic!("{server}: writing the range keys took over {limit:?}"));
}

/// Latencies in nanoseconds, in log-linear buckets (128 per power of two, so under 1 % error):
/// a fixed 58 KiB however many samples.
#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

/// log2 of the buckets per power of two.
const HIST_SUB_BITS: u32 = 7;
/// Values below 128 exactly, then 128 buckets for each of the 57 higher powers of two.
const HIST_BUCKETS: usize = (64 - HIST_SUB_BITS as usize + 1) << HIST_SUB_BITS;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; HIST_BUCKETS],
            total: 0,
        }
    }

    fn index(v: u64) -> usize {
        let sub = 1u64 << HIST_SUB_BITS;
        if v < sub {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - HIST_SUB_BITS;
        ((u64::from(shift) + 1) * sub + ((v >> shift) - sub)) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let sub = 1usize << HIST_SUB_BITS;
        if i < sub {
            return i as u64;
        }
        let shift = (i / sub - 1) as u32;
        let low = ((sub + i % sub) as u64) << shift;
        low + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The `p` quantile in milliseconds (the same rank as `run_level`'s sorted samples).
    fn quantile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((self.total as f64 * p) as u64).min(self.total - 1) + 1;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i) as f64 / 1e6;
            }
        }
        f64::NAN
    }
}

/// A level reports (under the tables) any stretch this long without a completed request,
/// in a note that starts with [`STALL`].
const STALL_NOTE: Duration = Duration::from_millis(500);
const STALL: &str = "stall:";

/// Runs `clients` clients for `seconds` over a pool of connections spread over `endpoints`.
async fn run_level(
    endpoints: &[String],
    workload: Workload,
    clients: usize,
    conns: usize,
    seconds: u64,
    value: &[u8],
) -> Stats {
    let conns = conns.min(clients).max(1);
    let mut pool = Vec::new();
    for i in 0..conns {
        pool.push(connect(&endpoints[i % endpoints.len()]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = pool[c % conns].clone();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // When each request completed, since the level started (to find stalls).
            let mut completions = Vec::new();
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            let mut rng = SmallRng::seed_from_u64(c as u64 + 1);
            let read_options = match workload {
                Workload::RangeSerializable => Some(GetOptions::new().with_serializable()),
                _ => None,
            };
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome: Result<(), String> = if workload.is_range() {
                    let key = format!("bench/{}", rng.random_range(0..RANGE_KEYS));
                    match client.get(key.clone(), read_options.clone()).await {
                        Ok(r) if r.kvs().len() == 1 => Ok(()),
                        Ok(_) => Err(format!("{key} not found")),
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    // 8-byte keys, as etcd's benchmark tool uses.
                    let key = format!("{:04x}{:04x}", c & 0xffff, seq & 0xffff);
                    seq += 1;
                    client
                        .put(key, value.clone(), None)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                };
                match outcome {
                    Ok(()) => {
                        latencies.push(t.elapsed());
                        completions.push(start.elapsed());
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        // No busy loop against a failing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (latencies, completions, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut completed = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (latencies, completions, e, first) = t.await.expect("bench client panicked");
        all.extend(latencies);
        completed.extend(completions);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The longest stretch in which no request completed: a stall that throughput averages
    // away and percentiles hide (a few hundred stalled requests are under 1%).
    completed.sort_unstable();
    let (gap, gap_from) = completed
        .iter()
        .scan(Duration::ZERO, |last, &t| {
            let gap = (t.saturating_sub(*last), *last);
            *last = t;
            Some(gap)
        })
        .max()
        .unwrap_or((start.elapsed(), Duration::ZERO));
    let note = (gap >= STALL_NOTE).then(|| {
        format!(
            "{STALL} no request completed for {:.2} s (from {:.2} s into the level)",
            gap.as_secs_f64(),
            gap_from.as_secs_f64()
        )
    });
    all.sort_unstable();
    let pct = |p: f64| match all.len() {
        0 => f64::NAN,
        n => all[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3,
    };
    Stats {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        first_error,
        note,
    }
}

/// What one watch stream's receiving task saw.
struct StreamOutcome {
    latencies: Histogram,
    /// Events per watcher (watch id) on this stream.
    counts: HashMap<i64, u64>,
    /// Watchers this stream was meant to carry.
    watchers: usize,
    events: u64,
    last_event: Option<Instant>,
    errors: u64,
    first_error: Option<String>,
}

/// Nanoseconds since `base`: the clock the fan-out writer stamps values with.
fn nanos_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// One watch stream carrying `watchers` watchers on `FAN_PREFIX`: creates them, says so on
/// `ready`, then records every event until the writer's put count (`puts`) is known and every
/// watcher has seen that many, or the receivers stall or run out of time.
async fn watch_stream_task(
    client: Client,
    watchers: usize,
    base: Instant,
    created_total: Arc<AtomicUsize>,
    ready: oneshot::Sender<Result<(), String>>,
    mut puts: watch::Receiver<Option<u64>>,
) -> StreamOutcome {
    let mut out = StreamOutcome {
        latencies: Histogram::new(),
        counts: HashMap::with_capacity(watchers),
        watchers,
        events: 0,
        last_event: None,
        errors: 0,
        first_error: None,
    };
    let options = WatchOptions::new().with_prefix();
    let mut watch_client = client
        .watch_client()
        .max_decoding_message_size(MAX_WATCH_MESSAGE);
    let mut stream = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        watch_client.watch(FAN_PREFIX, Some(options.clone())),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let _ = ready.send(Err(format!("opening a watch stream: {e}")));
            return out;
        }
        Err(_) => {
            let _ = ready.send(Err(format!(
                "opening a watch stream: no answer within {REQUEST_TIMEOUT:?}"
            )));
            return out;
        }
    };
    for _ in 1..watchers {
        let sent = tokio::time::timeout(
            REQUEST_TIMEOUT,
            stream.watch(FAN_PREFIX, Some(options.clone())),
        )
        .await;
        let failure = match sent {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("sending a watch create request: {e}"),
            Err(_) => format!("sending a watch create request: blocked for {REQUEST_TIMEOUT:?}"),
        };
        let _ = ready.send(Err(failure));
        return out;
    }
    let mut ready = Some(ready);
    let mut expected: Option<u64> = None;
    let mut drain_deadline = None;
    let mut last_progress = Instant::now();
    loop {
        if expected.is_none() {
            expected = *puts.borrow_and_update();
        }
        if let Some(expected) = expected {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + WATCH_DRAIN_LIMIT);
            let complete = out.counts.len() >= watchers
                && out.events >= expected * watchers as u64
                && out.counts.values().all(|&c| c >= expected);
            if complete || Instant::now() >= deadline || last_progress.elapsed() >= WATCH_STALL {
                break;
            }
        }
        let message = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await
        {
            // Nothing yet: look at the stop conditions again.
            Err(_) => continue,
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| "the server closed a watch stream".to_string());
                break;
            }
            Ok(Err(e)) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("watch stream: {e}"));
                break;
            }
        };
        let events = message.events();
        if !events.is_empty() {
            let now = nanos_since(base);
            for event in events {
                let sent = event
                    .kv()
                    .and_then(|kv| std::str::from_utf8(kv.value()).ok())
                    .and_then(|v| v.parse::<u64>().ok());
                match sent {
                    Some(sent) => out.latencies.record(now.saturating_sub(sent)),
                    None => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| {
                            "a fan-out event without a send time in its value".to_string()
                        });
                    }
                }
            }
            *out.counts.entry(message.watch_id()).or_default() += events.len() as u64;
            out.events += events.len() as u64;
            last_progress = Instant::now();
            out.last_event = Some(last_progress);
        }
        if message.created() {
            out.counts.entry(message.watch_id()).or_default();
            created_total.fetch_add(1, Ordering::Relaxed);
            if out.counts.len() >= watchers
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(Ok(()));
            }
        }
        if message.canceled() {
            out.errors += 1;
            out.first_error.get_or_insert_with(|| {
                format!(
                    "watch {} canceled: {}",
                    message.watch_id(),
                    message.cancel_reason()
                )
            });
        }
    }
    if let Some(ready) = ready {
        let why = out
            .first_error
            .clone()
            .unwrap_or_else(|| "the stream ended".to_string());
        let _ = ready.send(Err(why));
    }
    out
}

/// What the fan-out writer did.
struct WriterOutcome {
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    /// When the last put was sent.
    last_put: Instant,
    /// The puts' own round trips (commit latency, part of every delivery latency).
    put_latencies: Histogram,
}

/// Puts `fan/<n>` through `endpoint` at `rate` per second for `seconds`, each value its send
/// time. Puts are sent on schedule even while earlier ones are still in flight.
async fn write_fan(endpoint: &str, rate: u32, seconds: u64, base: Instant) -> WriterOutcome {
    let client = connect(endpoint).await;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut puts = JoinSet::new();
    let mut n = 0u64;
    let mut last_put = Instant::now();
    loop {
        ticker.tick().await;
        if Instant::now() >= end {
            break;
        }
        let mut client = client.clone();
        let key = format!("{FAN_PREFIX}{n}");
        n += 1;
        last_put = Instant::now();
        puts.spawn(async move {
            let t = Instant::now();
            let sent = nanos_since(base).to_string();
            match tokio::time::timeout(REQUEST_TIMEOUT, client.put(key, sent, None)).await {
                Ok(Ok(_)) => Ok(t.elapsed()),
                Ok(Err(e)) => Err(format!("fan-out put: {e}")),
                Err(_) => Err(format!("fan-out put: no answer within {REQUEST_TIMEOUT:?}")),
            }
        });
    }
    let mut out = WriterOutcome {
        acked: 0,
        errors: 0,
        first_error: None,
        last_put,
        put_latencies: Histogram::new(),
    };
    while let Some(joined) = puts.join_next().await {
        match joined.expect("fan-out put task panicked") {
            Ok(latency) => {
                out.acked += 1;
                out.put_latencies.record(latency.as_nanos() as u64);
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    out
}

/// `watchers` watchers on one member, one writer: see the module doc.
async fn run_watch_level(endpoint: &str, watchers: usize, args: &Args) -> Stats {
    let streams = (args.watch_streams as usize).min(watchers).max(1);
    let conns = args.conns.min(streams).max(1);
    let mut pool = Vec::new();
    for _ in 0..conns {
        pool.push(connect(endpoint).await);
    }
    let base = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let (puts_tx, puts_rx) = watch::channel(None);
    let mut tasks = Vec::new();
    let mut readies = Vec::new();
    for s in 0..streams {
        let n = watchers / streams + usize::from(s < watchers % streams);
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        tasks.push(tokio::spawn(watch_stream_task(
            pool[s % conns].clone(),
            n,
            base,
            created.clone(),
            ready_tx,
            puts_rx.clone(),
        )));
    }
    let create_start = Instant::now();
    let all_ready = async {
        for ready in readies {
            match ready.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a watch stream task ended early".to_string()),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(WATCH_CREATE_LIMIT, all_ready).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!(
            "watch-fanout: creating {watchers} watchers on {endpoint} failed after {} were \
             created: {e}",
            created.load(Ordering::Relaxed)
        ),
        Err(_) => panic!(
            "watch-fanout: only {} of {watchers} watchers created on {endpoint} within \
             {WATCH_CREATE_LIMIT:?}",
            created.load(Ordering::Relaxed)
        ),
    }
    eprintln!(
        "  {watchers} watchers on {streams} streams created in {:.2} s",
        create_start.elapsed().as_secs_f64()
    );
    let writer_start = Instant::now();
    let writer = write_fan(endpoint, args.watch_rate, args.seconds, base).await;
    // Receivers stop once every watcher saw every acknowledged put (or they give up).
    let _ = puts_tx.send(Some(writer.acked));
    let mut latencies = Histogram::new();
    let mut delivered = 0u64;
    let (mut missing, mut extra, mut short) = (0u64, 0u64, 0u64);
    let mut last_event: Option<Instant> = None;
    let mut errors = writer.errors;
    let mut first_error = writer.first_error.clone();
    for t in tasks {
        let o = t.await.expect("watch stream task panicked");
        latencies.merge(&o.latencies);
        delivered += o.events;
        for &c in o.counts.values() {
            missing += writer.acked.saturating_sub(c);
            extra += c.saturating_sub(writer.acked);
            short += u64::from(c < writer.acked);
        }
        // Watchers whose creation was never confirmed saw nothing this stream counted.
        let unconfirmed = o.watchers.saturating_sub(o.counts.len()) as u64;
        missing += unconfirmed * writer.acked;
        short += unconfirmed;
        last_event = last_event.max(o.last_event);
        errors += o.errors;
        if first_error.is_none() {
            first_error = o.first_error;
        }
    }
    let span = last_event.map(|t| t.duration_since(writer_start).as_secs_f64());
    let events_per_sec = match span {
        Some(s) if s > 0.0 => delivered as f64 / s,
        _ => 0.0,
    };
    let expected = writer.acked * watchers as u64;
    let failed_puts = if writer.errors > 0 {
        format!(" ({} failed)", writer.errors)
    } else {
        String::new()
    };
    let drain = last_event
        .map(|t| {
            format!(
                ", last event {:.2} s after the last put",
                t.saturating_duration_since(writer.last_put).as_secs_f64()
            )
        })
        .unwrap_or_default();
    let delivery = if missing == 0 && extra == 0 {
        format!("all {expected} events delivered{drain}")
    } else {
        format!(
            "{delivered} of {expected} events delivered, {missing} MISSING ({short} watchers \
             short), {extra} extra{drain}"
        )
    };
    Stats {
        ops_per_sec: events_per_sec,
        p50_ms: latencies.quantile_ms(0.50),
        p99_ms: latencies.quantile_ms(0.99),
        errors,
        first_error,
        note: Some(format!(
            "{} acknowledged puts{failed_puts} × {watchers} watchers on {streams} streams: \
             {delivery}; the puts themselves: p50 {} ms, p99 {} ms",
            writer.acked,
            ms(writer.put_latencies.quantile_ms(0.50)),
            ms(writer.put_latencies.quantile_ms(0.99)),
        )),
    }
}

/// One open `LeaseKeepAlive` stream: requests in, responses out.
type KeepAliveStream = (
    mpsc::Sender<LeaseKeepAliveRequest>,
    Streaming<LeaseKeepAliveResponse>,
);

/// Opens a keepalive stream, renewing `first` to get it going (grpc-go servers send the
/// response headers with the first response). Bounded: 2 × 10 s.
async fn open_keepalive(
    client: &mut LeaseClient<Channel>,
    first: i64,
) -> Result<KeepAliveStream, String> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(LeaseKeepAliveRequest { id: first })
        .await
        .map_err(|_| "queueing the first keepalive".to_string())?;
    let mut stream = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.lease_keep_alive(ReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| format!("opening a keepalive stream: no answer within {REQUEST_TIMEOUT:?}"))?
    .map_err(|e| format!("opening a keepalive stream: {e}"))?
    .into_inner();
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(_))) => Ok((tx, stream)),
        Ok(Ok(None)) => Err("the server closed a new keepalive stream".to_string()),
        Ok(Err(e)) => Err(format!("first keepalive: {e}")),
        Err(_) => Err(format!(
            "first keepalive: no answer within {REQUEST_TIMEOUT:?}"
        )),
    }
}

/// One keepalive round trip for `id`. `Err((why, broken))`: `broken` when the stream is no
/// longer usable (it is then opened again).
async fn keep_alive_once(stream: &mut KeepAliveStream, id: i64) -> Result<(), (String, bool)> {
    let (tx, rx) = stream;
    let round_trip = async {
        tx.send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| ("the keepalive stream closed".to_string(), true))?;
        match rx.message().await {
            Ok(Some(r)) if r.id == id && r.ttl > 0 => Ok(()),
            Ok(Some(r)) if r.id == id => Err((format!("lease {id:x} not found (expired?)"), false)),
            Ok(Some(r)) => Err((
                format!("keepalive for {id:x} answered for {:x}", r.id),
                true,
            )),
            Ok(None) => Err(("the server closed the keepalive stream".to_string(), true)),
            Err(e) => Err((format!("keepalive: {e}"), true)),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, round_trip)
        .await
        .unwrap_or_else(|_| {
            Err((
                format!("keepalive: no answer within {REQUEST_TIMEOUT:?}"),
                true,
            ))
        })
}

/// `clients` clients renewing `leases` round-robin for `seconds` (see the module doc).
async fn run_lease_level(
    endpoints: &[String],
    leases: &[i64],
    clients: usize,
    conns: usize,
    seconds: u64,
) -> Stats {
    assert!(!leases.is_empty(), "lease-keepalive without leases");
    let conns = conns.min(clients).max(1);
    let mut pool = Vec::new();
    for i in 0..conns {
        pool.push(grpc_channel(&endpoints[i % endpoints.len()]).await);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = LeaseClient::new(pool[c % conns].clone());
        let mut mine: Vec<i64> = leases.iter().skip(c).step_by(clients).copied().collect();
        if mine.is_empty() {
            mine.push(leases[c % leases.len()]);
        }
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::new();
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            let mut stream: Option<KeepAliveStream> = None;
            let mut next = 0usize;
            while Instant::now() < deadline {
                if stream.is_none() {
                    match open_keepalive(&mut client, mine[0]).await {
                        Ok(opened) => stream = Some(opened),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(open) = stream.as_mut() else {
                    continue;
                };
                let id = mine[next % mine.len()];
                next += 1;
                let t = Instant::now();
                match keep_alive_once(open, id).await {
                    Ok(()) => latencies.record(t.elapsed().as_nanos() as u64),
                    Err((e, broken)) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        if broken {
                            stream = None;
                        }
                        // No busy loop against a failing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut all = Histogram::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (latencies, e, first) = t.await.expect("keepalive client panicked");
        all.merge(&latencies);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Stats {
        ops_per_sec: all.total as f64 / elapsed,
        p50_ms: all.quantile_ms(0.50),
        p99_ms: all.quantile_ms(0.99),
        errors,
        first_error,
        note: None,
    }
}

/// Grants `count` leases (TTL 60 s) over a pool of connections to `endpoints`.
async fn grant_leases(server: &str, endpoints: &[String], count: usize, conns: usize) -> Vec<i64> {
    let start = Instant::now();
    let work = async {
        let mut pool = Vec::new();
        for i in 0..conns.clamp(1, count) {
            pool.push(connect(&endpoints[i % endpoints.len()]).await);
        }
        let results: Vec<_> = futures::stream::iter(0..count)
            .map(|i| {
                let mut client = pool[i % pool.len()].clone();
                async move { client.lease_grant(LEASE_TTL, None).await }
            })
            .buffer_unordered(LEASE_GRANT_CONCURRENCY)
            .collect()
            .await;
        results
            .into_iter()
            .map(|r| {
                r.map(|g| g.id())
                    .unwrap_or_else(|e| panic!("{server}: granting a lease: {e}"))
            })
            .collect::<Vec<i64>>()
    };
    let limit = Duration::from_secs(60) + Duration::from_millis(10) * count as u32;
    let leases = tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| panic!("{server}: granting {count} leases took over {limit:?}"));
    eprintln!(
        "{server}: granted {count} leases (TTL {LEASE_TTL} s) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    leases
}

/// Revokes `leases` (cleanup, so their expiry does not load a later measurement). Bounded;
/// failures are only reported.
async fn revoke_leases(server: &str, endpoints: &[String], leases: &[i64], conns: usize) {
    if leases.is_empty() {
        return;
    }
    let start = Instant::now();
    let work = async {
        let mut pool = Vec::new();
        for i in 0..conns.clamp(1, leases.len()) {
            pool.push(connect(&endpoints[i % endpoints.len()]).await);
        }
        futures::stream::iter(leases.iter().enumerate())
            .map(|(i, &id)| {
                let mut client = pool[i % pool.len()].clone();
                async move { client.lease_revoke(id).await.is_err() }
            })
            .buffer_unordered(LEASE_GRANT_CONCURRENCY)
            .filter(|&failed| std::future::ready(failed))
            .count()
            .await
    };
    let limit = Duration::from_secs(60) + Duration::from_millis(10) * leases.len() as u32;
    match tokio::time::timeout(limit, work).await {
        Ok(0) => eprintln!(
            "{server}: revoked {} leases in {:.2} s",
            leases.len(),
            start.elapsed().as_secs_f64()
        ),
        Ok(failed) => eprintln!(
            "{server}: revoking leases: {failed} of {} failed (expired?)",
            leases.len()
        ),
        Err(_) => eprintln!(
            "{server}: revoking {} leases took over {limit:?}",
            leases.len()
        ),
    }
}

/// What goes under the tables: failed requests, the leaders seen, per-level notes.
#[derive(Default)]
struct Notes {
    errors: Vec<String>,
    leaders: BTreeMap<&'static str, BTreeSet<String>>,
    info: Vec<String>,
    /// A failed request or a stall since the members' logs were last kept.
    trouble: bool,
}

impl Notes {
    fn print(&self) {
        let mut lines = Vec::new();
        for (server, leaders) in &self.leaders {
            let leaders: Vec<&str> = leaders.iter().map(String::as_str).collect();
            let what = if leaders.len() == 1 {
                "leader"
            } else {
                "leader CHANGED during the run"
            };
            lines.push(format!("{server} {what}: {}", leaders.join(", ")));
        }
        lines.extend(self.info.iter().cloned());
        lines.extend(self.errors.iter().cloned());
        if self.errors.is_empty() {
            lines.push("no failed requests".to_string());
        }
        for l in lines {
            println!("- {l}");
        }
    }
}

/// One level on one server: plan, load (bounded), progress on stderr, notes. `leases` are the
/// server's granted leases (lease-keepalive only).
#[allow(clippy::too_many_arguments)]
async fn measure(
    deployment: &Deployment<'_>,
    server: &'static str,
    workload: Workload,
    level: usize,
    args: &Args,
    value: &[u8],
    leases: &[i64],
    notes: &mut Notes,
) -> Stats {
    let plan = deployment.plan(args.endpoints_mode).await;
    let limit = Duration::from_secs(args.seconds) + workload.slack();
    let run = async {
        match workload {
            Workload::Put | Workload::RangeLinearizable | Workload::RangeSerializable => {
                run_level(
                    &plan.endpoints,
                    workload,
                    level,
                    args.conns,
                    args.seconds,
                    value,
                )
                .await
            }
            Workload::WatchFanout => {
                let endpoint = &plan.endpoints[0];
                let mut stats = run_watch_level(endpoint, level, args).await;
                stats.note = stats
                    .note
                    .map(|n| format!("on {}, {n}", deployment.describe(endpoint, &plan)));
                stats
            }
            Workload::LeaseKeepalive => {
                run_lease_level(&plan.endpoints, leases, level, args.conns, args.seconds).await
            }
        }
    };
    let stats = tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
        panic!(
            "{server} {} with {level} {} did not finish within {limit:?}",
            workload.name(),
            workload.level_name()
        )
    });
    eprintln!(
        "{server} {} {}={level}: {:.0} {}, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
        workload.name(),
        workload.level_name(),
        stats.ops_per_sec,
        workload.unit(),
        stats.p50_ms,
        stats.p99_ms,
        stats.errors,
        plan.leader
            .as_ref()
            .map(|l| format!(", leader {l}"))
            .unwrap_or_default()
    );
    if let Some(leader) = plan.leader {
        notes.leaders.entry(server).or_default().insert(leader);
    }
    if let Some(note) = &stats.note {
        eprintln!("  {note}");
        notes.trouble |= note.starts_with(STALL);
        notes.info.push(format!(
            "{server} {} {}={level} {note}",
            workload.name(),
            workload.level_name()
        ));
    }
    if stats.errors > 0 {
        notes.trouble = true;
        notes.errors.push(format!(
            "{server} {} {}={level}: {} failed requests, first: {}",
            workload.name(),
            workload.level_name(),
            stats.errors,
            stats.first_error.as_deref().unwrap_or("?")
        ));
    }
    stats
}

/// After a failed request or a stall, copies the cluster members' logs somewhere that
/// outlives the cluster, and says where in the notes.
fn keep_logs(deployment: &Deployment<'_>, server: &str, notes: &mut Notes) {
    let Deployment::Cluster(cluster) = deployment else {
        return;
    };
    if !std::mem::take(&mut notes.trouble) {
        return;
    }
    let to = std::env::temp_dir().join(format!(
        "cairn-bench-logs-{}-{}",
        std::process::id(),
        server.to_lowercase()
    ));
    match cluster.keep_logs(&to) {
        Ok(()) => notes
            .info
            .push(format!("{server} members' logs kept in {}", to.display())),
        Err(e) => notes
            .info
            .push(format!("{server} members' logs could not be kept: {e}")),
    }
}

/// One server's state between workloads: range keys written, leases granted.
#[derive(Default)]
struct Prepared {
    seeded: bool,
    leases: Vec<i64>,
}

/// Writes the range keys (once) or grants the leases a workload needs on one server.
async fn prepare(
    deployment: &Deployment<'_>,
    server: &'static str,
    workload: Workload,
    args: &Args,
    value: &[u8],
    prepared: &mut Prepared,
) {
    if workload.is_range() && !prepared.seeded {
        let plan = deployment.plan(args.endpoints_mode).await;
        seed(server, &plan.endpoints[0], &deployment.members(), value).await;
        prepared.seeded = true;
    }
    if workload == Workload::LeaseKeepalive {
        let plan = deployment.plan(args.endpoints_mode).await;
        prepared.leases =
            grant_leases(server, &plan.endpoints, args.leases as usize, args.conns).await;
    }
}

/// Undoes `prepare` where it matters for later workloads: revokes the leases.
async fn finish(
    deployment: &Deployment<'_>,
    server: &'static str,
    args: &Args,
    prepared: &mut Prepared,
) {
    let leases = std::mem::take(&mut prepared.leases);
    if !leases.is_empty() {
        let plan = deployment.plan(args.endpoints_mode).await;
        revoke_leases(server, &plan.endpoints, &leases, args.conns).await;
    }
}

/// Every workload and level on one server, in order; range keys written once.
async fn measure_all(
    deployment: &Deployment<'_>,
    server: &'static str,
    workloads: &[Workload],
    args: &Args,
    value: &[u8],
    notes: &mut Notes,
) -> Vec<Vec<Stats>> {
    let mut prepared = Prepared::default();
    let mut out = Vec::new();
    for &w in workloads {
        prepare(deployment, server, w, args, value, &mut prepared).await;
        let mut rows = Vec::new();
        for &level in w.levels(args) {
            rows.push(
                measure(
                    deployment,
                    server,
                    w,
                    level,
                    args,
                    value,
                    &prepared.leases,
                    notes,
                )
                .await,
            );
        }
        finish(deployment, server, args, &mut prepared).await;
        out.push(rows);
    }
    out
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".to_string()
    } else {
        format!("{v:.2}")
    }
}

fn print_table_header(workload: Workload) {
    let (level, unit) = (workload.level_name(), workload.unit());
    println!(
        "| workload | {level} | Cairn {unit} | Cairn p50 ms | Cairn p99 ms | etcd {unit} | etcd p50 ms | etcd p99 ms | Cairn/etcd |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(workload: Workload, level: usize, cairn: &Stats, etcd: &Stats) {
    let ratio = if etcd.ops_per_sec > 0.0 {
        format!("{:.2}", cairn.ops_per_sec / etcd.ops_per_sec)
    } else {
        "–".to_string()
    };
    println!(
        "| {} | {level} | {:.0} | {} | {} | {:.0} | {} | {} | {ratio} |",
        workload.name(),
        cairn.ops_per_sec,
        ms(cairn.p50_ms),
        ms(cairn.p99_ms),
        etcd.ops_per_sec,
        ms(etcd.p50_ms),
        ms(etcd.p99_ms),
    );
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn etcd_version() -> String {
    std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.strip_prefix("etcd Version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "?".to_string())
}

fn header_line(args: &Args, workloads: &[Workload]) -> String {
    let command: Vec<String> = std::env::args().collect();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".to_string());
    if args.failover_rounds.is_some() || args.fault_rounds.is_some() || args.scale_keys.is_some() {
        // Their own clusters and clients: the rest does not apply.
        return format!(
            "`{}` · nproc {nproc} · CPU: {} · etcd {}",
            command.join(" "),
            cpu_model(),
            etcd_version(),
        );
    }
    let mode = match args.endpoints_mode {
        EndpointsMode::Leader => "leader (every connection to the leader)".to_string(),
        EndpointsMode::All => {
            "all (connection i to endpoint i % N, followers first, leader last)".to_string()
        }
    };
    let (members, mode) = if !args.target.is_empty() {
        (
            format!("target {}", args.target.join(",")),
            match args.endpoints_mode {
                EndpointsMode::Leader => mode,
                EndpointsMode::All => "all (connection i to target i % N)".to_string(),
            },
        )
    } else if args.members == 1 {
        ("1".to_string(), "n/a (single member)".to_string())
    } else {
        (args.members.to_string(), mode)
    };
    let mut extra = String::new();
    if workloads.contains(&Workload::WatchFanout) {
        extra.push_str(&format!(
            " · watch-fanout: prefix `{FAN_PREFIX}` on one member, ≤ {} streams, one writer at \
             {} puts/s",
            args.watch_streams, args.watch_rate
        ));
    }
    if workloads.contains(&Workload::LeaseKeepalive) {
        extra.push_str(&format!(
            " · lease-keepalive: {} leases (TTL {LEASE_TTL} s), one keepalive stream per client",
            args.leases
        ));
    }
    format!(
        "`{}` · members: {members} · endpoints mode: {mode} · value size: {} B · {} s per level · \
         ≤ {} connections{extra} · nproc {nproc} · CPU: {} · etcd {}",
        command.join(" "),
        args.val_size,
        args.seconds,
        args.conns,
        cpu_model(),
        etcd_version(),
    )
}

async fn run_target(args: &Args, workloads: &[Workload], value: &[u8]) {
    let deployment = Deployment::Target(args.target.clone());
    let mut notes = Notes::default();
    let results = measure_all(&deployment, "target", workloads, args, value, &mut notes).await;
    for (&w, rows) in workloads.iter().zip(&results) {
        println!(
            "| workload | {} | {} | p50 ms | p99 ms |",
            w.level_name(),
            w.unit()
        );
        println!("|---|---:|---:|---:|---:|");
        for (&level, r) in w.levels(args).iter().zip(rows) {
            println!(
                "| {} | {level} | {:.0} | {} | {} |",
                w.name(),
                r.ops_per_sec,
                ms(r.p50_ms),
                ms(r.p99_ms)
            );
        }
        println!();
    }
    notes.print();
}

/// One member each, side by side; each level measured on etcd, then Cairn; rows as they come.
async fn run_single(args: &Args, workloads: &[Workload], value: &[u8]) {
    let mut flags = auth_flags(args);
    let tls_dir = tempfile::tempdir().expect("temp dir");
    if args.tls {
        flags.extend(tls_flags(tls_dir.path()));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (etcd_node, cairn_node) = if args.tls {
        let ca = tls_dir.path().join("bench-ca.crt");
        let cacert = format!("--cacert={}", ca.display());
        (
            EtcdNode::start_https(&flags, &[&cacert]),
            CairnNode::start_https(&flags),
        )
    } else {
        (EtcdNode::start(&flags), CairnNode::start(&flags))
    };
    enable_auth(args, &etcd_node.endpoint()).await;
    enable_auth(args, &cairn_node.endpoint()).await;
    let etcd = Deployment::Single(etcd_node.endpoint());
    let cairn = Deployment::Single(cairn_node.endpoint());
    let mut notes = Notes::default();
    let mut etcd_prepared = Prepared::default();
    let mut cairn_prepared = Prepared::default();
    for &w in workloads {
        prepare(&etcd, "etcd", w, args, value, &mut etcd_prepared).await;
        prepare(&cairn, "Cairn", w, args, value, &mut cairn_prepared).await;
        print_table_header(w);
        for &level in w.levels(args) {
            let e = measure(
                &etcd,
                "etcd",
                w,
                level,
                args,
                value,
                &etcd_prepared.leases,
                &mut notes,
            )
            .await;
            let c = measure(
                &cairn,
                "Cairn",
                w,
                level,
                args,
                value,
                &cairn_prepared.leases,
                &mut notes,
            )
            .await;
            print_row(w, level, &c, &e);
        }
        println!();
        finish(&etcd, "etcd", args, &mut etcd_prepared).await;
        finish(&cairn, "Cairn", args, &mut cairn_prepared).await;
    }
    notes.print();
}

/// An N-member Cairn cluster, measured and stopped; then an N-member etcd cluster.
async fn run_clusters(args: &Args, workloads: &[Workload], value: &[u8]) {
    let mut notes = Notes::default();
    let mut results = Vec::new();
    for (server, flavor) in [("Cairn", Flavor::Cairn), ("etcd", Flavor::Etcd)] {
        eprintln!("starting a {}-member {server} cluster", args.members);
        let flags = auth_flags(args);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let cluster = Cluster::start(flavor, usize::from(args.members), &flags).await;
        enable_auth(args, &cluster.endpoints()[0]).await;
        let deployment = Deployment::Cluster(&cluster);
        results.push(measure_all(&deployment, server, workloads, args, value, &mut notes).await);
        keep_logs(&deployment, server, &mut notes);
        drop(cluster);
    }
    let (cairn, etcd) = (&results[0], &results[1]);
    for (i, &w) in workloads.iter().enumerate() {
        print_table_header(w);
        for (j, &level) in w.levels(args).iter().enumerate() {
            print_row(w, level, &cairn[i][j], &etcd[i][j]);
        }
        println!();
    }
    notes.print();
}

/// The mean of two runs of one level (throughput and latency percentiles).
fn mean(a: &Stats, b: &Stats) -> Stats {
    Stats {
        ops_per_sec: (a.ops_per_sec + b.ops_per_sec) / 2.0,
        p50_ms: (a.p50_ms + b.p50_ms) / 2.0,
        p99_ms: (a.p99_ms + b.p99_ms) / 2.0,
        errors: a.errors + b.errors,
        first_error: a.first_error.clone().or_else(|| b.first_error.clone()),
        note: None,
    }
}

/// A workload's throughput without and with a plugin bound (see `Args::plugin`), on the same
/// Cairn deployment, and the per-call cost (instantiate + call) from the members' own
/// histograms.
async fn plugin_overhead(args: &Args, workloads: &[Workload], plugin: &std::path::Path) {
    assert!(
        args.plugin_kind != PluginKind::Policy || args.auth != AuthMode::Off,
        "--plugin-kind policy needs --auth: root is never asked"
    );
    let single;
    let cluster;
    let flags = auth_flags(args);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let deployment = if args.members == 1 {
        single = CairnNode::start(&flags);
        Deployment::Single(single.endpoint())
    } else {
        cluster = Cluster::start(Flavor::Cairn, args.members as usize, &flags).await;
        Deployment::Cluster(&cluster)
    };
    let endpoint = deployment.members()[0].clone();
    enable_auth(args, &endpoint).await;
    let cairnctl = cairn_tests::binary_path().with_file_name("cairnctl");
    let run = |argv: &[&str]| {
        let mut command = std::process::Command::new(&cairnctl);
        command.arg(format!("--endpoints={endpoint}"));
        if args.auth != AuthMode::Off {
            command.arg("--user=root:rootpw");
        }
        let out = command.args(argv).output().expect("cairnctl runs");
        assert!(
            out.status.success(),
            "cairnctl {argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "plugin",
        "install",
        "bench-plugin",
        plugin.to_str().expect("utf-8 path"),
    ]);
    let bind = || {
        run(&[
            "plugin",
            "bind",
            "bench-plugin",
            "--plugin",
            "bench-plugin",
            "--kind",
            args.plugin_kind.name(),
            "--key",
            &args.plugin_key,
            "--prefix",
            "--config",
            &args.plugin_config,
        ])
    };
    let mut notes = Notes::default();
    if args.plugin_kind == PluginKind::Reactor {
        bind();
        reactor_lag(&deployment, args, &mut notes).await;
        keep_logs(&deployment, "Cairn", &mut notes);
        notes.print();
        return;
    }
    let workload = match args.plugin_kind {
        PluginKind::WatchFilter => Workload::WatchFanout,
        _ => Workload::Put,
    };
    assert!(
        workloads == [workload],
        "--plugin-kind {} measures --workload {}",
        args.plugin_kind.name(),
        workload.name()
    );
    // A JSON string of --val-size bytes, so a schema guard has something to parse.
    let mut value = vec![b'x'; args.val_size.max(2)];
    value[0] = b'"';
    *value.last_mut().expect("at least two bytes") = b'"';
    // Each level runs plain, with, with, plain (ABBA) and averages each pair, so the store's
    // growth and the compactions left behind by earlier runs weigh on both sides alike
    // instead of all on the side measured second.
    let with = args.plugin_kind.bound();
    let mut plain = Vec::new();
    let mut bound = Vec::new();
    for &level in workload.levels(args) {
        let mut measure_once = async |server| {
            measure(
                &deployment,
                server,
                workload,
                level,
                args,
                &value,
                &[],
                &mut notes,
            )
            .await
        };
        let a1 = measure_once("Cairn").await;
        bind();
        let b1 = measure_once(with).await;
        let b2 = measure_once(with).await;
        run(&["plugin", "unbind", "bench-plugin"]);
        let a2 = measure_once("Cairn").await;
        plain.push(mean(&a1, &a2));
        bound.push(mean(&b1, &b2));
    }
    let kind = args.plugin_kind.name();
    let unit = workload.unit();
    println!(
        "| {} | plain {unit} | p50 ms | p99 ms | with {kind} {unit} | p50 ms | p99 ms | with/plain |",
        workload.level_name()
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((level, p), g) in workload.levels(args).iter().zip(&plain).zip(&bound) {
        println!(
            "| {level} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2} |",
            p.ops_per_sec,
            ms(p.p50_ms),
            ms(p.p99_ms),
            g.ops_per_sec,
            ms(g.p50_ms),
            ms(g.p99_ms),
            g.ops_per_sec / p.ops_per_sec
        );
    }
    println!();
    // Each member's calls: the histogram of the calls it ran, and (guards and policies)
    // where the verdicts were reached.
    for member in deployment.members() {
        let text = reqwest::get(format!("http://{member}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        let (p50, p99, calls) = histogram_quantiles(&text, "cairn_plugin_call_duration_seconds");
        let verdicts: Vec<String> = ["proposed", "accepted", "stale", "evaluated"]
            .iter()
            .map(|place| {
                let sample = format!("cairn_plugin_verdicts_total{{place=\"{place}\"}} ");
                let n = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&sample))
                    .unwrap_or("0");
                format!("{place} {n}")
            })
            .collect();
        println!(
            "- {member}: {calls} plugin calls run here, per call (instantiate + call) p50 ≤ {:.0} µs, p99 ≤ {:.0} µs (histogram bucket bounds); verdicts: {}",
            p50 * 1e6,
            p99 * 1e6,
            verdicts.join(", ")
        );
    }
    keep_logs(&deployment, "Cairn", &mut notes);
    notes.print();
}

/// Where `reactor_lag` writes source objects, and where its index reactor's entries go
/// (bind with `--plugin-key lag/src/` and a config naming these).
const LAG_SOURCE: &str = "lag/src/";
const LAG_INDEX: &str = "lag/idx/n/";

/// Reactor lag: at each level, `clients` clients put JSON objects `{"n": "<i>"}` under
/// [`LAG_SOURCE`] back to back while one watcher follows [`LAG_INDEX`], where an index
/// reactor (`plugins/index-reactor`, field `n`) writes `<index>n/<i>/<key>` for each. The lag
/// of one write is from its put's acknowledgement (its source revision committed) to the
/// watcher receiving its index entry (the reactor's step committed and delivered).
async fn reactor_lag(deployment: &Deployment<'_>, args: &Args, notes: &mut Notes) {
    // One write first, waited for: the reactor's module compiles on its first step, which
    // is not lag.
    let plan = deployment.plan(args.endpoints_mode).await;
    let mut client = connect(&plan.endpoints[0]).await;
    client
        .put(format!("{LAG_SOURCE}warm-up"), r#"{"n": "0"}"#, None)
        .await
        .expect("warm-up put");
    let warmed = Instant::now();
    loop {
        let found = client
            .get(format!("{LAG_INDEX}0/{LAG_SOURCE}warm-up"), None)
            .await
            .expect("read the index");
        if !found.kvs().is_empty() {
            break;
        }
        assert!(
            warmed.elapsed() < WATCH_DRAIN_LIMIT,
            "the reactor never indexed its first write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut acked_total = 1u64;
    println!(
        "| clients | source puts/s | derived entries/s | lag p50 ms | lag p99 ms | not seen by the watcher | index entries - source keys |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &level in &args.clients {
        let plan = deployment.plan(args.endpoints_mode).await;
        let base = Instant::now();
        let watcher = connect(&plan.endpoints[0]).await;
        let (tx, mut arrivals) = mpsc::unbounded_channel::<(String, u64)>();
        let mut watch_client = watcher.watch_client();
        let mut stream = watch_client
            .watch(LAG_INDEX, Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch the index");
        let follow = tokio::spawn(async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("reactor lag: the index watch failed: {e}");
                        break;
                    }
                };
                if message.canceled() {
                    eprintln!(
                        "reactor lag: the index watch was canceled: {}",
                        message.cancel_reason()
                    );
                }
                let now = nanos_since(base);
                for event in message.events() {
                    let Some(kv) = event.kv() else {
                        continue;
                    };
                    if event.event_type() != etcd_client::EventType::Put {
                        continue;
                    }
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    // <index>n/<i>/<source key>
                    if let Some((_, source)) = key
                        .strip_prefix(LAG_INDEX)
                        .and_then(|rest| rest.split_once('/'))
                    {
                        let _ = tx.send((source.to_string(), now));
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for c in 0..level {
            let mut client = connect(&plan.endpoints[c % plan.endpoints.len()]).await;
            tasks.spawn(async move {
                let mut acks = Vec::new();
                let mut errors = 0u64;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("{LAG_SOURCE}{level}-{c}-{i}");
                    let value = format!(r#"{{"n": "{i}"}}"#);
                    match client.put(key.clone(), value, None).await {
                        Ok(_) => acks.push((key, nanos_since(base))),
                        Err(_) => errors += 1,
                    }
                    i += 1;
                }
                (acks, errors)
            });
        }
        let mut acked = HashMap::new();
        let mut errors = 0;
        while let Some(done) = tasks.join_next().await {
            let (acks, e) = done.expect("a put client");
            acked.extend(acks);
            errors += e;
        }
        let load = started.elapsed();
        // Every acknowledged source write gets its entry: wait for them, at most a minute,
        // or WATCH_STALL without one.
        let mut latencies = Histogram::new();
        let mut seen = 0usize;
        let mut last_derived = Instant::now();
        let limit = Instant::now() + WATCH_DRAIN_LIMIT;
        while seen < acked.len() && Instant::now() < limit {
            match tokio::time::timeout(WATCH_STALL, arrivals.recv()).await {
                Ok(Some((source, at))) => {
                    if let Some(ack) = acked.get(&source) {
                        latencies.record(at.saturating_sub(*ack));
                        seen += 1;
                        last_derived = Instant::now();
                    }
                }
                _ => break,
            }
        }
        follow.abort();
        let derived_secs = last_derived.duration_since(started).as_secs_f64();
        let missing = acked.len() - seen;
        // Exactly once, whatever the watcher saw: the index holds one entry per source key
        // (once the reactor has caught up; unacknowledged puts may have been applied too).
        acked_total += acked.len() as u64;
        let caught_up = Instant::now() + WATCH_DRAIN_LIMIT;
        let surplus = loop {
            let count = |prefix: &str| {
                let mut client = client.clone();
                let prefix = prefix.to_string();
                async move {
                    client
                        .get(
                            prefix,
                            Some(GetOptions::new().with_prefix().with_count_only()),
                        )
                        .await
                        .expect("count")
                        .count()
                }
            };
            let (entries, sources) = (count(LAG_INDEX).await, count(LAG_SOURCE).await);
            if entries >= sources || Instant::now() >= caught_up {
                break entries - sources;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "| {level} | {:.0} | {:.0} | {} | {} | {missing} | {surplus} |",
            acked.len() as f64 / load.as_secs_f64(),
            seen as f64 / derived_secs,
            ms(latencies.quantile_ms(0.5)),
            ms(latencies.quantile_ms(0.99)),
        );
        if errors > 0 || missing > 0 || surplus != 0 {
            notes.trouble = true;
            notes.errors.push(format!(
                "reactor lag with {level} clients: {errors} failed puts, {missing} entries not seen by the watcher, index entries - source keys = {surplus} ({acked_total} acknowledged source puts so far)"
            ));
        }
    }
    println!();
}

/// The upper bounds of the buckets holding the 50th and 99th percentiles, and the count.
fn histogram_quantiles(text: &str, name: &str) -> (f64, f64, u64) {
    let bucket = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| l.starts_with(&bucket))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        let want = (total as f64 * q).ceil() as u64;
        buckets
            .iter()
            .find(|b| b.1 >= want)
            .map_or(f64::NAN, |b| b.0)
    };
    (at(0.5), at(0.99), total)
}

/// `--defrag-under-load`: puts with and without defragments going on (see the flag).
async fn defrag_overhead(args: &Args, value: &[u8]) {
    let single;
    let cluster;
    let deployment = if args.members == 1 {
        single = CairnNode::start(&[]);
        Deployment::Single(single.endpoint())
    } else {
        cluster = Cluster::start(Flavor::Cairn, args.members as usize, &[]).await;
        Deployment::Cluster(&cluster)
    };
    let members = deployment.members();
    let mut notes = Notes::default();
    let mut plain = Vec::new();
    let mut busy = Vec::new();
    let mut defrags = 0u64;
    for &level in Workload::Put.levels(args) {
        let mut measure_once = async |server| {
            measure(
                &deployment,
                server,
                Workload::Put,
                level,
                args,
                value,
                &[],
                &mut notes,
            )
            .await
        };
        let a1 = measure_once("Cairn").await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looping = {
            let (stop, members) = (stop.clone(), members.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for member in &members {
                        let mut client = cairn_tests::cluster::connect(member).await;
                        let revision = client
                            .get("x", None)
                            .await
                            .ok()
                            .and_then(|r| r.header().map(|h| h.revision()))
                            .unwrap_or(0);
                        if revision > 1000 {
                            let _ = client.compact(revision - 1000, None).await;
                        }
                        client.defragment().await.expect("defragment");
                        done += 1;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                done
            })
        };
        let b1 = measure_once("Cairn defragmenting").await;
        let b2 = measure_once("Cairn defragmenting").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        defrags += looping.await.expect("defragment loop");
        let a2 = measure_once("Cairn").await;
        plain.push(mean(&a1, &a2));
        busy.push(mean(&b1, &b2));
    }
    println!(
        "| clients | plain puts/s | p50 ms | p99 ms | defragmenting puts/s | p50 ms | p99 ms | p99 ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for ((level, p), d) in Workload::Put.levels(args).iter().zip(&plain).zip(&busy) {
        println!(
            "| {level} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2} |",
            p.ops_per_sec,
            ms(p.p50_ms),
            ms(p.p99_ms),
            d.ops_per_sec,
            ms(d.p50_ms),
            ms(d.p99_ms),
            d.p99_ms / p.p99_ms
        );
    }
    println!();
    println!("{defrags} defragments ran during the defragmenting runs.");
    keep_logs(&deployment, "Cairn", &mut notes);
    notes.print();
}

/// The rounds of a Cairn-against-etcd mode in the order they run: etcd, Cairn, Cairn, etcd,
/// and so on, so that neither server always follows the other on a warmed machine.
fn alternating(rounds: u32) -> impl Iterator<Item = (u32, &'static str, Flavor)> {
    (0..rounds).flat_map(|round| {
        let order = if round % 2 == 0 {
            [("etcd", Flavor::Etcd), ("Cairn", Flavor::Cairn)]
        } else {
            [("Cairn", Flavor::Cairn), ("etcd", Flavor::Etcd)]
        };
        order
            .into_iter()
            .map(move |(server, flavor)| (round + 1, server, flavor))
    })
}

/// After a failed attempt started at `attempt`: if the error came at once (no leader yet), a
/// short pause, as a retrying client makes, rather than a busy loop that takes the CPU from
/// the election.
async fn pause_after_failure(attempt: Instant) {
    const RETRY_PAUSE: Duration = Duration::from_millis(10);
    if attempt.elapsed() < RETRY_PAUSE {
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// `--failover-rounds`: each attempt to write after the leader's kill waits at most this long
/// (etcdctl's `--command-timeout=1s`).
const FAILOVER_ATTEMPT: Duration = Duration::from_secs(1);
/// A round fails if no write is accepted this long after the kill.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// One leader kill, as a client saw it.
struct Failover {
    /// From the SIGKILL to the acknowledgement of the first write after it.
    seconds: f64,
    /// Attempts that failed (or timed out) before it.
    failed: u32,
    first_error: Option<String>,
}

/// Starts a fresh `members`-member cluster, kills its leader with SIGKILL, and writes through
/// the surviving members (one client over all of them, as etcdctl with their endpoints) until
/// a write is accepted, each attempt bounded by [`FAILOVER_ATTEMPT`] and retried at once.
async fn failover_round(flavor: Flavor, server: &str, members: usize) -> Failover {
    let mut cluster = Cluster::start(flavor, members, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await;
    let survivors: Vec<String> = cluster
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, m)| m.endpoint())
        .collect();
    let options = ConnectOptions::new()
        .with_connect_timeout(FAILOVER_ATTEMPT)
        .with_timeout(FAILOVER_ATTEMPT);
    let mut client = Client::connect(survivors.clone(), Some(options))
        .await
        .unwrap_or_else(|e| panic!("{server}: connect to {survivors:?}: {e}"));
    // One write first: the connections are up and the cluster takes writes.
    client
        .put("failover/before", "v", None)
        .await
        .unwrap_or_else(|e| panic!("{server}: a write before the kill: {e}"));
    let killed = Instant::now();
    cluster.members[leader].kill9();
    let mut failed = 0;
    let mut first_error = None;
    loop {
        let attempt = Instant::now();
        let error =
            match tokio::time::timeout(FAILOVER_ATTEMPT, client.put("failover/after", "v", None))
                .await
            {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {FAILOVER_ATTEMPT:?}"),
            };
        failed += 1;
        first_error.get_or_insert(error);
        assert!(
            killed.elapsed() < FAILOVER_LIMIT,
            "{server}: no write accepted within {FAILOVER_LIMIT:?} of the leader's kill \
             ({failed} attempts, first error: {first_error:?})"
        );
        pause_after_failure(attempt).await;
    }
    let seconds = killed.elapsed().as_secs_f64();
    drop(cluster);
    Failover {
        seconds,
        failed,
        first_error,
    }
}

/// Leader kill to first accepted write, Cairn against etcd at their default election timeouts
/// (1 s), `--failover-rounds` rounds each, alternating etcd, Cairn, Cairn, etcd, ...; every
/// round on fresh clusters that run alone.
async fn failover(args: &Args, rounds: u32) {
    let members = usize::from(args.members);
    assert!(members >= 3, "--failover-rounds needs --members 3 or more");
    let mut rows = Vec::new();
    for (round, server, flavor) in alternating(rounds) {
        let outcome = failover_round(flavor, server, members).await;
        eprintln!(
            "round {round}: {server} accepted a write {:.2} s after the kill",
            outcome.seconds
        );
        rows.push((round, server, outcome));
    }
    println!("| round | server | kill → first accepted write, s | failed attempts | first error |");
    println!("|---:|---|---:|---:|---|");
    for (round, server, f) in &rows {
        println!(
            "| {round} | {server} | {:.2} | {} | {} |",
            f.seconds,
            f.failed,
            f.first_error.as_deref().unwrap_or("")
        );
    }
    println!();
    let summary = |server: &str| {
        let times: Vec<f64> = rows
            .iter()
            .filter(|(_, s, _)| *s == server)
            .map(|(_, _, f)| f.seconds)
            .collect();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let max = times.iter().copied().fold(0.0, f64::max);
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        (mean, min, max)
    };
    let (c_mean, c_min, c_max) = summary("Cairn");
    let (e_mean, e_min, e_max) = summary("etcd");
    println!(
        "Cairn: mean {c_mean:.2} s (min {c_min:.2}, max {c_max:.2}); etcd: mean {e_mean:.2} s \
         (min {e_min:.2}, max {e_max:.2}); Cairn/etcd {:.2}",
        c_mean / e_mean
    );
}

/// `--faults`: how long each round loads its cluster.
const FAULT_RUN: Duration = Duration::from_secs(30);
/// `--faults`: each put's timeout (a paused member never answers).
const FAULT_ATTEMPT: Duration = Duration::from_secs(2);

/// A fault the schedule injects, `at` after the load starts.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    RestartKilled,
    PauseLeader,
    PauseFollower,
    ResumePaused,
}

/// The same schedule for both servers: a leader killed and restarted, a leader paused and
/// resumed, a follower paused and resumed, a leader killed and restarted again.
const FAULT_SCHEDULE: [(u64, Fault); 8] = [
    (2, Fault::KillLeader),
    (5, Fault::RestartKilled),
    (9, Fault::PauseLeader),
    (12, Fault::ResumePaused),
    (16, Fault::PauseFollower),
    (19, Fault::ResumePaused),
    (23, Fault::KillLeader),
    (26, Fault::RestartKilled),
];

/// What one round under faults completed.
struct FaultRun {
    ops: u64,
    errors: u64,
    /// The longest stretch without an acknowledged put, in seconds.
    longest_gap: f64,
}

/// Loads a fresh 3-member cluster with `clients` clients putting back to back (each over its
/// own connection to all members, as etcdctl with every endpoint) for [`FAULT_RUN`], while
/// [`FAULT_SCHEDULE`] runs; counts the acknowledged puts.
async fn fault_round(flavor: Flavor, server: &str, clients: usize, value: &[u8]) -> FaultRun {
    let mut cluster = Cluster::start(flavor, 3, &[]).await;
    let endpoints = cluster.endpoints();
    let start = Instant::now();
    let deadline = start + FAULT_RUN;
    let mut load = JoinSet::new();
    for c in 0..clients {
        let endpoints = endpoints.clone();
        let value = value.to_vec();
        load.spawn(async move {
            let options = ConnectOptions::new()
                .with_connect_timeout(FAULT_ATTEMPT)
                .with_timeout(FAULT_ATTEMPT);
            let mut client = Client::connect(endpoints, Some(options))
                .await
                .expect("connect (lazy: never fails for reachable addresses)");
            let mut done = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let attempt = Instant::now();
                let put = client.put(format!("faults/{c}/{n}"), value.clone(), None);
                match tokio::time::timeout(FAULT_ATTEMPT, put).await {
                    Ok(Ok(_)) => done.push(start.elapsed().as_secs_f64()),
                    _ => {
                        errors += 1;
                        pause_after_failure(attempt).await;
                    }
                }
            }
            (done, errors)
        });
    }
    let mut killed = None;
    let mut paused = None;
    for (at, fault) in FAULT_SCHEDULE {
        tokio::time::sleep_until((start + Duration::from_secs(at)).into()).await;
        match fault {
            Fault::KillLeader | Fault::PauseLeader => {
                let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
                if let Fault::KillLeader = fault {
                    cluster.members[leader].kill9();
                    killed = Some(leader);
                } else {
                    cluster.members[leader].pause();
                    paused = Some(leader);
                }
            }
            Fault::PauseFollower => {
                let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
                let follower = (leader + 1) % cluster.members.len();
                cluster.members[follower].pause();
                paused = Some(follower);
            }
            Fault::RestartKilled => {
                if let Some(i) = killed.take() {
                    // It waits for the member's client port: off the runtime's workers.
                    tokio::task::block_in_place(|| cluster.members[i].restart());
                }
            }
            Fault::ResumePaused => {
                if let Some(i) = paused.take() {
                    cluster.members[i].resume();
                }
            }
        }
        eprintln!(
            "{server}: {fault:?} at {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    let mut times = Vec::new();
    let mut errors = 0;
    while let Some(joined) = load.join_next().await {
        let (done, failed) = joined.expect("load task");
        times.extend(done);
        errors += failed;
    }
    drop(cluster);
    times.sort_by(f64::total_cmp);
    let last = FAULT_RUN.as_secs() as usize;
    let mut per_second = vec![0u64; last + 1];
    for t in &times {
        per_second[(*t as usize).min(last)] += 1;
    }
    eprintln!("{server}: acknowledged puts per second: {per_second:?}");
    let mut longest_gap = times.first().copied().unwrap_or(FAULT_RUN.as_secs_f64());
    for pair in times.windows(2) {
        longest_gap = longest_gap.max(pair[1] - pair[0]);
    }
    FaultRun {
        ops: times.len() as u64,
        errors,
        longest_gap,
    }
}

/// Puts under the same fault schedule, Cairn against etcd (3 members each), `rounds` rounds
/// alternating etcd, Cairn, Cairn, etcd, ..., at the first `--clients` level.
async fn under_faults(args: &Args, rounds: u32, value: &[u8]) {
    let clients = args.clients[0];
    let mut rows = Vec::new();
    for (round, server, flavor) in alternating(rounds) {
        let run = fault_round(flavor, server, clients, value).await;
        eprintln!(
            "round {round}: {server} completed {} puts ({} failed)",
            run.ops, run.errors
        );
        rows.push((round, server, run));
    }
    println!(
        "| round | server | puts acknowledged in {} s | failed or timed out | longest gap, s |",
        FAULT_RUN.as_secs()
    );
    println!("|---:|---|---:|---:|---:|");
    for (round, server, r) in &rows {
        println!(
            "| {round} | {server} | {} | {} | {:.2} |",
            r.ops, r.errors, r.longest_gap
        );
    }
    println!();
    let total = |server: &str| -> u64 {
        rows.iter()
            .filter(|(_, s, _)| *s == server)
            .map(|(_, _, r)| r.ops)
            .sum()
    };
    println!(
        "Cairn/etcd acknowledged puts: {:.2}",
        total("Cairn") as f64 / total("etcd") as f64
    );
}

/// `--scale-keys`: puts in flight while loading.
const SCALE_IN_FLIGHT: usize = 256;
/// `--scale-keys`: longest a restarted member may take to serve the last key.
const SCALE_RESTART_LIMIT: Duration = Duration::from_secs(300);
/// `--scale-keys`: the backend quota both servers run with (16 GiB), so that neither refuses
/// writes (NOSPACE) before the load is done: ten million revisions outgrow etcd's default
/// 2 GiB.
const SCALE_QUOTA_BYTES: &str = "17179869184";

/// What `--scale-keys` writes.
struct ScaleLoad {
    /// Distinct keys, `scale/<n>`.
    keys: usize,
    /// Puts in all: put `i` writes key `i % keys`.
    revisions: usize,
    values: ScaleValues,
}

/// The values of a [`ScaleLoad`]'s puts.
enum ScaleValues {
    /// The same value for every put.
    Repeated(Vec<u8>),
    /// A fresh random value of this many bytes for every put (`--scale-random-values`).
    Random(usize),
}

impl ScaleLoad {
    fn key(n: usize) -> String {
        format!("scale/{n:010}")
    }

    fn value(&self) -> Vec<u8> {
        match &self.values {
            ScaleValues::Repeated(value) => value.clone(),
            ScaleValues::Random(len) => {
                let mut v = vec![0; *len];
                rand::Rng::fill(&mut rand::rng(), &mut v[..]);
                v
            }
        }
    }
}

/// One server after a [`ScaleLoad`].
struct Scale {
    load_seconds: f64,
    rss_mib: f64,
    disk_mib: f64,
    restart_seconds: f64,
    rss_after_restart_mib: f64,
}

/// The resident set of process `pid`, in MiB (from /proc).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Writes `load` to a fresh single member, then measures its RSS and data dir, stops it
/// (SIGTERM), starts it again over the same data dir and times the restart to the first
/// linearizable read of the last key written, at the store's last revision.
async fn scale_round(flavor: Flavor, server: &str, load: &ScaleLoad) -> Scale {
    let mut cluster =
        Cluster::start(flavor, 1, &["--quota-backend-bytes", SCALE_QUOTA_BYTES]).await;
    let endpoint = cluster.endpoints()[0].clone();
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(connect(&endpoint).await);
    }
    let started = Instant::now();
    let first_error = std::sync::Mutex::new(None);
    futures::stream::iter(0..load.revisions)
        .for_each_concurrent(SCALE_IN_FLIGHT, |n| {
            let mut client = clients[n % clients.len()].clone();
            let value = load.value();
            let first_error = &first_error;
            async move {
                if let Err(e) = client.put(ScaleLoad::key(n % load.keys), value, None).await {
                    first_error
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .get_or_insert(e);
                }
            }
        })
        .await;
    let load_seconds = started.elapsed().as_secs_f64();
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        panic!("{server}: loading {} revisions: {e}", load.revisions);
    }
    drop(clients);
    let member = &mut cluster.members[0];
    let pid = member.pid().expect("the member runs");
    let rss = rss_mib(pid);
    member.terminate();
    member.wait_for_exit(Duration::from_secs(60)).await;
    let disk_mib = cairn::storage::allocated_bytes(&member.data_dir) as f64 / (1024.0 * 1024.0);
    let restarted = Instant::now();
    tokio::task::block_in_place(|| member.restart());
    let last = ScaleLoad::key((load.revisions - 1) % load.keys);
    // Both servers start at revision 1 and every put adds one. (The puts complete in any
    // order, so the last key need not hold the last revision: the store's must be it.)
    let last_revision = load.revisions as i64 + 1;
    loop {
        let read = async {
            let mut client = Client::connect([&endpoint], Some(anonymous_options()))
                .await
                .ok()?;
            let got = client.get(last.as_str(), None).await.ok()?;
            got.kvs().first()?;
            Some(got.header()?.revision())
        };
        if let Ok(Some(revision)) = tokio::time::timeout(Duration::from_secs(2), read).await {
            assert_eq!(
                revision, last_revision,
                "{server}: the restarted member serves the wrong revision"
            );
            break;
        }
        assert!(
            restarted.elapsed() < SCALE_RESTART_LIMIT,
            "{server}: the restarted member did not serve {last} within {SCALE_RESTART_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_seconds = restarted.elapsed().as_secs_f64();
    let rss_after_restart_mib = rss_mib(member.pid().expect("the member runs"));
    drop(cluster);
    Scale {
        load_seconds,
        rss_mib: rss,
        disk_mib,
        restart_seconds,
        rss_after_restart_mib,
    }
}

/// Memory, disk and restart time after `load`, Cairn against etcd (one member each, one at a
/// time), `rounds` rounds alternating etcd, Cairn, Cairn, etcd, ...
async fn at_scale(load: &ScaleLoad, rounds: u32) {
    assert!(load.keys > 0, "--scale-keys must be at least 1");
    assert!(
        load.revisions >= load.keys,
        "--scale-revisions must be at least --scale-keys"
    );
    let mut rows = Vec::new();
    for (round, server, flavor) in alternating(rounds) {
        let s = scale_round(flavor, server, load).await;
        eprintln!(
            "round {round}: {server}: loaded in {:.1} s, RSS {:.0} MiB, disk {:.0} MiB, restart {:.2} s",
            s.load_seconds, s.rss_mib, s.disk_mib, s.restart_seconds
        );
        rows.push((round, server, s));
    }
    println!(
        "| round | server | load, s | RSS after load, MiB | data dir, MiB | restart to first read, s | RSS after restart, MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (round, server, s) in &rows {
        println!(
            "| {round} | {server} | {:.1} | {:.0} | {:.0} | {:.2} | {:.0} |",
            s.load_seconds, s.rss_mib, s.disk_mib, s.restart_seconds, s.rss_after_restart_mib
        );
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let workloads = expand_workloads(&args.workload);
    for &w in &workloads {
        assert!(
            w.levels(&args).iter().all(|&l| l > 0),
            "--{}: every level must be at least 1",
            w.level_name()
        );
    }
    assert!(
        !args.tls || (args.members == 1 && args.plugin.is_none() && args.target.is_empty()),
        "--tls runs single members side by side only"
    );
    let value = vec![b'v'; args.val_size];
    println!("{}", header_line(&args, &workloads));
    println!();
    if let Some(plugin) = &args.plugin {
        plugin_overhead(&args, &workloads, plugin).await;
    } else if args.defrag_under_load {
        defrag_overhead(&args, &value).await;
    } else if let Some(rounds) = args.failover_rounds {
        failover(&args, rounds).await;
    } else if let Some(rounds) = args.fault_rounds {
        under_faults(&args, rounds, &value).await;
    } else if let Some(keys) = args.scale_keys {
        let load = ScaleLoad {
            keys,
            revisions: args.scale_revisions.unwrap_or(keys),
            values: if args.scale_random_values {
                ScaleValues::Random(args.val_size)
            } else {
                ScaleValues::Repeated(value.clone())
            },
        };
        at_scale(&load, args.scale_rounds).await;
    } else if !args.target.is_empty() {
        run_target(&args, &workloads, &value).await;
    } else if args.members == 1 {
        run_single(&args, &workloads, &value).await;
    } else {
        run_clusters(&args, &workloads, &value).await;
    }
}
