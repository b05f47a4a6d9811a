//! Recorded clients for the linearizability checker: each does random gets, puts and
//! compare-and-swaps on a few keys against the members it is given, and records every
//! operation with its invocation and completion time (on one clock shared by all clients),
//! the member it went to and the revisions it answered. Used by the multi-process
//! linearizability test and the in-process fault schedules alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::linearizability::{Input, Operation, Output};

/// Recorded clients at work against a cluster, until [`Clients::stop`].
pub struct Clients {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    history: Arc<Mutex<Recorded>>,
    start: Instant,
}

impl Clients {
    /// Starts `count` clients on `keys` keys, spread over `endpoints`; each gives up on a
    /// request after `op_timeout` (its outcome is then unknown). `seed` fixes their
    /// operations.
    pub fn start(
        count: usize,
        keys: usize,
        op_timeout: Duration,
        endpoints: &[String],
        seed: u64,
    ) -> Clients {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let tasks = (0..count)
            .map(|id| {
                tokio::spawn(client_loop(
                    id,
                    keys,
                    op_timeout,
                    endpoints.to_vec(),
                    seed,
                    start,
                    stop.clone(),
                    history.clone(),
                ))
            })
            .collect();
        Clients {
            tasks,
            stop,
            history,
            start,
        }
    }

    /// When the clients started: the zero of the history's clock.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// How many operations have completed (with a known outcome) so far.
    pub async fn completed(&self) -> usize {
        self.history
            .lock()
            .await
            .iter()
            .filter(|(op, _)| op.ret.is_some())
            .count()
    }

    /// Stops the clients once their requests in flight end; returns what they recorded.
    pub async fn stop(self) -> Result<Recorded, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await
                .map_err(|e| format!("a client task failed: {e}"))?;
        }
        Ok(std::mem::take(&mut *self.history.lock().await))
    }
}

/// What the checker does not need but a person reading a failure does: where a request went
/// and what revisions came back.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Index of the member the client was connected to.
    pub member: usize,
    /// The response header's revision (0 when there was no response).
    pub revision: i64,
    /// For a get that found the key: its mod revision.
    pub mod_revision: i64,
    /// The error, when the outcome is unknown.
    pub error: String,
}

pub type Recorded = Vec<(Operation, Trace)>;

/// One client's loop: random operations on `keys` keys (`lin/0`, `lin/1`, …), recorded
/// until `stop` is set. A request unanswered within `op_timeout` is recorded as unknown.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    id: usize,
    keys: usize,
    op_timeout: Duration,
    endpoints: Vec<String>,
    seed: u64,
    start: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    history: Arc<Mutex<Recorded>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9));
    let mut target = id % endpoints.len();
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if client.is_none() {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(op_timeout);
            let connecting = Client::connect([endpoints[target].as_str()], Some(options));
            client = tokio::time::timeout(op_timeout, connecting)
                .await
                .ok()
                .and_then(Result::ok);
            if client.is_none() {
                target = (target + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let key = format!("lin/{}", rng.random_range(0..keys));
        n += 1;
        let value = format!("c{id}-{n}");
        let input = match rng.random_range(0..10) {
            0..4 => Input::Get { key },
            4..7 => Input::Put { key, value },
            _ => {
                // Expect a value this client may have seen: its own last write or absence.
                let expected = if rng.random_bool(0.3) {
                    None
                } else {
                    Some(format!(
                        "c{id}-{}",
                        n.saturating_sub(rng.random_range(1..4))
                    ))
                };
                Input::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let c = client.as_mut().expect("connected above");
        let call = start.elapsed().as_nanos() as u64;
        let outcome = tokio::time::timeout(op_timeout, run(c, &input)).await;
        let ret = start.elapsed().as_nanos() as u64;
        let mut trace = Trace {
            member: target,
            ..Trace::default()
        };
        let (ret, output) = match outcome {
            Ok(Ok((output, revision, mod_revision))) => {
                trace.revision = revision;
                trace.mod_revision = mod_revision;
                (Some(ret), output)
            }
            failed => {
                trace.error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "client timeout".to_string(),
                };
                // Unknown outcome; move to another member, it may be this one that is faulty.
                client = None;
                target = (target + 1) % endpoints.len();
                (None, Output::Unknown)
            }
        };
        let op = Operation {
            client: id,
            call,
            ret,
            input,
            output,
        };
        history.lock().await.push((op, trace));
    }
}

/// Runs `input`: its output, the response's header revision and (for a get that found the
/// key) the value's mod revision.
async fn run(client: &mut Client, input: &Input) -> Result<(Output, i64, i64), etcd_client::Error> {
    let revision = |h: Option<&etcd_client::ResponseHeader>| h.map_or(0, |h| h.revision());
    Ok(match input {
        Input::Get { key } => {
            let resp = client.get(key.as_str(), None).await?;
            let kv = resp.kvs().first();
            let value = kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            let mod_revision = kv.map_or(0, |kv| kv.mod_revision());
            (Output::Get { value }, revision(resp.header()), mod_revision)
        }
        Input::Put { key, value } => {
            let resp = client.put(key.as_str(), value.as_str(), None).await?;
            (Output::Put, revision(resp.header()), 0)
        }
        Input::Cas { key, expected, new } => {
            let compare = match expected {
                Some(v) => Compare::value(key.as_str(), CompareOp::Equal, v.as_str()),
                None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            };
            let txn =
                Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key.as_str(), new.as_str(), None)]);
            let resp = client.txn(txn).await?;
            let output = Output::Cas {
                succeeded: resp.succeeded(),
            };
            (output, revision(resp.header()), 0)
        }
        Input::Delete { key } => {
            let resp = client.delete(key.as_str(), None).await?;
            let output = Output::Delete {
                deleted: resp.deleted() > 0,
            };
            (output, revision(resp.header()), 0)
        }
    })
}
