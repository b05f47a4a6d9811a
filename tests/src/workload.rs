//! Background write load for fault tests: clients putting unique keys to a cluster's members,
//! remembering every write the cluster acknowledged, so a test can check none was lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::Client;
use tokio::task::JoinHandle;

/// Puts `per_writer` keys from each of `writers` concurrent clients of `endpoint` and returns
/// when all are acknowledged (any failure panics). Keys are `{prefix}{writer}/{n}`, values
/// `value`.
pub async fn put_concurrently(
    endpoint: &str,
    writers: usize,
    per_writer: usize,
    prefix: &str,
    value: &str,
) {
    put_concurrently_as(endpoint, None, writers, per_writer, prefix, value).await;
}

/// [`put_concurrently`] as `user`.
pub async fn put_concurrently_as(
    endpoint: &str,
    user: crate::cluster::User<'_>,
    writers: usize,
    per_writer: usize,
    prefix: &str,
    value: &str,
) {
    let user = user.map(|(name, password)| (name.to_owned(), password.to_owned()));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (endpoint, prefix, value) =
                (endpoint.to_owned(), prefix.to_owned(), value.to_owned());
            let user = user.clone();
            tokio::spawn(async move {
                let user = user.as_ref().map(|(n, p)| (n.as_str(), p.as_str()));
                let mut client = crate::cluster::try_connect_as(&endpoint, user)
                    .await
                    .expect("connect to a member");
                for n in 0..per_writer {
                    client
                        .put(format!("{prefix}{w}/{n}"), value.as_str(), None)
                        .await
                        .unwrap_or_else(|e| panic!("put {prefix}{w}/{n}: {e}"));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// Writers running until [`Writers::stop`].
pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Vec<String>>>,
}

impl Writers {
    /// Starts `clients` writers; writer `i` talks to `endpoints[i % len]` and, when a call
    /// fails, moves on to the next endpoint. Keys are `{prefix}{writer}/{n}`.
    pub fn start(endpoints: Vec<String>, clients: usize, prefix: &str) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|i| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let endpoints = endpoints.clone();
                let prefix = prefix.to_string();
                tokio::spawn(async move { write_loop(i, endpoints, prefix, stop, acked).await })
            })
            .collect();
        Writers { stop, acked, tasks }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `more` further writes are acknowledged.
    pub async fn wait_for_progress(&self, more: u64, limit: Duration) {
        let target = self.acked() + more;
        let start = std::time::Instant::now();
        while self.acked() < target {
            assert!(
                start.elapsed() < limit,
                "writes stalled: {} acknowledged, wanted {target} within {limit:?}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers; returns every acknowledged key.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut keys = Vec::new();
        for t in self.tasks {
            keys.extend(t.await.expect("writer task panicked"));
        }
        keys
    }
}

async fn write_loop(
    writer: usize,
    endpoints: Vec<String>,
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut target = writer % endpoints.len();
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(5));
            client = Client::connect([endpoints[target].as_str()], Some(options))
                .await
                .ok();
            if client.is_none() {
                target = (target + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let key = format!("{prefix}{writer}/{n}");
        n += 1;
        let c = client.as_mut().expect("connected above");
        match c.put(key.as_str(), "v", None).await {
            Ok(_) => {
                keys.push(key);
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Outcome unknown: the key may or may not exist; only acknowledged keys count.
                client = None;
                target = (target + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    keys
}
