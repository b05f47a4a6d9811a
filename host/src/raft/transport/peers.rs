//! Connections to the other members, and the rules every peer message passes.
//!
//! One lazily connected gRPC channel per peer URL, shared by Raft replication, votes,
//! snapshots and forwarded requests (HTTP/2 multiplexes them), and on it one long-lived
//! `Calls` stream for heartbeats and forwarded requests (`calls.rs`). Every envelope carries the
//! sender's cluster ID; a member refuses envelopes from another cluster, so members started
//! with different `--initial-cluster-token`s never talk to each other.
//!
//! A member run in-process by tests may carry a link filter (`filter.rs`) that delays or drops
//! its messages; `link` and `admit` consult it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::cairn_raft::peer_client::PeerClient;
use cairn_proto::cairn_raft::{CallKind, Envelope};
use tonic::transport::{Channel, Endpoint};

use super::calls::{CallError, Links};
use super::filter::{Dropped, Filter};
use super::peer_error::PeerError;

/// Largest peer message accepted or sent: an append of many large entries, or a snapshot chunk.
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 << 20;
/// How long a connection attempt to a peer may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a peer that stays unreachable is reported again (the first failure is reported
/// at once; openraft retries ten times a second, which is not worth a line each).
const OUTAGE_REPORT_EVERY: Duration = Duration::from_secs(30);

/// A peer that has not answered since `since`.
struct Outage {
    since: Instant,
    failures: u64,
    reported: Instant,
}

#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    me: u64,
    /// TLS towards `https://` peers.
    tls: Option<Arc<crate::net::tls::ClientTls>>,
    cluster_id: AtomicU64,
    filter: Filter,
    channels: Mutex<BTreeMap<String, Channel>>,
    calls: Links,
    /// Snapshots being sent to peers right now (purging waits for none, see `purge.rs`).
    sending_snapshots: AtomicU64,
    /// Peers that stopped answering, by member ID (for rate-limited logging only).
    outages: Mutex<BTreeMap<u64, Outage>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.inner.me)
            .finish_non_exhaustive()
    }
}

/// A snapshot on its way to a peer (see [`Peers::snapshot_sending`]).
pub struct SendingSnapshot(Arc<Inner>);

impl Drop for SendingSnapshot {
    fn drop(&mut self) {
        self.0.sending_snapshots.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Peers {
    pub fn new(
        me: u64,
        cluster_id: u64,
        filter: Filter,
        tls: Option<Arc<crate::net::tls::ClientTls>>,
    ) -> Self {
        Peers {
            inner: Arc::new(Inner {
                me,
                tls,
                cluster_id: AtomicU64::new(cluster_id),
                filter,
                channels: Mutex::default(),
                calls: Links::default(),
                sending_snapshots: AtomicU64::new(0),
                outages: Mutex::default(),
            }),
        }
    }

    pub fn me(&self) -> u64 {
        self.inner.me
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id.load(Ordering::Relaxed)
    }

    /// Notes a failed message to member `target`: logged at once the first time, then once
    /// every [`OUTAGE_REPORT_EVERY`] with the count, while the peer stays unreachable.
    pub fn note_unreachable(&self, target: u64, url: &str, why: &str) {
        let now = Instant::now();
        let mut outages = self.inner.outages.lock().expect("outage lock poisoned");
        match outages.get_mut(&target) {
            None => {
                outages.insert(
                    target,
                    Outage {
                        since: now,
                        failures: 1,
                        reported: now,
                    },
                );
                tracing::warn!(
                    member = format!("{target:x}"),
                    url,
                    error = why,
                    "peer unreachable"
                );
            }
            Some(outage) => {
                outage.failures += 1;
                if now.duration_since(outage.reported) >= OUTAGE_REPORT_EVERY {
                    outage.reported = now;
                    tracing::warn!(
                        member = format!("{target:x}"),
                        url,
                        failures = outage.failures,
                        for_secs = now.duration_since(outage.since).as_secs(),
                        error = why,
                        "peer still unreachable"
                    );
                }
            }
        }
    }

    /// Notes an answer from member `target`; logs its return if it had been unreachable.
    pub fn note_reachable(&self, target: u64) {
        let mut outages = self.inner.outages.lock().expect("outage lock poisoned");
        if let Some(outage) = outages.remove(&target) {
            tracing::info!(
                member = format!("{target:x}"),
                failures = outage.failures,
                after_secs = outage.since.elapsed().as_secs(),
                "peer reachable again"
            );
        }
    }

    /// Counts a snapshot as on its way to a peer until the returned guard drops.
    pub fn snapshot_sending(&self) -> SendingSnapshot {
        self.inner.sending_snapshots.fetch_add(1, Ordering::SeqCst);
        SendingSnapshot(self.inner.clone())
    }

    /// Whether a snapshot is on its way to some peer.
    pub fn sending_snapshots(&self) -> bool {
        self.inner.sending_snapshots.load(Ordering::SeqCst) > 0
    }

    /// A client for the member at `url` (the first of its peer URLs).
    pub fn client(&self, url: &str) -> Result<PeerClient<Channel>, String> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .expect("peer channel lock poisoned");
        let channel = match channels.get(url) {
            Some(c) => c.clone(),
            None => {
                // tonic dials plain `http://`; the connector adds TLS for `https://` peers.
                let parsed = crate::config::parse_url(url)
                    .map_err(|e| format!("bad peer URL {url:?}: {e}"))?;
                let tls = match (parsed.tls, &self.inner.tls) {
                    (false, _) => None,
                    (true, Some(tls)) => Some(tls.clone()),
                    (true, None) => {
                        return Err(format!(
                            "peer URL {url} is https://, but this member has no peer TLS (--peer-cert-file, --peer-trusted-ca-file or --peer-auto-tls)"
                        ));
                    }
                };
                let plain = format!("http://{}:{}", bracket(&parsed.host), parsed.port);
                let connector = PeerConnector {
                    host: parsed.host,
                    port: parsed.port,
                    tls,
                };
                let channel = Endpoint::from_shared(plain)
                    .map_err(|e| format!("bad peer URL {url:?}: {e}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_while_idle(true)
                    .connect_with_connector_lazy(connector);
                channels.insert(url.to_string(), channel.clone());
                channel
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// Sends a request to the member at `url` (over the `Calls` stream, or as a unary call if
    /// it is large) and waits for its answer (at most `deadline`, if given); see `calls.rs`
    /// for what each error means.
    pub async fn call(
        &self,
        url: &str,
        kind: CallKind,
        envelope: Envelope,
        deadline: Option<Duration>,
    ) -> Result<Envelope, CallError> {
        let client = self.client(url).map_err(CallError::NotSent)?;
        self.inner
            .calls
            .call(url, client, kind, envelope, deadline)
            .await
    }

    /// Wraps a payload for sending.
    pub fn envelope(&self, payload: Vec<u8>) -> Envelope {
        Envelope {
            cluster_id: self.cluster_id(),
            from: self.inner.me,
            payload,
        }
    }

    /// Checks a received envelope's cluster and sender.
    pub fn admit(&self, cluster_id: u64, from: u64) -> Result<(), PeerError> {
        let ours = self.cluster_id();
        if cluster_id != ours {
            return Err(PeerError::ClusterMismatch {
                ours,
                theirs: cluster_id,
            });
        }
        self.not_cut_from(from)
    }

    /// Refuses what comes from `from` while the link filter cuts that link.
    pub fn not_cut_from(&self, from: u64) -> Result<(), PeerError> {
        if self.inner.filter.is_cut(from, self.inner.me) {
            return Err(PeerError::Cut(from));
        }
        Ok(())
    }

    /// Lets a message to member `to` go (after a delay, if the link filter holds it), or
    /// refuses it if the filter drops it.
    pub async fn link(&self, to: u64) -> Result<(), Dropped> {
        self.inner.filter.outbound(self.inner.me, to).await
    }
}

/// An IPv6 host as a URL authority writes it.
fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Dials a peer: TCP, then TLS for an `https://` peer URL (with the member's peer TLS as it
/// is at that moment, so rotated certificates are used by the next connection).
#[derive(Clone)]
struct PeerConnector {
    host: String,
    port: u16,
    tls: Option<Arc<crate::net::tls::ClientTls>>,
}

impl tower_service::Service<http::Uri> for PeerConnector {
    type Response = hyper_util::rt::TokioIo<crate::net::tls::PeerStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let stream = crate::net::tls::connect(
                &this.host,
                this.port,
                this.tls.as_deref(),
                CONNECT_TIMEOUT,
            )
            .await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
