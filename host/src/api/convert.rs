//! Conversions between the wire types (`cairn_proto`) and the MVCC types. Only `api/` knows
//! protobuf; everything below it speaks `mvcc::types`.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::compare::{
    CompareResult as PbResult, CompareTarget as PbTarget, TargetUnion,
};
use cairn_proto::etcdserverpb::range_request::{SortOrder as PbOrder, SortTarget as PbSortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::mvccpb;
use tonic::Status;

use super::status::invalid_argument;
use crate::mvcc::types::*;

pub fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A header carrying only a revision, as etcd puts inside each response of a Txn.
fn rev_header(revision: Revision) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

pub fn range_request(r: pb::RangeRequest) -> RangeRequest {
    // Unknown enum values behave as etcd treats them: no sorting, key target.
    let sort_order = match PbOrder::try_from(r.sort_order) {
        Ok(PbOrder::Ascend) => SortOrder::Ascend,
        Ok(PbOrder::Descend) => SortOrder::Descend,
        _ => SortOrder::None,
    };
    let sort_target = match PbSortTarget::try_from(r.sort_target) {
        Ok(PbSortTarget::Version) => SortTarget::Version,
        Ok(PbSortTarget::Create) => SortTarget::Create,
        Ok(PbSortTarget::Mod) => SortTarget::Mod,
        Ok(PbSortTarget::Value) => SortTarget::Value,
        _ => SortTarget::Key,
    };
    RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn range_response(r: RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: rev_header(r.revision),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_request(r: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_response(r: PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: rev_header(r.revision),
        prev_kv: r.prev_kv.map(kv),
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

pub fn delete_response(r: DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: rev_header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

pub fn compare(c: pb::Compare) -> Result<Compare, Status> {
    let result = match PbResult::try_from(c.result) {
        Ok(PbResult::Equal) => CompareResult::Equal,
        Ok(PbResult::Greater) => CompareResult::Greater,
        Ok(PbResult::Less) => CompareResult::Less,
        Ok(PbResult::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(invalid_argument(format!(
                "cairn: unknown compare result {}",
                c.result
            )));
        }
    };
    let target = match PbTarget::try_from(c.target) {
        Ok(PbTarget::Version) => CompareTarget::Version,
        Ok(PbTarget::Create) => CompareTarget::Create,
        Ok(PbTarget::Mod) => CompareTarget::Mod,
        Ok(PbTarget::Value) => CompareTarget::Value,
        Ok(PbTarget::Lease) => CompareTarget::Lease,
        Ok(PbTarget::CairnComputed) => CompareTarget::Computed,
        Err(_) => {
            return Err(invalid_argument(format!(
                "cairn: unknown compare target {}",
                c.target
            )));
        }
    };
    if target == CompareTarget::Computed {
        let Some(computed) = c.computed else {
            return Err(invalid_argument(
                "cairn: a CAIRN_COMPUTED compare needs its `computed` field",
            ));
        };
        use cairn_proto::etcdserverpb::cairn_computed::Expected;
        let expected = match computed.expected {
            Some(Expected::IntValue(i)) => ComputedValue::Int(i),
            Some(Expected::BytesValue(b)) => ComputedValue::Bytes(b),
            None => ComputedValue::Int(0),
        };
        return Ok(Compare {
            result,
            target,
            key: c.key,
            range_end: c.range_end,
            operand: Some(CompareOperand::Computed(Computed {
                binding: computed.binding,
                argument: computed.argument,
                expected,
            })),
        });
    }
    let operand = c.target_union.map(|u| match u {
        TargetUnion::Version(v) => CompareOperand::Version(v),
        TargetUnion::CreateRevision(v) => CompareOperand::Create(v),
        TargetUnion::ModRevision(v) => CompareOperand::Mod(v),
        TargetUnion::Value(v) => CompareOperand::Value(v),
        TargetUnion::Lease(v) => CompareOperand::Lease(v),
    });
    Ok(Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
        operand,
    })
}

fn request_op(op: pb::RequestOp) -> Result<RequestOp, Status> {
    Ok(match op.request {
        Some(Request::RequestRange(r)) => RequestOp::Range(range_request(r)),
        Some(Request::RequestPut(p)) => RequestOp::Put(put_request(p)),
        Some(Request::RequestDeleteRange(d)) => RequestOp::DeleteRange(delete_request(d)),
        Some(Request::RequestTxn(t)) => RequestOp::Txn(txn_request(t)?),
        None => return Err(invalid_argument("cairn: txn op without a request")),
    })
}

pub fn txn_request(t: pb::TxnRequest) -> Result<TxnRequest, Status> {
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

pub fn txn_response(t: TxnResponse) -> pb::TxnResponse {
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                ResponseOp::Range(r) => Response::ResponseRange(range_response(r)),
                ResponseOp::Put(p) => Response::ResponsePut(put_response(p)),
                ResponseOp::DeleteRange(d) => Response::ResponseDeleteRange(delete_response(d)),
                ResponseOp::Txn(t) => Response::ResponseTxn(txn_response(t)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: rev_header(t.revision),
        succeeded: t.succeeded,
        responses,
    }
}
