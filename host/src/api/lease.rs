//! etcd's Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases. Grants and revokes go through Raft; keepalives and remaining TTLs are the
//! leader's lessor's business (see `lease::lessor`).

use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::Lease;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{Context, status};
use crate::lease::{Leases, Lessor, MAX_LEASE_TTL_SECS};
use crate::mvcc::Mvcc;
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
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let mut stopping = ctx.stopping.clone();
            loop {
                let req = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => req,
                        Ok(None) | Err(_) => return,
                    },
                    _ = stopping.changed() => return,
                };
                let storage = ctx.storage.clone();
                let looked_up = tokio::task::spawn_blocking(move || {
                    let lease = Leases(&storage).get(req.id)?;
                    let rev = Mvcc::read_view(&storage)
                        .map(|v| v.rev)
                        .map_err(crate::mvcc::into_storage)?;
                    Ok::<_, crate::mvcc::StorageError>((lease, rev))
                })
                .await;
                let resp = match looked_up {
                    Ok(Ok((lease, rev))) => {
                        // etcd answers TTL 0 for a lease that does not exist.
                        let ttl = lease.map_or(0, |l| {
                            ctx.lessor.renew(l.id, l.ttl_secs);
                            l.ttl_secs
                        });
                        Ok(pb::LeaseKeepAliveResponse {
                            header: ctx.header(rev),
                            id: req.id,
                            ttl,
                        })
                    }
                    Ok(Err(e)) => Err(Status::internal(format!("cairn: {e}"))),
                    Err(e) => Err(Status::internal(format!("cairn: keepalive failed: {e}"))),
                };
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
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
        let remaining = self
            .ctx
            .lessor
            .remaining(id)
            .map_or(lease.ttl_secs, whole_secs);
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

/// The leader's expiry loop: every tick, reconcile deadlines with the lease table and, while
/// this member leads, propose a revoke for each expired lease. Ends when the member stops.
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
        let expired = ctx.lessor.tick(&table);
        if !ctx.raft.status().is_leader {
            continue;
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
