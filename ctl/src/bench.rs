//! `cairnctl bench put|range|txn-put`: etcd's `benchmark` tool's workloads, flags and report,
//! against the cluster cairnctl is pointed at.
//!
//! `--clients` workers share `--conns` connections and take requests in order until
//! `--total` are done, each waiting its turn under `--rate`; a bar shows progress on a
//! terminal. The report is etcd's (`pkg/report`): the summary (total time, slowest, fastest,
//! average, standard deviation, requests per second), a ten-bucket histogram of response
//! times, the latency percentiles, and the errors by message.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest, request_op};

use crate::check::{Results, bar, connections};
use crate::cli::{BenchArgs, BenchWorkload};
use crate::endpoint::Connection;
use crate::error::Error;
use crate::run::Session;

/// One request of a workload.
#[derive(Clone, Debug)]
enum Request {
    Put(PutRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
}

impl Request {
    async fn send(&self, connection: &Connection) -> Result<(), Error> {
        let mut kv = connection.kv();
        match self {
            Request::Put(r) => {
                connection
                    .deadline(kv.put(connection.request(r.clone())))
                    .await?;
            }
            Request::Range(r) => {
                connection
                    .deadline(kv.range(connection.request(r.clone())))
                    .await?;
            }
            Request::Txn(r) => {
                connection
                    .deadline(kv.txn(connection.request(r.clone())))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Go's `binary.PutVarint` into the start of `key` (zig-zag, then 7 bits a byte), as the
/// benchmark tool makes its keys; the rest of `key` stays as it was.
fn put_varint(key: &mut [u8], n: i64) {
    let mut u = ((n << 1) ^ (n >> 63)) as u64;
    let mut i = 0;
    while u >= 0x80 && i < key.len() {
        key[i] = (u as u8) | 0x80;
        u >>= 7;
        i += 1;
    }
    if i < key.len() {
        key[i] = u as u8;
    }
}

/// A value of `n` random bytes, as the benchmark tool's `mustRandBytes` makes.
fn value(n: usize, rng: &mut Rng) -> Vec<u8> {
    (0..n).map(|_| (rng.next() >> 56) as u8).collect()
}

/// A small PRNG for keys and values (xorshift64*): benchmark data needs spread, not secrecy.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A workload: how to make its `i`-th request. Requests are made as they are sent, so a large
/// `--total` costs no memory up front.
struct Plan {
    workload: BenchWorkload,
    /// The one value every put writes, as the tool does.
    value: Vec<u8>,
}

impl Plan {
    fn new(workload: BenchWorkload, out: &mut dyn Write) -> Result<Plan, Error> {
        let mut rng = Rng::new();
        let value = match &workload {
            BenchWorkload::Put(a) => value(a.writes.val_size, &mut rng),
            BenchWorkload::TxnPut(a) => value(a.writes.val_size, &mut rng),
            BenchWorkload::Range(a) => {
                writeln!(
                    out,
                    "bench with {} range",
                    if a.consistency == "s" {
                        "serializable"
                    } else {
                        "linearizable"
                    }
                )?;
                Vec::new()
            }
        };
        Ok(Plan { workload, value })
    }

    fn total(&self) -> usize {
        match &self.workload {
            BenchWorkload::Put(a) => a.total,
            BenchWorkload::Range(a) => a.total,
            BenchWorkload::TxnPut(a) => a.total,
        }
    }

    fn rate(&self) -> u32 {
        match &self.workload {
            BenchWorkload::Put(a) => a.rate,
            BenchWorkload::Range(a) => a.rate,
            BenchWorkload::TxnPut(a) => a.rate,
        }
    }

    /// A put of the plan's value at key number `n`, Go-varint-encoded into a key of `size`.
    fn put(&self, size: usize, n: u64) -> PutRequest {
        let mut key = vec![0; size];
        put_varint(&mut key, n as i64);
        PutRequest {
            key,
            value: self.value.clone(),
            ..PutRequest::default()
        }
    }

    /// The `i`-th request (`rng` picks random keys).
    fn request(&self, i: usize, rng: &mut Rng) -> Request {
        match &self.workload {
            BenchWorkload::Put(a) => {
                let w = &a.writes;
                let n = if a.sequential_keys {
                    i as u64 % w.key_space_size
                } else {
                    rng.next() % w.key_space_size
                };
                Request::Put(self.put(w.key_size, n))
            }
            BenchWorkload::Range(a) => Request::Range(RangeRequest {
                key: a.key.clone().into_bytes(),
                range_end: a.end.clone().unwrap_or_default().into_bytes(),
                serializable: a.consistency == "s",
                ..RangeRequest::default()
            }),
            BenchWorkload::TxnPut(a) => {
                let w = &a.writes;
                let success = (0..a.txn_ops)
                    .map(|j| {
                        let n = (i as u64 * a.txn_ops + j) % w.key_space_size;
                        RequestOp {
                            request: Some(request_op::Request::RequestPut(self.put(w.key_size, n))),
                        }
                    })
                    .collect();
                Request::Txn(TxnRequest {
                    success,
                    ..TxnRequest::default()
                })
            }
        }
    }
}

/// Runs `bench`.
pub async fn bench(session: &Session, args: BenchArgs, out: &mut dyn Write) -> Result<(), Error> {
    let plan = Arc::new(Plan::new(args.workload, out)?);
    let connections = connections(session, args.conns as usize).await?;
    let limiter = match plan.rate() {
        0 => None,
        per_second => {
            let period = (Duration::from_secs(1) / per_second).max(Duration::from_nanos(1));
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(Arc::new(tokio::sync::Mutex::new(ticks)))
        }
    };
    let total = plan.total();
    let progress = bar(total as u64);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for client in 0..args.clients as usize {
        let connection = connections[client % connections.len()].clone();
        let (plan, next, limiter) = (plan.clone(), next.clone(), limiter.clone());
        let progress = progress.clone();
        workers.spawn(async move {
            let (mut results, mut rng) = (Results::default(), Rng::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let request = plan.request(i, &mut rng);
                if let Some(limiter) = &limiter {
                    limiter.lock().await.tick().await;
                }
                let begun = Instant::now();
                match request.send(&connection).await {
                    Ok(()) => results.latencies.push(begun.elapsed().as_secs_f64()),
                    Err(e) => *results.errors.entry(e.to_string()).or_default() += 1,
                }
                progress.inc(1);
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
    let took = started.elapsed();
    progress.finish_and_clear();
    writeln!(out, "{}", report(all, took, args.precise))?;
    Ok(())
}

/// etcd's latency percentiles.
const PERCENTILES: [f64; 8] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9];

/// The report, as etcd's `pkg/report` writes it (its `String`, which `fmt.Println` ends).
fn report(mut results: Results, total: Duration, precise: bool) -> String {
    let f = |x: f64| {
        if precise {
            format!("{x}")
        } else {
            format!("{x:4.4}")
        }
    };
    let secs = |x: f64| format!("{} secs", f(x));
    let mut s = String::new();
    let lats = &mut results.latencies;
    if !lats.is_empty() {
        let n = lats.len() as f64;
        let average = lats.iter().sum::<f64>() / n;
        let stddev = (lats.iter().map(|l| (l - average).powi(2)).sum::<f64>() / n).sqrt();
        lats.sort_by(f64::total_cmp);
        let (fastest, slowest) = (lats[0], lats[lats.len() - 1]);
        s += "\nSummary:\n";
        s += &format!("  Total:\t{}.\n", secs(total.as_secs_f64()));
        s += &format!("  Slowest:\t{}.\n", secs(slowest));
        s += &format!("  Fastest:\t{}.\n", secs(fastest));
        s += &format!("  Average:\t{}.\n", secs(average));
        s += &format!("  Stddev:\t{}.\n", secs(stddev));
        s += &format!("  Requests/sec:\t{}\n", f(n / total.as_secs_f64()));
        s += &histogram(lats, fastest, slowest, &f);
        s += "\nLatency distribution:\n";
        for (p, v) in PERCENTILES.iter().zip(percentiles(lats)) {
            if v > 0.0 {
                s += &format!("  {p}% in {}.\n", secs(v));
            }
        }
    }
    if !results.errors.is_empty() {
        s += "\nError distribution:\n";
        for (error, count) in &results.errors {
            s += &format!("  [{count}]\t{error}\n");
        }
    }
    s
}

/// etcd's percentiles of sorted latencies: for each, the first latency at or past it.
fn percentiles(sorted: &[f64]) -> [f64; 8] {
    let mut data = [0.0; 8];
    let (mut j, n) = (0, sorted.len());
    for (i, latency) in sorted.iter().enumerate() {
        if j == PERCENTILES.len() {
            break;
        }
        if i as f64 * 100.0 / n as f64 >= PERCENTILES[j] {
            data[j] = *latency;
            j += 1;
        }
    }
    data
}

/// etcd's ten equal buckets from the fastest to the slowest, bars scaled to 40 `∎`.
fn histogram(sorted: &[f64], fastest: f64, slowest: f64, f: &dyn Fn(f64) -> String) -> String {
    const BUCKETS: usize = 10;
    let width = (slowest - fastest) / BUCKETS as f64;
    let mut bounds: Vec<f64> = (0..BUCKETS).map(|i| fastest + width * i as f64).collect();
    bounds.push(slowest);
    let mut counts = vec![0usize; bounds.len()];
    let (mut b, mut i) = (0, 0);
    while i < sorted.len() {
        if sorted[i] <= bounds[b] {
            counts[b] += 1;
            i += 1;
        } else if b < bounds.len() - 1 {
            b += 1;
        } else {
            break; // not reached: the last bound is the slowest latency
        }
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    let mut s = String::from("\nResponse time histogram:\n");
    for (bound, count) in bounds.iter().zip(&counts) {
        let bar = (count * 40).checked_div(most).unwrap_or(0);
        s += &format!("  {} [{count}]\t|{}\n", f(*bound), "∎".repeat(bar));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_gos_varints() {
        let mut key = vec![0xff; 8];
        put_varint(&mut key, 0);
        assert_eq!(key[..2], [0, 0xff]);
        put_varint(&mut key, 64);
        assert_eq!(key[..3], [0x80, 0x01, 0xff]);
        put_varint(&mut key, -1);
        assert_eq!(key[0], 1);
    }

    #[test]
    fn the_report_reads_as_etcds() {
        let results = Results {
            latencies: vec![0.004, 0.001, 0.002, 0.003],
            errors: [("etcdserver: too many requests".to_string(), 2)].into(),
        };
        let text = report(results, Duration::from_secs(2), false);
        let want = "\nSummary:\n  Total:\t2.0000 secs.\n  Slowest:\t0.0040 secs.\n  \
                    Fastest:\t0.0010 secs.\n  Average:\t0.0025 secs.\n  Stddev:\t0.0011 secs.\n  \
                    Requests/sec:\t2.0000\n\nResponse time histogram:\n";
        assert!(text.starts_with(want), "{text}");
        assert!(text.contains("  0.0010 [1]\t|∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎∎\n"));
        assert!(text.contains("  0.0040 [1]\t|"), "{text}");
        // etcd's rule: the n-th percentile is the first latency whose rank (0-based, in
        // percent of the count) reaches it, one percentile per latency: of 4, 10% is the
        // second, 25% the third, 50% the fourth, and the higher ones are not printed.
        assert!(
            text.contains(
                "\nLatency distribution:\n  10% in 0.0020 secs.\n  25% in 0.0030 secs.\n  \
                 50% in 0.0040 secs.\n\nError distribution:"
            ),
            "{text}"
        );
        assert!(text.ends_with("\nError distribution:\n  [2]\tetcdserver: too many requests\n"));
    }
}
