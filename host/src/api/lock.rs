//! etcd's Lock service (`v3lockpb`): a named lock held through a lease (see `concurrency.rs`).

use cairn_proto::v3lockpb as pb;
use cairn_proto::v3lockpb::lock_server::Lock;
use tonic::{Request, Response, Status};

use super::Context;
use super::concurrency;

pub struct LockService {
    ctx: Context,
}

impl LockService {
    pub fn new(ctx: Context) -> Self {
        LockService { ctx }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        let key = concurrency::entry_key(&req.name, req.lease);
        let (kv, _) = concurrency::create_entry(&self.ctx, &caller, &key, b"", req.lease).await?;
        let rev =
            concurrency::wait_turn(&self.ctx, &caller, &req.name, &key, kv.create_revision).await?;
        Ok(Response::new(pb::LockResponse {
            header: self.ctx.header(rev),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let rev = concurrency::delete(&self.ctx, &caller, &request.into_inner().key).await?;
        Ok(Response::new(pb::UnlockResponse {
            header: self.ctx.header(rev),
        }))
    }
}
