//! `check perf` and `check datascale`: etcdctl's cluster checks, with its workloads, limits,
//! verdicts and words.
//!
//! `perf` writes 1 KiB values under a prefix at a fixed rate for 60 s from many clients and
//! passes when the cluster keeps up (throughput above 90% of the rate, no request slower than
//! 500 ms, a standard deviation under 100 ms). `datascale` writes a fixed number of keys and
//! reports how much the first endpoint's resident memory grew, read from its `/metrics`
//! (`process_resident_memory_bytes`). Both refuse a prefix that already has keys and delete
//! what they wrote.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{
    CompactionRequest, DefragmentRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{CheckArgs, CheckCommand};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::key_range::prefix_range;
use crate::run::Session;

/// A workload: how many requests (per second for `perf`, in all for `datascale`), from how
/// many clients.
#[derive(Debug, Clone, Copy)]
struct Load {
    limit: u64,
    clients: usize,
}

/// etcdctl's names for the workloads: s(mall), m(edium), l(arge), xl (xLarge).
fn load(name: &str, table: [Load; 4]) -> Result<Load, Error> {
    let index = match name {
        "s" | "small" => 0,
        "m" | "medium" => 1,
        "l" | "large" => 2,
        "xl" | "xLarge" => 3,
        _ => return Err(Error::Unsupported(format!("unknown load option {name}"))),
    };
    Ok(table[index])
}

const PERF_LOADS: [Load; 4] = [
    Load {
        limit: 150,
        clients: 50,
    },
    Load {
        limit: 1000,
        clients: 200,
    },
    Load {
        limit: 8000,
        clients: 500,
    },
    Load {
        limit: 15000,
        clients: 1000,
    },
];

const DATASCALE_LOADS: [Load; 4] = [
    Load {
        limit: 10_000,
        clients: 50,
    },
    Load {
        limit: 100_000,
        clients: 200,
    },
    Load {
        limit: 1_000_000,
        clients: 500,
    },
    Load {
        limit: 3_000_000,
        clients: 1000,
    },
];

/// How long each clean-up call (delete, compact, defragment) may take, as etcdctl's.
const CLEAN_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `perf` writes.
const PERF_SECONDS: u64 = 60;

pub async fn check(
    session: &Session,
    command: CheckCommand,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        CheckCommand::Perf(args) => perf(session, args, out).await,
        CheckCommand::Datascale(args) => datascale(session, args, out).await,
    }
}

/// What the workers measured: each success's latency, and failures by message.
#[derive(Default)]
pub(crate) struct Results {
    pub latencies: Vec<f64>,
    pub errors: BTreeMap<String, u64>,
}

impl Results {
    /// Adds another worker's results.
    pub fn merge(&mut self, other: Results) {
        self.latencies.extend(other.latencies);
        for (error, count) in other.errors {
            *self.errors.entry(error).or_default() += count;
        }
    }
}

struct Stats {
    rps: f64,
    slowest: f64,
    stddev: f64,
    errors: BTreeMap<String, u64>,
}

impl Results {
    fn stats(self, total: Duration) -> Stats {
        let n = self.latencies.len() as f64;
        let average = self.latencies.iter().sum::<f64>() / n.max(1.0);
        let variance = self
            .latencies
            .iter()
            .map(|l| (l - average).powi(2))
            .sum::<f64>()
            / n.max(1.0);
        Stats {
            rps: n / total.as_secs_f64().max(f64::MIN_POSITIVE),
            slowest: self.latencies.iter().copied().fold(0.0, f64::max),
            stddev: variance.sqrt(),
            errors: self.errors,
        }
    }
}

/// A key under `prefix` as etcdctl makes them: a random number's varint at the start of a
/// `size`-byte suffix of zeros.
fn random_key(prefix: &[u8], size: usize, state: &mut u64) -> Vec<u8> {
    // xorshift64*: the keys need only to differ, not to be unpredictable.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let n = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 1) as i64;
    let mut suffix = vec![0u8; size];
    // Go's PutVarint: zig-zag, then 7 bits a byte.
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut i = 0;
    while v >= 0x80 {
        suffix[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    suffix[i] = v as u8;
    let mut key = prefix.to_vec();
    key.extend_from_slice(&suffix);
    key
}

/// Refuses a prefix that already holds keys (etcdctl's words and exit status 3).
async fn ensure_empty(connection: &Connection, prefix: &str) -> Result<(), Error> {
    let (key, range_end) = prefix_range(prefix.as_bytes());
    let request = connection.request(RangeRequest {
        key,
        range_end,
        limit: 1,
        ..RangeRequest::default()
    });
    let found = connection.deadline(connection.kv().range(request)).await?;
    if found.kvs.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "prefix {prefix:?} has keys. Delete with etcdctl del --prefix {prefix} first"
    )))
}

/// Runs `requests` puts through `connections`, one worker per connection, as fast as the
/// `pace` lets them out; `tick` is called after each request.
async fn run_puts(
    connections: Vec<Connection>,
    keys: tokio::sync::mpsc::Receiver<Vec<u8>>,
    value: Vec<u8>,
    tick: Arc<dyn Fn() + Send + Sync>,
) -> (Results, Duration) {
    let keys = Arc::new(tokio::sync::Mutex::new(keys));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for connection in connections {
        let (keys, value, tick) = (keys.clone(), value.clone(), tick.clone());
        workers.spawn(async move {
            let mut results = Results::default();
            loop {
                let Some(key) = keys.lock().await.recv().await else {
                    break;
                };
                let begun = Instant::now();
                let request = connection.request(PutRequest {
                    key,
                    value: value.clone(),
                    ..PutRequest::default()
                });
                match connection.deadline(connection.kv().put(request)).await {
                    Ok(_) => results.latencies.push(begun.elapsed().as_secs_f64()),
                    Err(e) => *results.errors.entry(e.to_string()).or_default() += 1,
                }
                tick();
            }
            results
        });
    }
    let mut all = Results::default();
    while let Some(joined) = workers.join_next().await {
        if let Ok(results) = joined {
            all.merge(results);
        }
    }
    (all, started.elapsed())
}

pub(crate) async fn connections(session: &Session, n: usize) -> Result<Vec<Connection>, Error> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(session.dial().await?);
    }
    Ok(out)
}

/// Deletes what the check wrote, then compacts and defragments if asked.
async fn clean_up(
    session: &Session,
    connection: &Connection,
    prefix: &str,
    args: &CheckArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (key, range_end) = prefix_range(prefix.as_bytes());
    let request = DeleteRangeRequest {
        key,
        range_end,
        prev_kv: false,
    };
    // etcdctl gives each of these calls 30 s, whatever `--command-timeout` says.
    let connection = connection.with_command_timeout(CLEAN_UP_TIMEOUT);
    let deleted = connection
        .deadline(connection.kv().delete_range(connection.request(request)))
        .await?;
    if args.auto_compact {
        let revision = deleted.header.map(|h| h.revision).unwrap_or(0);
        writeln!(out, "Compacting with revision {revision}")?;
        let request = connection.request(CompactionRequest {
            revision,
            physical: true,
        });
        connection
            .deadline(connection.kv().compact(request))
            .await?;
        writeln!(out, "Compacted with revision {revision}")?;
    }
    if args.auto_defrag {
        for ep in &session.global.endpoints {
            writeln!(out, "Defragmenting {ep:?}")?;
            let member = session
                .dial_one(ep)
                .await?
                .with_command_timeout(CLEAN_UP_TIMEOUT);
            let request = member.request(DefragmentRequest {});
            member
                .deadline(member.maintenance().defragment(request))
                .await?;
            writeln!(out, "Defragmented {ep:?}")?;
        }
    }
    Ok(())
}

/// etcdctl's lines for failed requests, by message; whether there were none.
fn print_errors(out: &mut dyn Write, errors: &BTreeMap<String, u64>) -> std::io::Result<bool> {
    if errors.is_empty() {
        return Ok(true);
    }
    writeln!(out, "FAIL: too many errors")?;
    for (error, count) in errors {
        writeln!(out, "FAIL: ERROR({error}) -> {count}")?;
    }
    Ok(false)
}

/// A bar on a terminal (indicatif draws nothing when stderr is not one).
pub(crate) fn bar(length: u64) -> ProgressBar {
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed}") {
        bar.set_style(style);
    }
    bar
}

async fn perf(session: &Session, args: CheckArgs, out: &mut dyn Write) -> Result<(), Error> {
    let load = load(&args.load, PERF_LOADS)?;
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| "/etcdctl-check-perf/".to_owned());
    let connections = connections(session, load.clients).await?;
    ensure_empty(&connections[0], &prefix).await?;
    let first = connections[0].clone();
    let (sender, keys) = tokio::sync::mpsc::channel(load.clients);
    let period = Duration::from_secs(1) / u32::try_from(load.limit).unwrap_or(u32::MAX);
    let prefix_bytes = prefix.as_bytes().to_vec();
    // The pace: one request per period for 60 s (etcdctl's rate limiter, burst 1).
    let pacer = tokio::spawn(async move {
        let mut state = seed();
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = Instant::now() + Duration::from_secs(PERF_SECONDS);
        while Instant::now() < end {
            interval.tick().await;
            if sender
                .send(random_key(&prefix_bytes, 256, &mut state))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let progress = bar(PERF_SECONDS);
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            for _ in 0..PERF_SECONDS {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress.inc(1);
            }
        })
    };
    let (results, total) = run_puts(connections, keys, vec![0; 1024], Arc::new(|| {})).await;
    let _ = pacer.await;
    ticker.abort();
    progress.finish_and_clear();
    let stats = results.stats(total);
    clean_up(session, &first, &prefix, &args, out).await?;

    let mut ok = print_errors(out, &stats.errors)?;
    let writes = stats.rps as u64 + 1;
    if stats.rps / load.limit as f64 <= 0.9 {
        writeln!(out, "FAIL: Throughput too low: {writes} writes/s")?;
        ok = false;
    } else {
        writeln!(out, "PASS: Throughput is {writes} writes/s")?;
    }
    if stats.slowest > 0.5 {
        writeln!(out, "Slowest request took too long: {:.6}s", stats.slowest)?;
        ok = false;
    } else {
        writeln!(out, "PASS: Slowest request took {:.6}s", stats.slowest)?;
    }
    if stats.stddev > 0.1 {
        writeln!(out, "Stddev too high: {:.6}s", stats.stddev)?;
        ok = false;
    } else {
        writeln!(out, "PASS: Stddev is {:.6}s", stats.stddev)?;
    }
    if ok {
        writeln!(out, "PASS")?;
        Ok(())
    } else {
        writeln!(out, "FAIL")?;
        Err(Error::Silent)
    }
}

async fn datascale(session: &Session, args: CheckArgs, out: &mut dyn Write) -> Result<(), Error> {
    let load = load(&args.load, DATASCALE_LOADS)?;
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| "/etcdctl-check-datascale/".to_owned());
    let connections = connections(session, load.clients).await?;
    ensure_empty(&connections[0], &prefix).await?;
    let first = connections[0].clone();
    let endpoint = session
        .global
        .endpoints
        .first()
        .cloned()
        .unwrap_or_default();
    let Some(before) = resident_memory(&endpoint, session.global.dial_timeout).await else {
        writeln!(
            out,
            "FAIL: Could not read process_resident_memory_bytes before the put operations."
        )?;
        return Err(Error::Silent);
    };
    writeln!(
        out,
        "Start data scale check for work load [{} key-value pairs, 1024 bytes per key-value, {} concurrent clients].",
        load.limit, load.clients
    )?;
    out.flush()?;
    let (sender, keys) = tokio::sync::mpsc::channel(load.clients);
    let prefix_bytes = prefix.as_bytes().to_vec();
    let total = load.limit;
    let feeder = tokio::spawn(async move {
        let mut state = seed();
        for _ in 0..total {
            if sender
                .send(random_key(&prefix_bytes, 512, &mut state))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let progress = bar(load.limit);
    let tick = {
        let progress = progress.clone();
        Arc::new(move || progress.inc(1))
    };
    let (results, elapsed) = run_puts(connections, keys, vec![0; 512], tick).await;
    let _ = feeder.await;
    progress.finish_and_clear();
    let after = resident_memory(&endpoint, session.global.dial_timeout).await;
    clean_up(session, &first, &prefix, &args, out).await?;
    let Some(after) = after else {
        writeln!(
            out,
            "FAIL: Could not read process_resident_memory_bytes after the put operations."
        )?;
        return Err(Error::Silent);
    };
    let stats = results.stats(elapsed);
    if !print_errors(out, &stats.errors)? {
        return Err(Error::Silent);
    }
    let used = (after - before) / (1024.0 * 1024.0);
    writeln!(out, "PASS: Approximate system memory used : {used:.2} MB.")?;
    Ok(())
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    nanos | 1
}

/// `process_resident_memory_bytes` from the endpoint's `/metrics` (plain HTTP, as etcd serves
/// it on the client port), or `None` if it cannot be read.
async fn resident_memory(endpoint: &str, timeout: Duration) -> Option<f64> {
    let address = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    if address.starts_with("https://") {
        return None;
    }
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        stream.take(64 << 20).read_to_end(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(timeout.max(Duration::from_secs(5)), fetch)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_a_varint_and_zero_padding() {
        let mut state = 12345;
        let key = random_key(b"/p/", 256, &mut state);
        assert_eq!(key.len(), 3 + 256);
        assert!(key.starts_with(b"/p/"));
        assert_ne!(random_key(b"/p/", 256, &mut state), key);
    }

    #[test]
    fn workloads_have_etcdctls_names() {
        assert_eq!(load("xLarge", PERF_LOADS).expect("known").limit, 15000);
        assert_eq!(load("s", DATASCALE_LOADS).expect("known").limit, 10_000);
        assert_eq!(
            load("huge", PERF_LOADS).expect_err("unknown").to_string(),
            "unknown load option huge"
        );
    }
}
