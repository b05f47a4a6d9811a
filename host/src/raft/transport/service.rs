//! The Raft network, receiving side: the `cairn.raft.v1.Peer` gRPC service on the peer port.
//!
//! Every call first passes [`Peers::admit`] (same cluster, and a link the test filter has not cut);
//! a refusal is `FailedPrecondition`, which the sender treats as "not delivered". Raft calls go
//! straight into openraft; forwarded requests run on this member if it leads (`forward.rs`).
//! Heartbeats and forwarded requests also arrive over a `Calls` stream (`calls.rs`), where
//! each is admitted and answered exactly as its unary call would be.
//! A snapshot is received into a file in the snapshot directory and handed to openraft whole.

use std::io::Write;
use std::path::PathBuf;

use cairn_proto::cairn_raft::peer_server::Peer;
use cairn_proto::cairn_raft::{Call, CallKind, Envelope, SnapshotChunk};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::peer_error::{PeerError, raft_stopped as unavailable};
use super::peers::Peers;
use crate::metrics::{GaugeGuard, METRICS};
use crate::raft::RaftNode;
use crate::raft::state_machine::{Snapshot, SnapshotData};
use crate::raft::types::Member;
use crate::raft::types::{SnapshotMeta, Vote};

/// What `Hello` answers: enough for a new member to check it was added and to learn the
/// cluster's ID.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct HelloReply {
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

/// Answers of a `Calls` stream queued before its calls wait for the caller to read.
const CALL_ANSWERS_QUEUED: usize = 256;

#[derive(Clone)]
pub struct PeerService {
    node: RaftNode,
    snapshot_dir: PathBuf,
    /// Turns true when the member stops: the long-lived streams then end, so the server's
    /// graceful shutdown does not wait on a peer that never closes its side.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(
        node: RaftNode,
        snapshot_dir: PathBuf,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        PeerService {
            node,
            snapshot_dir,
            stopping,
        }
    }

    /// Resolves when the member stops.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    fn admit(&self, cluster_id: u64, from: u64) -> Result<(), Status> {
        self.node
            .peers
            .admit(cluster_id, from)
            .map_err(Status::from)
    }

    /// Admits and decodes a request; returns its sender with it.
    fn open<T: DeserializeOwned>(&self, envelope: Envelope) -> Result<(u64, T), Status> {
        let from = envelope.from;
        received(&self.node.peers, &envelope)?;
        let request = postcard::from_bytes(&envelope.payload).map_err(|error| {
            METRICS.peer_receive_failed(from);
            Status::from(PeerError::Undecodable {
                what: "peer payload",
                error,
            })
        })?;
        Ok((from, request))
    }

    /// Encodes a reply to member `to`.
    fn seal<T: Serialize>(&self, to: u64, reply: &T) -> Result<Envelope, Status> {
        seal(&self.node.peers, to, reply).map_err(Status::from)
    }

    /// Answers a request that may come as a unary call or over the `Calls` stream.
    async fn answer(&self, kind: CallKind, envelope: Envelope) -> Result<Envelope, Status> {
        match kind {
            CallKind::AppendEntries => {
                let (from, rpc) = self.open(envelope)?;
                let reply = self.node.raft.append_entries(rpc).await;
                self.seal(from, &reply.map_err(unavailable)?)
            }
            CallKind::Forward => {
                let (from, forwarded) = self.open(envelope)?;
                let reply = self.node.serve_forwarded(forwarded).await;
                self.seal(from, &reply)
            }
            CallKind::Unspecified => Err(PeerError::Malformed("a call of unknown kind").into()),
        }
    }

    /// One request from the `Calls` stream, answered under its id.
    async fn answer_call(&self, call: Call) -> Call {
        let kind = CallKind::try_from(call.kind).unwrap_or(CallKind::Unspecified);
        let answer = match call.envelope {
            Some(envelope) => self.answer(kind, envelope).await,
            None => Err(PeerError::Malformed("a call without a request").into()),
        };
        let (envelope, code, message) = match answer {
            Ok(envelope) => (Some(envelope), 0, String::new()),
            Err(status) => (None, status.code() as i32, status.message().to_string()),
        };
        Call {
            envelope,
            code,
            message,
            ..call
        }
    }

    async fn receive_snapshot(
        &self,
        mut chunks: Streaming<SnapshotChunk>,
    ) -> Result<(u64, Vote, SnapshotMeta, std::fs::File), Status> {
        let first = chunks
            .message()
            .await?
            .ok_or(PeerError::Malformed("empty snapshot stream"))?;
        self.admit(first.cluster_id, first.from)?;
        let from = first.from;
        METRICS.peer_received(from, first.header.len() + first.data.len());
        let (vote, meta): (Vote, SnapshotMeta) =
            postcard::from_bytes(&first.header).map_err(|error| PeerError::Undecodable {
                what: "snapshot header",
                error,
            })?;
        let io = PeerError::Staging;
        std::fs::create_dir_all(&self.snapshot_dir).map_err(io)?;
        // Unnamed: the file disappears on its own if this member dies mid-transfer.
        let mut file = tempfile::tempfile_in(&self.snapshot_dir).map_err(io)?;
        file.write_all(&first.data).map_err(io)?;
        while let Some(chunk) = chunks
            .message()
            .await
            .inspect_err(|_| METRICS.snapshot_received(from, Err(())))?
        {
            METRICS.peer_received(from, chunk.data.len());
            file.write_all(&chunk.data).map_err(io)?;
        }
        Ok((first.from, vote, meta, file))
    }
}

/// Admits a request from a peer, counting its bytes, or its refusal.
fn received(peers: &Peers, envelope: &Envelope) -> Result<(), PeerError> {
    peers
        .admit(envelope.cluster_id, envelope.from)
        .inspect_err(|_| METRICS.peer_receive_failed(envelope.from))?;
    METRICS.peer_received(envelope.from, envelope.payload.len());
    Ok(())
}

/// Encodes a message to member `to`, counting its bytes.
fn seal<T: Serialize>(peers: &Peers, to: u64, message: &T) -> Result<Envelope, PeerError> {
    let payload = postcard::to_stdvec(message).map_err(PeerError::Encoding)?;
    METRICS.peer_sent(to, payload.len());
    Ok(peers.envelope(payload))
}

#[tonic::async_trait]
impl Peer for PeerService {
    type AppendStreamStream = futures::stream::BoxStream<'static, Result<Envelope, Status>>;
    type CallsStream = futures::stream::BoxStream<'static, Result<Call, Status>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        use futures::StreamExt;
        tracing::debug!("replication stream from the leader opened");
        let peers = self.node.peers.clone();
        // The leader at the other end, for counting the answers' bytes.
        let leader = Arc::new(AtomicU64::new(0));
        let sender = leader.clone();
        // Requests until the first one that is refused (another cluster, fault injection) or
        // undecodable, or until the leader closes its side: ending the input ends the output.
        let requests = request.into_inner().scan((), move |(), item| {
            let decoded = item.ok().and_then(|envelope| {
                received(&peers, &envelope).ok()?;
                sender.store(envelope.from, Ordering::Relaxed);
                postcard::from_bytes::<
                        openraft::raft::AppendEntriesRequest<crate::raft::TypeConfig>,
                    >(&envelope.payload)
                    .inspect_err(|_| METRICS.peer_receive_failed(envelope.from))
                    .ok()
            });
            futures::future::ready(decoded)
        });
        let peers = self.node.peers.clone();
        let results = self
            .node
            .raft
            .stream_append(requests)
            .map(move |result| match result {
                Ok(result) => {
                    seal(&peers, leader.load(Ordering::Relaxed), &result).map_err(Status::from)
                }
                Err(fatal) => Err(unavailable(fatal)),
            })
            .take_until(self.stopped());
        Ok(Response::new(results.boxed()))
    }

    async fn append_entries(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<Envelope>, Status> {
        self.answer(CallKind::AppendEntries, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn calls(
        &self,
        request: Request<Streaming<Call>>,
    ) -> Result<Response<Self::CallsStream>, Status> {
        use futures::StreamExt;
        use futures::stream::FuturesUnordered;
        let service = self.clone();
        let stopped = self.stopped();
        let mut requests = request.into_inner();
        let (answers, outbound) = tokio::sync::mpsc::channel(CALL_ANSWERS_QUEUED);
        // One task per stream runs its calls concurrently and answers each when done, until
        // the caller closes its side and every call has been answered.
        tokio::spawn(async move {
            let mut running = FuturesUnordered::new();
            let mut open = true;
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    // Calls still running are dropped: their callers learn the answers are lost.
                    () = &mut stopped => return,
                    next = requests.message(), if open => match next {
                        Ok(Some(call)) => running.push(service.answer_call(call)),
                        Ok(None) | Err(_) => open = false,
                    },
                    Some(answer) = running.next(), if !running.is_empty() => {
                        if answers.send(Ok(answer)).await.is_err() {
                            return; // the caller is gone
                        }
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(
            tokio_stream::wrappers::ReceiverStream::new(outbound).boxed(),
        ))
    }

    async fn vote(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (from, rpc) = self.open(request.into_inner())?;
        let reply = self.node.raft.vote(rpc).await;
        self.seal(from, &reply.map_err(unavailable)?)
            .map(Response::new)
    }

    async fn pre_vote(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (from, rpc) = self.open(request.into_inner())?;
        let reply = self.node.raft.pre_vote(rpc).await;
        self.seal(from, &reply.map_err(unavailable)?)
            .map(Response::new)
    }

    async fn transfer_leader(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<Envelope>, Status> {
        let (from, rpc) = self.open(request.into_inner())?;
        let reply = self.node.raft.handle_transfer_leader(rpc).await;
        self.seal(from, &reply.map_err(unavailable)?)
            .map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Envelope>, Status> {
        let started = std::time::Instant::now();
        let (from, vote, meta, file) = self.receive_snapshot(request.into_inner()).await?;
        tracing::info!(last_log_id = ?meta.last_log_id, "installing a snapshot from the leader");
        let _applying = GaugeGuard::new(&METRICS.snapshot_apply_in_progress);
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData::File(file),
        };
        let reply = self
            .node
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .inspect_err(|_| METRICS.snapshot_received(from, Err(())))
            .map_err(unavailable)?;
        METRICS.snapshot_received(from, Ok(started.elapsed()));
        self.seal(from, &reply).map(Response::new)
    }

    async fn forward(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.answer(CallKind::Forward, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn hello(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        // A joining member does not know the cluster ID yet; it checks our answer instead.
        let envelope = request.into_inner();
        self.node.peers.not_cut_from(envelope.from)?;
        self.seal(
            envelope.from,
            &HelloReply {
                cluster_id: self.node.peers.cluster_id(),
                members: self.node.committed_members(),
            },
        )
        .map(Response::new)
    }
}
