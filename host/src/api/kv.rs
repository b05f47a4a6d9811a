//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use crate::plugin::engine::PolicyOperation;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_server::Kv;
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status};

use super::status;
use super::{Context, convert};
use crate::auth::Caller;
use crate::auth::needs;
use crate::mvcc::{CompactRequest, WriteRequest, WriteResponse, validate};
use crate::state_machine::{Command, CommandResponse};

pub struct KvService {
    ctx: Context,
}

impl KvService {
    pub fn new(ctx: Context) -> Self {
        KvService { ctx }
    }

    /// Proposes a KV write as `caller` and unwraps its response.
    async fn write(&self, caller: Caller, req: WriteRequest) -> Result<WriteResponse, Status> {
        match self.ctx.propose_as(caller, Command::Kv(req)).await? {
            CommandResponse::Kv(Ok(resp)) => Ok(resp),
            CommandResponse::Kv(Err(e)) => Err(status::mvcc_error(&e)),
            other => Err(status::unexpected_response("a KV write", &other)),
        }
    }
}

fn unexpected(resp: WriteResponse) -> Status {
    status::unexpected_response("a KV write", &resp)
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        let serializable = req.serializable;
        let point = req.range_end.is_empty();
        let req = convert::range_request(req);
        validate::check_range(&req).map_err(|e| status::invalid_request(&e))?;
        // As etcd: the read point first, then the permission, against the store as of it.
        if !serializable {
            self.ctx.read_barrier().await?;
        }
        self.ctx
            .check_read(&caller, PolicyOperation::Range, [needs::of_range(&req)])?;
        let resp = if point {
            self.ctx.read_point(true, |view| view.range(&req)).await?
        } else {
            self.ctx.read(true, move |view| view.range(&req)).await?
        };
        crate::metrics::METRICS.ranges.inc();
        Ok(self.ctx.respond(convert::range_response(resp)))
    }

    type RangeStreamStream = BoxStream<'static, Result<pb::RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(status::unimplemented("KV.RangeStream"))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        self.ctx.check_size(req.encoded_len())?;
        let req = convert::put_request(req);
        validate::check_put(&req).map_err(|e| status::invalid_request(&e))?;
        match self.write(caller, WriteRequest::Put(req)).await? {
            WriteResponse::Put(r) => Ok(self.ctx.respond(convert::put_response(r))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        self.ctx.check_size(req.encoded_len())?;
        let req = convert::delete_request(req);
        validate::check_delete_range(&req.key).map_err(|e| status::invalid_request(&e))?;
        match self.write(caller, WriteRequest::DeleteRange(req)).await? {
            WriteResponse::DeleteRange(r) => Ok(self.ctx.respond(convert::delete_response(r))),
            other => Err(unexpected(other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        self.ctx.check_size(req.encoded_len())?;
        let req = convert::txn_request(req)?;
        validate::check_txn(&req, self.ctx.limits.max_txn_ops)
            .map_err(|e| status::invalid_request(&e))?;
        // A computed compare runs a plugin, and plugins run only in apply (where their
        // statistics are kept identically on every member): such txns always go through Raft.
        if is_read_only(&req) && !crate::plugin::hooks::has_computed(&req) {
            // etcd serves a read-only txn without proposing it: compares and ranges run
            // against one consistent view after a linearizable read point (and the permission
            // check, against the store as of it).
            self.ctx.read_barrier().await?;
            let mut reads = Vec::new();
            needs::of_txn(&req, &mut reads);
            self.ctx.check_read(&caller, PolicyOperation::Txn, reads)?;
            let resp = self
                .ctx
                .read(true, move |view| crate::mvcc::txn::read_only(view, &req))
                .await?;
            return Ok(self.ctx.respond(convert::txn_response(resp)));
        }
        match self.write(caller, WriteRequest::Txn(req)).await? {
            WriteResponse::Txn(r) => Ok(self.ctx.respond(convert::txn_response(r))),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        // Compaction runs inside apply, so it is physical by the time the write returns.
        let write = WriteRequest::Compact(CompactRequest {
            revision: req.revision,
            physical: req.physical,
        });
        match self.write(caller, write).await? {
            WriteResponse::Compact(r) => Ok(Response::new(pb::CompactionResponse {
                header: self.ctx.header(r.revision),
            })),
            other => Err(unexpected(other)),
        }
    }
}

/// True when no branch of the txn, at any depth, writes.
fn is_read_only(req: &crate::mvcc::TxnRequest) -> bool {
    use crate::mvcc::RequestOp;
    req.success.iter().chain(&req.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
        RequestOp::Txn(t) => is_read_only(t),
    })
}
