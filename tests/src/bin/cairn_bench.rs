//! Put throughput and latency, Cairn against real etcd, side by side in one run.
//!
//! Starts a fresh single-member Cairn (the release binary next to this tool, or `CAIRN_BIN`)
//! and a fresh etcd, each in its own temporary data dir on loopback, then for each concurrency
//! level runs the same put workload against both, one after the other, and prints a Markdown
//! table. Both servers fsync every acknowledged write.
//!
//! ```sh
//! cargo build --release --bins
//! ./target/release/cairn-bench --clients 1,16,256 --seconds 10
//! ```

use std::time::{Duration, Instant};

use cairn_tests::{CairnNode, EtcdNode};
use clap::Parser;
use etcd_client::Client;

#[derive(Parser, Debug)]
#[command(about = "Put throughput and latency: Cairn vs etcd on this machine")]
struct Args {
    /// Concurrency levels (clients issuing puts back to back).
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Seconds of load per level and server.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes (etcd's benchmark default is 256).
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Most gRPC connections shared by the clients.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Load this already-running endpoint only (for profiling) instead of starting both servers.
    #[arg(long)]
    target: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Result_ {
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_level(
    endpoint: &str,
    clients: usize,
    conns: usize,
    seconds: u64,
    value: &[u8],
) -> Result_ {
    let conns = conns.min(clients).max(1);
    let mut pool = Vec::new();
    for _ in 0..conns {
        pool.push(Client::connect([endpoint], None).await.expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = pool[c % conns].clone();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                // 8-byte keys, as etcd's benchmark tool uses.
                let key = format!("{:04x}{:04x}", c & 0xffff, seq & 0xffff);
                seq += 1;
                let t = Instant::now();
                client
                    .put(key, value.clone(), None)
                    .await
                    .expect("put failed during benchmark");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("bench client panicked"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1e3;
    Result_ {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let value = vec![b'v'; args.val_size];
    if let Some(target) = &args.target {
        println!("| clients | puts/s | p50 ms | p99 ms |");
        println!("|---:|---:|---:|---:|");
        for &clients in &args.clients {
            let r = run_level(target, clients, args.conns, args.seconds, &value).await;
            println!(
                "| {clients} | {:.0} | {:.2} | {:.2} |",
                r.ops_per_sec, r.p50_ms, r.p99_ms
            );
        }
        return;
    }
    let etcd = EtcdNode::start(&[]);
    let cairn = CairnNode::start(&[]);
    println!(
        "| clients | etcd puts/s | etcd p50 ms | etcd p99 ms | Cairn puts/s | Cairn p50 ms | Cairn p99 ms | Cairn/etcd throughput |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &clients in &args.clients {
        let e = run_level(&etcd.endpoint(), clients, args.conns, args.seconds, &value).await;
        let c = run_level(&cairn.endpoint(), clients, args.conns, args.seconds, &value).await;
        println!(
            "| {clients} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            e.ops_per_sec,
            e.p50_ms,
            e.p99_ms,
            c.ops_per_sec,
            c.p50_ms,
            c.p99_ms,
            c.ops_per_sec / e.ops_per_sec
        );
    }
}
