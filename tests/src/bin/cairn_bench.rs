//! Put and range throughput and latency, Cairn against real etcd, side by side in one run.
//!
//! Starts fresh Cairn (the release binary next to this tool, or `CAIRN_BIN`) and etcd (from
//! `PATH`) servers, each in its own temporary data dir on loopback, runs the same workloads
//! against both at every concurrency level (`--clients`), and prints one Markdown table per
//! workload, preceded by a header line (command line, members, endpoints mode, value size,
//! seconds, `nproc` and CPU model) ready to paste into `docs/benchmarks.md`. Both servers
//! fsync every acknowledged write. Only one server's load runs at any moment.
//!
//! Workloads (`--workload`, `all` runs the three in this order):
//! - `put`: each client puts 8-byte keys (as etcd's benchmark tool does) back to back.
//! - `range-linearizable`: 1,000 keys `bench/<n>` are written once per server first, then each
//!   client gets a random one of them back to back (etcd-client's default, linearizable `get`).
//! - `range-serializable`: the same with serializable (member-local) gets.
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
//! # load running endpoints only (profiling), e.g. a cluster started by hand
//! ./target/release/cairn-bench --target 127.0.0.1:2379,127.0.0.1:22379 --workload range-linearizable --clients 16
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cairn_tests::{CairnNode, Cluster, EtcdNode, Flavor};
use clap::{Parser, ValueEnum};
use etcd_client::{Client, ConnectOptions, GetOptions};
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Keys written before a range workload, `bench/0` .. `bench/999`.
const RANGE_KEYS: usize = 1_000;
/// Every request's timeout, so a hung server cannot hang the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack past `--seconds` for a level to finish (in-flight requests, connecting).
const LEVEL_SLACK: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(about = "Put and range throughput and latency: Cairn vs etcd on this machine")]
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
    /// Workload to run.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Put)]
    workload: WorkloadArg,
    /// Where clients send requests in a cluster (ignored with one member).
    #[arg(long, value_enum, default_value_t = EndpointsMode::All)]
    endpoints_mode: EndpointsMode,
    /// Load these already-running endpoints only (comma-separated, for profiling) instead of
    /// starting servers; `all` uses them in the order given.
    #[arg(long, value_delimiter = ',')]
    target: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    Put,
    RangeLinearizable,
    RangeSerializable,
    All,
}

impl WorkloadArg {
    fn expand(self) -> Vec<Workload> {
        match self {
            WorkloadArg::Put => vec![Workload::Put],
            WorkloadArg::RangeLinearizable => vec![Workload::RangeLinearizable],
            WorkloadArg::RangeSerializable => vec![Workload::RangeSerializable],
            WorkloadArg::All => vec![
                Workload::Put,
                Workload::RangeLinearizable,
                Workload::RangeSerializable,
            ],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Put,
    RangeLinearizable,
    RangeSerializable,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeLinearizable => "range-linearizable",
            Workload::RangeSerializable => "range-serializable",
        }
    }

    fn is_range(self) -> bool {
        self != Workload::Put
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

fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(REQUEST_TIMEOUT)
}

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], Some(connect_options()))
        .await
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
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        // No busy loop against a failing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (latencies, e, first) = t.await.expect("bench client panicked");
        all.extend(latencies);
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
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
    }
}

/// What goes under the tables: failed requests and the leaders seen.
#[derive(Default)]
struct Notes {
    errors: Vec<String>,
    leaders: BTreeMap<&'static str, BTreeSet<String>>,
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
        lines.extend(self.errors.iter().cloned());
        if lines.is_empty() {
            lines.push("no failed requests".to_string());
        }
        for l in lines {
            println!("- {l}");
        }
    }
}

/// One level on one server: plan, load (bounded), progress on stderr, notes.
async fn measure(
    deployment: &Deployment<'_>,
    server: &'static str,
    workload: Workload,
    clients: usize,
    args: &Args,
    value: &[u8],
    notes: &mut Notes,
) -> Stats {
    let plan = deployment.plan(args.endpoints_mode).await;
    let limit = Duration::from_secs(args.seconds) + LEVEL_SLACK;
    let stats = tokio::time::timeout(
        limit,
        run_level(
            &plan.endpoints,
            workload,
            clients,
            args.conns,
            args.seconds,
            value,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{server} {} with {clients} clients did not finish within {limit:?}",
            workload.name()
        )
    });
    eprintln!(
        "{server} {} clients={clients}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors{}",
        workload.name(),
        stats.ops_per_sec,
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
    if stats.errors > 0 {
        notes.errors.push(format!(
            "{server} {} clients={clients}: {} failed requests, first: {}",
            workload.name(),
            stats.errors,
            stats.first_error.as_deref().unwrap_or("?")
        ));
    }
    stats
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
    let mut seeded = false;
    let mut out = Vec::new();
    for &w in workloads {
        if w.is_range() && !seeded {
            let plan = deployment.plan(args.endpoints_mode).await;
            seed(server, &plan.endpoints[0], &deployment.members(), value).await;
            seeded = true;
        }
        let mut rows = Vec::new();
        for &clients in &args.clients {
            rows.push(measure(deployment, server, w, clients, args, value, notes).await);
        }
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

fn print_table_header() {
    println!(
        "| workload | clients | Cairn ops/s | Cairn p50 ms | Cairn p99 ms | etcd ops/s | etcd p50 ms | etcd p99 ms | Cairn/etcd |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(workload: Workload, clients: usize, cairn: &Stats, etcd: &Stats) {
    let ratio = if etcd.ops_per_sec > 0.0 {
        format!("{:.2}", cairn.ops_per_sec / etcd.ops_per_sec)
    } else {
        "–".to_string()
    };
    println!(
        "| {} | {clients} | {:.0} | {} | {} | {:.0} | {} | {} | {ratio} |",
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

fn header_line(args: &Args) -> String {
    let command: Vec<String> = std::env::args().collect();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".to_string());
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
    format!(
        "`{}` · members: {members} · endpoints mode: {mode} · value size: {} B · {} s per level · \
         ≤ {} connections · nproc {nproc} · CPU: {} · etcd {}",
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
    for (w, rows) in workloads.iter().zip(&results) {
        println!("| workload | clients | ops/s | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|");
        for (&clients, r) in args.clients.iter().zip(rows) {
            println!(
                "| {} | {clients} | {:.0} | {} | {} |",
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
    let etcd_node = EtcdNode::start(&[]);
    let cairn_node = CairnNode::start(&[]);
    let etcd = Deployment::Single(etcd_node.endpoint());
    let cairn = Deployment::Single(cairn_node.endpoint());
    let mut notes = Notes::default();
    let mut seeded = false;
    for &w in workloads {
        if w.is_range() && !seeded {
            seed("etcd", &etcd.members()[0], &etcd.members(), value).await;
            seed("Cairn", &cairn.members()[0], &cairn.members(), value).await;
            seeded = true;
        }
        print_table_header();
        for &clients in &args.clients {
            let e = measure(&etcd, "etcd", w, clients, args, value, &mut notes).await;
            let c = measure(&cairn, "Cairn", w, clients, args, value, &mut notes).await;
            print_row(w, clients, &c, &e);
        }
        println!();
    }
    notes.print();
}

/// An N-member Cairn cluster, measured and stopped; then an N-member etcd cluster.
async fn run_clusters(args: &Args, workloads: &[Workload], value: &[u8]) {
    let mut notes = Notes::default();
    let mut results = Vec::new();
    for (server, flavor) in [("Cairn", Flavor::Cairn), ("etcd", Flavor::Etcd)] {
        eprintln!("starting a {}-member {server} cluster", args.members);
        let cluster = Cluster::start(flavor, usize::from(args.members), &[]).await;
        let deployment = Deployment::Cluster(&cluster);
        results.push(measure_all(&deployment, server, workloads, args, value, &mut notes).await);
        drop(cluster);
    }
    let (cairn, etcd) = (&results[0], &results[1]);
    for (i, &w) in workloads.iter().enumerate() {
        print_table_header();
        for (j, &clients) in args.clients.iter().enumerate() {
            print_row(w, clients, &cairn[i][j], &etcd[i][j]);
        }
        println!();
    }
    notes.print();
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let workloads = args.workload.expand();
    let value = vec![b'v'; args.val_size];
    println!("{}", header_line(&args));
    println!();
    if !args.target.is_empty() {
        run_target(&args, &workloads, &value).await;
    } else if args.members == 1 {
        run_single(&args, &workloads, &value).await;
    } else {
        run_clusters(&args, &workloads, &value).await;
    }
}
