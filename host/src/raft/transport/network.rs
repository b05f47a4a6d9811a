//! The Raft network, sending side: openraft's RPCs over `cairn.raft.v1.Peer` (see
//! `proto/cairn/raft/v1/raft.proto`; the receiving side is `service.rs`).
//!
//! Payloads are openraft's own message types, postcard-encoded. Replication runs over one
//! long-lived `AppendStream` call per follower (pipelined); heartbeats go over the long-lived
//! `Calls` stream to the peer (`calls.rs`); votes and the rest are unary calls. A transport
//! failure becomes openraft's `Unreachable` (openraft backs off and retries); every call is
//! bounded by the deadline openraft hands in, and the stream's answers by a multiple of it.
//! Snapshots stream in chunks: a blocking task writes the snapshot's bytes
//! (`SnapshotData::write_to`) into a bounded channel that feeds the gRPC request stream, so a
//! snapshot never sits in memory whole.

use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_proto::cairn_raft::{CallKind, Envelope, SnapshotChunk};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::calls::CallError;
use super::peers::Peers;
use crate::metrics::METRICS;
use crate::raft::state_machine::{Snapshot, SnapshotData};
use crate::raft::types::{MemberInfo, TypeConfig, Vote};

/// One answer on the replication stream.
type AppendResult = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// How many deadlines (heartbeat intervals) an open replication stream waits for the next
/// answer it is owed. A follower that is busy (a large batch to sync, a CPU it shares) answers
/// late, not never: ending its stream after one interval made the leader resend what was
/// already on its way, and the follower fall further behind. A follower that is down is
/// noticed by its missed heartbeats, which keep the short deadline; the leader commits
/// without it meanwhile.
const STREAM_PATIENCE: u32 = 10;

/// Bytes per snapshot chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Chunks buffered between the reader task and the gRPC stream.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;

#[derive(Clone, Debug)]
pub struct Network {
    pub peers: Peers,
}

/// openraft's handle on one peer.
#[derive(Clone, Debug)]
pub struct PeerLink {
    peers: Peers,
    target: u64,
    url: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &MemberInfo) -> PeerLink {
        PeerLink {
            peers: self.peers.clone(),
            target,
            url: node.peer_urls.first().cloned().unwrap_or_default(),
        }
    }
}

/// The unary peer RPCs.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    Vote,
    PreVote,
    TransferLeader,
}

impl PeerLink {
    /// The error openraft gets for a failed message; the failure is also noted for the
    /// rate-limited reachability log.
    fn unreachable(&self, why: impl std::fmt::Display) -> Unreachable<TypeConfig> {
        let why = why.to_string();
        METRICS.peer_send_failed(self.target);
        self.peers.note_unreachable(self.target, &self.url, &why);
        Unreachable::from_string(format!("member {:x} ({}): {why}", self.target, self.url))
    }

    /// Encodes a request for the peer, unless the link filter drops it (see `filter.rs`).
    async fn seal<Req: Serialize>(&self, request: &Req) -> Result<Envelope, RPCError<TypeConfig>> {
        if let Err(e) = self.peers.link(self.target).await {
            return Err(RPCError::Unreachable(self.unreachable(e)));
        }
        let payload = postcard::to_stdvec(request)
            .map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        METRICS.peer_sent(self.target, payload.len());
        Ok(self.peers.envelope(payload))
    }

    /// Decodes a peer's answer, counting its bytes.
    fn open<T: DeserializeOwned>(&self, reply: &Envelope) -> Result<T, NetworkError<TypeConfig>> {
        METRICS.peer_received(self.target, reply.payload.len());
        postcard::from_bytes(&reply.payload).map_err(NetworkError::from_string)
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let envelope = self.seal(request).await?;
        let mut client = self
            .peers
            .client(&self.url)
            .map_err(|e| RPCError::Unreachable(self.unreachable(e)))?;
        let call = async {
            match rpc {
                Rpc::Vote => client.vote(envelope).await,
                Rpc::PreVote => client.pre_vote(envelope).await,
                Rpc::TransferLeader => client.transfer_leader(envelope).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(reply)) => {
                self.peers.note_reachable(self.target);
                reply.into_inner()
            }
            Ok(Err(status)) => {
                return Err(RPCError::Unreachable(self.unreachable(status.message())));
            }
            Err(_) => {
                return Err(RPCError::Unreachable(
                    self.unreachable(format!("no reply within {:?}", option.hard_ttl())),
                ));
            }
        };
        self.open(&reply).map_err(RPCError::Network)
    }

    /// Streams `snapshot` to the peer; returns its reply, counting the transfer.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let started = std::time::Instant::now();
        let sent = self.stream_snapshot(vote, snapshot).await;
        METRICS.snapshot_sent(
            self.target,
            sent.as_ref().map(|_| started.elapsed()).map_err(|_| ()),
        );
        sent
    }

    /// Streams `snapshot` to the peer; returns its reply.
    async fn stream_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        if let Err(e) = self.peers.link(self.target).await {
            return Err(StreamingError::Unreachable(self.unreachable(e)));
        }
        let _sending = self.peers.snapshot_sending();
        let header = postcard::to_stdvec(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let (cluster_id, from) = (self.peers.cluster_id(), self.peers.me());
        METRICS.peer_sent(self.target, header.len());
        let first = SnapshotChunk {
            cluster_id,
            from,
            header,
            data: Vec::new(),
        };
        // The first chunk goes in before the reader starts, so the channel never lacks it.
        tx.try_send(first)
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let mut data = snapshot.snapshot;
        let target = self.target;
        let reader = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx,
                buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
                cluster_id,
                from,
                to: target,
            };
            data.write_to(&mut out)?;
            out.flush()
        });
        let mut client = self
            .peers
            .client(&self.url)
            .map_err(|e| StreamingError::Unreachable(self.unreachable(e)))?;
        let sent = client
            .install_snapshot(ReceiverStream::new(rx))
            .await
            .map_err(|status| StreamingError::Unreachable(self.unreachable(status.message())));
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(StreamingError::Network(NetworkError::from_string(format!(
                    "reading the snapshot: {e}"
                ))));
            }
            Err(e) => return Err(StreamingError::Network(NetworkError::from_string(e))),
        }
        let reply: Envelope = sent?.into_inner();
        self.open(&reply).map_err(StreamingError::Network)
    }
}

/// Cuts the snapshot's byte stream into chunks for the gRPC request stream.
struct ChunkWriter {
    tx: mpsc::Sender<SnapshotChunk>,
    buf: Vec<u8>,
    cluster_id: u64,
    from: u64,
    /// The member it goes to, for counting the bytes sent.
    to: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        METRICS.peer_sent(self.to, data.len());
        self.tx
            .blocking_send(SnapshotChunk {
                cluster_id: self.cluster_id,
                from: self.from,
                header: Vec::new(),
                data,
            })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "snapshot stream closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.buf.len();
        let n = bytes.len().min(room);
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl RaftNetworkV2<TypeConfig> for PeerLink {
    type SnapshotData = SnapshotData;

    /// openraft's replication stream over one `AppendStream` call: requests go out as the
    /// leader produces them, without waiting for earlier answers, and answers come back in
    /// order. Opening the stream is bounded by the deadline openraft hands in (the heartbeat
    /// interval); once open, the stream ends with `Unreachable` when it owes answers and none
    /// came for [`STREAM_PATIENCE`] deadlines, or when fault injection isolates the target.
    ///
    /// openraft also sends each heartbeat, and each probe, as a stream of a single request.
    /// Those go as one call over the peer's open `Calls` stream instead (`append_entries`):
    /// a new `AppendStream` call per heartbeat cost a new HTTP/2 stream and a new stream task
    /// on the follower ten times a second, on the path that confirms leadership for
    /// linearizable reads.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendResult>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            use futures::FutureExt;
            let Some(first) = input.next().await else {
                return Ok(futures::stream::empty().boxed());
            };
            // A stream that has ended right after its first request is a single call. One
            // that has not (more requests ready, or waiting for the log to grow) is a
            // replication stream. Polling it here with a no-op waker is harmless: it is polled
            // again, with the real one, once the call is open.
            let second = match input.next().now_or_never() {
                Some(None) => {
                    let single = futures::stream::iter([first]);
                    return openraft::network::stream_append_sequential(self, single, option).await;
                }
                Some(Some(second)) => Some(second),
                None => None,
            };
            let input = futures::stream::iter(std::iter::once(first).chain(second)).chain(input);
            let ttl = option.hard_ttl();
            // openraft retries a stream that failed to open at once (its backoff acts only
            // between requests of an open stream), so a failed attempt waits out the deadline
            // here: a member that is down or cut off costs ten attempts a second, not a spin.
            let link = self.clone();
            let failed = |why: String| async move {
                tokio::time::sleep(ttl).await;
                Err(RPCError::Unreachable(link.unreachable(why)))
            };
            if let Err(e) = self.peers.link(self.target).await {
                return failed(e.to_string()).await;
            }
            let mut client = match self.peers.client(&self.url) {
                Ok(client) => client,
                Err(e) => return failed(e).await,
            };
            let in_flight = Arc::new(AtomicUsize::new(0));
            let (peers, target, sent) = (self.peers.clone(), self.target, in_flight.clone());
            // Each append passes the link filter on its way; a dropped one ends the stream,
            // as a broken connection would.
            let outbound = input
                .then(move |request| {
                    let peers = peers.clone();
                    async move { peers.link(target).await.ok().map(|()| request) }
                })
                .take_while(|passed| futures::future::ready(passed.is_some()))
                .filter_map(futures::future::ready)
                .filter_map({
                    let peers = self.peers.clone();
                    move |request| {
                        // An entry that cannot be encoded ends the stream; openraft then sees
                        // its requests unanswered and starts over.
                        let envelope = postcard::to_stdvec(&request)
                            .map(|payload| {
                                METRICS.peer_sent(target, payload.len());
                                peers.envelope(payload)
                            })
                            .inspect_err(|e| tracing::error!(error = %e, "encoding AppendEntries"))
                            .ok();
                        if envelope.is_some() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        futures::future::ready(envelope)
                    }
                });
            let inbound = match tokio::time::timeout(ttl, client.append_stream(outbound)).await {
                Ok(Ok(response)) => {
                    self.peers.note_reachable(self.target);
                    response.into_inner()
                }
                Ok(Err(status)) => return failed(status.message().to_string()).await,
                Err(_) => {
                    return Err(RPCError::Unreachable(
                        self.unreachable(format!("no reply within {ttl:?}")),
                    ));
                }
            };
            Ok(replies(self.clone(), inbound, in_flight, ttl))
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Heartbeats (no entries, so no disk write on the other side) time the round trip.
        let started = rpc.entries.is_empty().then(std::time::Instant::now);
        let envelope = self.seal(&rpc).await?;
        let reply = self
            .peers
            .call(
                &self.url,
                CallKind::AppendEntries,
                envelope,
                Some(option.hard_ttl()),
            )
            .await
            .map_err(|e| {
                RPCError::Unreachable(self.unreachable(match e {
                    CallError::NotSent(why) | CallError::Lost(why) => why,
                    CallError::Refused(status) => status.message().to_string(),
                }))
            })
            .and_then(|reply| self.open(&reply).map_err(RPCError::Network));
        if reply.is_ok() {
            self.peers.note_reachable(self.target);
        }
        match (started, &reply) {
            (Some(started), Ok(_)) => METRICS
                .peer_rtt(self.target)
                .observe(started.elapsed().as_secs_f64()),
            (Some(_), Err(_)) => METRICS.heartbeat_send_failures.inc(),
            (None, _) => {}
        }
        reply
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::PreVote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::TransferLeader, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            reply = self.send_snapshot(vote, snapshot) => reply,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

/// The leader's side of a replication stream's answers: each reply in order, until the
/// follower ends the stream or fails. A stream with requests in flight waits up to
/// `STREAM_PATIENCE` deadlines for the next reply (a follower applying a large batch is slow,
/// not gone); an idle one waits without limit; a failure is the last item, as openraft ends
/// the session on an error.
fn replies(
    link: PeerLink,
    inbound: tonic::Streaming<Envelope>,
    in_flight: Arc<AtomicUsize>,
    ttl: Duration,
) -> BoxStream<'static, AppendResult> {
    let patience = ttl * STREAM_PATIENCE;
    futures::stream::unfold(Some((inbound, in_flight)), move |state| {
        let link = link.clone();
        async move {
            let (mut inbound, in_flight) = state?;
            let mut waited = Duration::ZERO;
            loop {
                let failed = match tokio::time::timeout(ttl, inbound.message()).await {
                    Ok(Ok(Some(envelope))) => {
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        let answer = link.open(&envelope).map_err(RPCError::Network);
                        return Some((answer, Some((inbound, in_flight))));
                    }
                    Ok(Ok(None)) => return None,
                    Ok(Err(status)) => status.message().to_string(),
                    // Idle: nothing asked, nothing owed.
                    Err(_) if in_flight.load(Ordering::Relaxed) == 0 => {
                        waited = Duration::ZERO;
                        continue;
                    }
                    Err(_) if waited + ttl < patience => {
                        waited += ttl;
                        continue;
                    }
                    Err(_) => format!("no reply within {patience:?}"),
                };
                // The last item: openraft ends the session on an error.
                return Some((Err(RPCError::Unreachable(link.unreachable(failed))), None));
            }
        }
    })
    .boxed()
}
