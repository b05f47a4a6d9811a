//! etcd's Election service (`v3electionpb`): campaign for leadership of a name through a
//! lease, proclaim values, observe the leader, resign (see `concurrency.rs`).

use cairn_proto::v3electionpb as pb;
use cairn_proto::v3electionpb::election_server::Election;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Context, concurrency, convert, status};

/// Leader changes buffered per Observe stream.
const OBSERVE_BUFFER: usize = 16;

pub struct ElectionService {
    ctx: Context,
}

impl ElectionService {
    pub fn new(ctx: Context) -> Self {
        ElectionService { ctx }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        let key = concurrency::entry_key(&req.name, req.lease);
        let (kv, created) =
            concurrency::create_entry(&self.ctx, &caller, &key, &req.value, req.lease).await?;
        if !created && kv.value != req.value {
            // Campaigning again with the same lease re-proclaims the new value, as etcd does.
            concurrency::put_if_created_at(
                &self.ctx,
                &caller,
                &key,
                kv.create_revision,
                &req.value,
                req.lease,
            )
            .await?;
        }
        let rev =
            concurrency::wait_turn(&self.ctx, &caller, &req.name, &key, kv.create_revision).await?;
        let leader = pb::LeaderKey {
            name: req.name,
            key,
            rev: kv.create_revision,
            lease: req.lease,
        };
        Ok(Response::new(pb::CampaignResponse {
            header: self.ctx.header(rev),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        let leader = req.leader.ok_or_else(status::missing_leader_key)?;
        if !concurrency::put_if_created_at(
            &self.ctx,
            &caller,
            &leader.key,
            leader.rev,
            &req.value,
            leader.lease,
        )
        .await?
        {
            return Err(status::election_not_leader());
        }
        let (_, rev) = concurrency::first_created(&self.ctx, &caller, &leader.name).await?;
        Ok(Response::new(pb::ProclaimResponse {
            header: self.ctx.header(rev),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        match concurrency::first_created(&self.ctx, &caller, &name).await? {
            (Some(kv), rev) => Ok(Response::new(pb::LeaderResponse {
                header: self.ctx.header(rev),
                kv: Some(convert::kv(kv)),
            })),
            (None, _) => Err(status::election_no_leader()),
        }
    }

    type ObserveStream = ReceiverStream<Result<pb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let caller = self.ctx.caller(&request)?;
        let name = request.into_inner().name;
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let mut revs = ctx.raft.subscribe();
            let mut stopping = ctx.stopping.clone();
            // The (key, mod revision) last sent: a new leader or a new value is a change.
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                let (leader, rev) = match concurrency::first_created(&ctx, &caller, &name).await {
                    Ok(found) => found,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if let Some(kv) = leader {
                    let now = (kv.key.clone(), kv.mod_revision);
                    if last.as_ref() != Some(&now) {
                        last = Some(now);
                        let resp = pb::LeaderResponse {
                            header: ctx.header(rev),
                            kv: Some(convert::kv(kv)),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = revs.changed() => if changed.is_err() { return },
                    _ = stopping.changed() => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(status::missing_leader_key)?;
        let rev =
            concurrency::delete_if_created_at(&self.ctx, &caller, &leader.key, leader.rev).await?;
        Ok(Response::new(pb::ResignResponse {
            header: self.ctx.header(rev),
        }))
    }
}
