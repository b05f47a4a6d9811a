//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases. Grants and revokes go through Raft; keepalives and remaining TTLs are the
//! leader's lessor's business (see `lease::lessor`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::Lease;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{Context, status};
use crate::lease::{Leases, Lessor, MAX_LEASE_TTL_SECS};
use crate::mvcc::Mvcc;
use crate::raft::AppHandler;
use crate::state_machine::{Command, CommandResponse};

/// Keepalive responses buffered per stream.
const KEEPALIVE_BUFFER: usize = 64;

pub struct LeaseService {
    ctx: Context,
}

impl LeaseService {
    pub fn new(ctx: Context) -> Self {
        LeaseService { ctx }
    }

    async fn propose(&self, command: Command) -> Result<i64, Status> {
        match self.ctx.propose(command).await? {
            CommandResponse::Lease(Ok(revision)) => Ok(revision),
            CommandResponse::Lease(Err(e)) => Err(status::mvcc_error(&e)),
            other => Err(Status::internal(format!(
                "cairn: unexpected response {other:?} to a lease command"
            ))),
        }
    }

    /// Runs a blocking read of the lease table and the current revision.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::storage::Storage) -> Result<T, crate::mvcc::StorageError>
        + Send
        + 'static,
    ) -> Result<(T, i64), Status> {
        let storage = self.ctx.storage.clone();
        tokio::task::spawn_blocking(move || {
            let value = f(&storage)?;
            let rev = Mvcc::read_view(&storage)
                .map(|v| v.rev)
                .map_err(crate::mvcc::into_storage)?;
            Ok::<_, crate::mvcc::StorageError>((value, rev))
        })
        .await
        .map_err(|e| Status::internal(format!("cairn: lease read failed: {e}")))?
        .map_err(|e| Status::internal(format!("cairn: {e}")))
    }
}

/// Whole seconds left, truncated, as etcd reports them.
fn whole_secs(d: Duration) -> i64 {
    d.as_secs() as i64
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL_SECS {
            return Err(status::lease_ttl_too_large());
        }
        let ttl = req.ttl.max(self.ctx.limits.min_lease_ttl_secs);
        let id = if req.id == 0 {
            self.ctx.lessor.next_id()
        } else {
            req.id
        };
        let revision = self
            .propose(Command::LeaseGrant { id, ttl_secs: ttl })
            .await?;
        self.ctx.lessor.renew(id, ttl);
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.ctx.header(revision),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        let revision = self.propose(Command::LeaseRevoke { id }).await?;
        self.ctx.lessor.forget(id);
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.ctx.header(revision),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let require_leader = super::requires_leader(&request);
        keep_alive_stream(&self.ctx, require_leader, request.into_inner()).map(Response::new)
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let (id, want_keys) = (req.id, req.keys);
        let ((lease, keys), rev) = self
            .read(move |storage| {
                let leases = Leases(storage);
                let lease = leases.get(id)?;
                let keys = if want_keys && lease.is_some() {
                    leases.keys(id)?
                } else {
                    Vec::new()
                };
                Ok((lease, keys))
            })
            .await?;
        let header = self.ctx.header(rev);
        let Some(lease) = lease else {
            // etcd reports a missing lease as TTL -1, not as an error.
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        // A leader that has not ticked since it was elected does not track the lease yet; the
        // checkpoint is then the best answer.
        let remaining = match remaining_secs(&self.ctx, id).await? {
            Some(secs) => secs,
            None => lease.remaining_secs.unwrap_or(lease.ttl_secs),
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header,
            id,
            ttl: remaining,
            granted_ttl: lease.ttl_secs,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let (leases, rev) = self.read(|storage| Leases(storage).all()).await?;
        let leases = leases
            .into_iter()
            .map(|l| pb::LeaseStatus { id: l.id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.ctx.header(rev),
            leases,
        }))
    }
}

/// A lease request only the leader's lessor can answer (it owns the deadlines). Members that
/// do not lead send these to the leader (`RaftNode::on_leader_app`).
#[derive(Debug, Serialize, Deserialize)]
enum LessorRequest {
    /// Renews a lease; answers its TTL (0 if the lease does not exist).
    KeepAlive(i64),
    /// Answers the whole seconds left on a lease, or -1 if the lessor does not track it.
    Remaining(i64),
}

impl LessorRequest {
    /// The answer of this member's lessor (which should be the leader's).
    async fn answer_here(self, ctx: &Context) -> Result<i64, String> {
        match self {
            LessorRequest::KeepAlive(id) => renew_local(ctx, id).await,
            LessorRequest::Remaining(id) => Ok(ctx.lessor.remaining(id).map_or(-1, whole_secs)),
        }
    }
}

/// Serves forwarded [`LessorRequest`]s on the leader.
struct LeaderLessor(std::sync::Weak<super::ApiContext>);

impl AppHandler for LeaderLessor {
    fn handle(
        &self,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'static>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or("server stopped")?;
            let request: LessorRequest =
                postcard::from_bytes(&request).map_err(|e| e.to_string())?;
            let answer = request.answer_here(&ctx).await?;
            postcard::to_stdvec(&answer).map_err(|e| e.to_string())
        })
    }
}

/// Lets other members reach this member's lessor while it leads.
pub fn register_leader_handler(ctx: &Context) {
    ctx.raft
        .set_app_handler(Arc::new(LeaderLessor(Arc::downgrade(ctx))));
}

/// Asks the leader's lessor, here or over the peer channel.
async fn ask_lessor(ctx: &Context, request: LessorRequest) -> Result<i64, Status> {
    if ctx.raft.status().is_leader {
        return request
            .answer_here(ctx)
            .await
            .map_err(|e| Status::internal(format!("cairn: {e}")));
    }
    let bytes = postcard::to_stdvec(&request).map_err(|e| Status::internal(e.to_string()))?;
    let answer = ctx
        .raft
        .on_leader_app(bytes)
        .await
        .map_err(|e| status::propose_error(&e))?;
    postcard::from_bytes(&answer)
        .map_err(|e| Status::internal(format!("cairn: bad lessor reply: {e}")))
}

/// Renews lease `id` on this member's lessor; its TTL, or 0 if it does not exist.
async fn renew_local(ctx: &Context, id: i64) -> Result<i64, String> {
    let storage = ctx.storage.clone();
    let lease = tokio::task::spawn_blocking(move || Leases(&storage).get(id))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    // etcd answers TTL 0 for a lease that does not exist.
    let Some(lease) = lease else { return Ok(0) };
    if lease.remaining_secs.is_some() {
        // A checkpoint would make the next leader count from before this keepalive: clear it
        // first (etcd #13491), so no leader change can expire a lease that was kept alive.
        let clear = Command::LeaseCheckpoint {
            checkpoints: vec![(id, None)],
        };
        ctx.propose(clear)
            .await
            .map_err(|e| e.message().to_string())?;
    }
    ctx.lessor.renew(lease.id, lease.ttl_secs);
    Ok(lease.ttl_secs)
}

async fn keep_alive(ctx: &Context, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let ttl = ask_lessor(ctx, LessorRequest::KeepAlive(id)).await?;
    let storage = ctx.storage.clone();
    let rev = tokio::task::spawn_blocking(move || Mvcc::read_view(&storage).map(|v| v.rev))
        .await
        .map_err(|e| Status::internal(format!("cairn: keepalive failed: {e}")))?
        .map_err(|e| status::storage_error(&e))?;
    Ok(pb::LeaseKeepAliveResponse {
        header: ctx.header(rev),
        id,
        ttl,
    })
}

/// Seconds left on lease `id` per the leader's lessor, if it tracks the lease.
/// Answers each keepalive request from `inbound` (gRPC's request stream, or the HTTP
/// gateway's) in order.
pub fn keep_alive_stream<S>(
    ctx: &Context,
    require_leader: bool,
    mut inbound: S,
) -> Result<ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>, Status>
where
    S: Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
{
    if require_leader && ctx.raft.status().leader.is_none() {
        return Err(status::propose_error(&crate::raft::ProposeError::NoLeader));
    }
    let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut stopping = ctx.stopping.clone();
        loop {
            let req = tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => req,
                    None | Some(Err(_)) => return,
                },
                _ = stopping.changed() => return,
                _ = tx.closed() => return,
            };
            let resp = keep_alive(&ctx, req.id).await;
            if tx.send(resp).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

async fn remaining_secs(ctx: &Context, id: i64) -> Result<Option<i64>, Status> {
    let secs = ask_lessor(ctx, LessorRequest::Remaining(id)).await?;
    Ok((secs >= 0).then_some(secs))
}

/// The leader's expiry loop: every tick, reconcile deadlines with the lease table and, while
/// this member leads, propose a revoke for each expired lease. Ends when the member stops.
pub async fn run_lessor(ctx: Context) {
    let mut stopping = ctx.stopping.clone();
    let mut tick = tokio::time::interval(crate::lease::lessor::TICK);
    let checkpoint_every = ctx.limits.lease_checkpoint_interval;
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        let storage = ctx.storage.clone();
        let Ok(table) = tokio::task::spawn_blocking(move || Lessor::table(&storage)).await else {
            continue;
        };
        if !ctx.raft.status().is_leader {
            // Deadlines are the leader's alone. Dropping them here means a member that becomes
            // leader starts every lease's countdown afresh, instead of expiring leases whose
            // keepalives went to the previous leader.
            ctx.lessor.clear();
            continue;
        }
        let expired = ctx.lessor.tick(&table);
        if last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = tokio::time::Instant::now();
            let due = ctx.lessor.checkpoints_due(&table);
            for chunk in due.chunks(crate::lease::lessor::MAX_CHECKPOINTS) {
                let command = Command::LeaseCheckpoint {
                    checkpoints: chunk.to_vec(),
                };
                if let Err(e) = ctx.propose(command).await {
                    tracing::warn!(error = %e.message(), "lease checkpoint failed; will retry");
                }
            }
        }
        for id in expired {
            match ctx.propose(Command::LeaseRevoke { id }).await {
                Ok(_) => ctx.lessor.forget(id),
                Err(e) => {
                    tracing::warn!(lease = format!("{id:x}"), error = %e.message(), "lease expiry revoke failed; will retry")
                }
            }
        }
    }
}
