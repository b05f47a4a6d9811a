//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases. Grants and revokes go through Raft; keepalives and remaining TTLs are the
//! leader's lessor's business (`lease::lessor`), asked over the peer channel from a member
//! that does not lead. [`run_lessor`] is the lessor's clock and hands: it ticks the lessor
//! and proposes what each tick decides.

use crate::plugin::engine::PolicyOperation;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::Lease;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{Context, status};
use crate::auth::Caller;
use crate::auth::needs::Need;
use crate::lease::{Leases, Lessor, LessorRequest, MAX_LEASE_TTL_SECS};
use crate::mvcc::Mvcc;
use crate::raft::LessorHandler;
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

    async fn propose(&self, caller: Caller, command: Command) -> Result<i64, Status> {
        match self.ctx.propose_as(caller, command).await? {
            CommandResponse::Lease(Ok(revision)) => Ok(revision),
            CommandResponse::Lease(Err(e)) => Err(status::mvcc_error(&e)),
            other => Err(status::unexpected_response("a lease command", &other)),
        }
    }

    /// Runs a blocking read of the lease table and the current revision.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::storage::Storage) -> Result<T, crate::mvcc::Fault> + Send + 'static,
    ) -> Result<(T, i64), Status> {
        let storage = self.ctx.storage.clone();
        tokio::task::spawn_blocking(move || {
            let value = f(&storage)?;
            let rev = Mvcc::read_view(&storage)
                .map(|v| v.rev)
                .map_err(crate::mvcc::into_fault)?;
            Ok::<_, crate::mvcc::Fault>((value, rev))
        })
        .await
        .map_err(|e| status::internal("lease read failed", e))?
        .map_err(|e| status::internal("lease read failed", e))
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
        let caller = self.ctx.caller(&request)?;
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
            .propose(caller, Command::LeaseGrant { id, ttl_secs: ttl })
            .await?;
        self.ctx.lessor.renew(id, ttl, Instant::now());
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
        let caller = self.ctx.caller(&request)?;
        let id = request.into_inner().id;
        let revision = self.propose(caller, Command::LeaseRevoke { id }).await?;
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
        let caller = self.ctx.caller(&request)?;
        keep_alive_stream(&self.ctx, require_leader, &caller, request.into_inner())
            .map(Response::new)
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        self.ctx.check_user(&caller)?;
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
        // The names of a lease's keys are theirs to read (etcd 3.4.26 and later).
        self.ctx.check_read(
            &caller,
            PolicyOperation::Range,
            keys.iter().map(|k| Need::read(k, &[])),
        )?;
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
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.ctx.check_user(&self.ctx.caller(&request)?)?;
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

/// The answer of this member's lessor (which should be the leader's).
async fn answer_here(ctx: &Context, request: LessorRequest) -> Result<i64, String> {
    match request {
        LessorRequest::KeepAlive(id) => renew_local(ctx, id).await,
        LessorRequest::Remaining(id) => Ok(ctx
            .lessor
            .remaining(id, Instant::now())
            .map_or(-1, whole_secs)),
    }
}

/// Serves forwarded [`LessorRequest`]s on the leader.
struct LeaderLessor(std::sync::Weak<super::ApiContext>);

impl LessorHandler for LeaderLessor {
    fn handle(
        &self,
        request: LessorRequest,
    ) -> Pin<Box<dyn Future<Output = Result<i64, String>> + Send + 'static>> {
        let ctx = self.0.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or("server stopped")?;
            answer_here(&ctx, request).await
        })
    }
}

/// Lets other members reach this member's lessor while it leads.
pub fn register_leader_handler(ctx: &Context) {
    ctx.raft
        .set_lessor_handler(Arc::new(LeaderLessor(Arc::downgrade(ctx))));
}

/// Asks the leader's lessor, here or over the peer channel.
async fn ask_lessor(ctx: &Context, request: LessorRequest) -> Result<i64, Status> {
    if ctx.raft.status().is_leader {
        return answer_here(ctx, request)
            .await
            .map_err(|e| status::internal("the lessor could not answer", e));
    }
    ctx.raft
        .ask_lessor(request)
        .await
        .map_err(|e| status::propose_error(&e))
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
    ctx.lessor.renew(lease.id, lease.ttl_secs, Instant::now());
    Ok(lease.ttl_secs)
}

async fn keep_alive(ctx: &Context, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let ttl = ask_lessor(ctx, LessorRequest::KeepAlive(id)).await?;
    let storage = ctx.storage.clone();
    let rev = tokio::task::spawn_blocking(move || Mvcc::read_view(&storage).map(|v| v.rev))
        .await
        .map_err(|e| status::internal("keepalive failed", e))?
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
/// With authentication on, only a user may keep leases alive (checked as the stream opens).
pub fn keep_alive_stream<S>(
    ctx: &Context,
    require_leader: bool,
    caller: &Caller,
    mut inbound: S,
) -> Result<ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>, Status>
where
    S: Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
{
    if require_leader && ctx.raft.status().leader.is_none() {
        return Err(status::propose_error(&crate::raft::ProposeError::NoLeader));
    }
    ctx.check_user(caller)?;
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

/// The lessor's loop: every [`crate::lease::lessor::TICK`], hands the lessor the time, the
/// lease table and whether this member leads, and proposes the checkpoints and revokes it
/// decides. A failed proposal is logged and decided again on a later tick. Ends when the
/// member stops.
pub async fn run_lessor(ctx: Context) {
    let mut stopping = ctx.stopping.clone();
    let mut tick = tokio::time::interval(crate::lease::lessor::TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        let storage = ctx.storage.clone();
        let Ok(table) = tokio::task::spawn_blocking(move || Lessor::table(&storage)).await else {
            continue;
        };
        let duties = ctx
            .lessor
            .tick(Instant::now(), &table, ctx.raft.status().is_leader);
        for checkpoints in duties.checkpoints {
            if let Err(e) = ctx.propose(Command::LeaseCheckpoint { checkpoints }).await {
                tracing::warn!(error = %e.message(), "lease checkpoint failed; will retry");
            }
        }
        for id in duties.revokes {
            match ctx.propose(Command::LeaseRevoke { id }).await {
                Ok(_) => ctx.lessor.forget(id),
                Err(e) => {
                    tracing::warn!(lease = format!("{id:x}"), error = %e.message(), "lease expiry revoke failed; will retry")
                }
            }
        }
    }
}
