//! The recipes behind the Lock and Election services, as etcd's `concurrency` package runs
//! them: each contender owns the key `<name>/<lease id in hex>`, attached to its lease; the
//! contender whose key was created first holds the lock (or leads); the others wait until
//! every older key is gone. A key vanishes when its lease ends, so a crashed holder is
//! replaced once its lease expires.
//!
//! Waiting needs no per-key watch: the wait re-checks after each commit, which the state
//! machine announces on its revision channel.
//!
//! Every step runs as the caller of the Lock or Election call, as etcd's in-process client
//! does with the caller's token: its writes are checked in apply, its reads here.

use crate::plugin::engine::PolicyOperation;
use tonic::Status;

use super::{Context, status};
use crate::auth::Caller;
use crate::auth::needs::Need;
use crate::mvcc::{
    Compare, CompareOperand, CompareResult, CompareTarget, KeyValue, PutRequest, RangeRequest,
    RequestOp, ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, WriteRequest,
    WriteResponse,
};
use crate::state_machine::{Command, CommandResponse};

/// `<name>/`: the prefix all contenders' keys share.
pub fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The key `lease` contends with under `name`.
pub fn entry_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix(name);
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

/// The end of the prefix range of `p` (etcd's "prefix + 1").
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn create_rev_is(key: &[u8], rev: Revision) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Create,
        key: key.to_vec(),
        range_end: Vec::new(),
        operand: Some(CompareOperand::Create(rev)),
    }
}

fn put_op(key: &[u8], value: &[u8], lease: i64) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    })
}

fn delete_op(key: &[u8]) -> RequestOp {
    RequestOp::DeleteRange(crate::mvcc::DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })
}

fn get(key: &[u8]) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })
}

/// Proposes a txn and returns its response.
pub async fn txn(
    ctx: &Context,
    caller: &Caller,
    txn: TxnRequest,
) -> Result<crate::mvcc::TxnResponse, Status> {
    match ctx
        .propose_as(caller.clone(), Command::Kv(WriteRequest::Txn(txn)))
        .await?
    {
        CommandResponse::Kv(Ok(WriteResponse::Txn(r))) => Ok(r),
        CommandResponse::Kv(Err(e)) => Err(status::through_recipe(&e)),
        other => Err(status::unexpected_response("a txn", &other)),
    }
}

/// Creates `key = value` on `lease` unless it exists; returns the key as stored and whether
/// this call created it.
pub async fn create_entry(
    ctx: &Context,
    caller: &Caller,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<(KeyValue, bool), Status> {
    let put = put_op(key, value, lease);
    let resp = txn(
        ctx,
        caller,
        TxnRequest {
            compare: vec![create_rev_is(key, 0)],
            success: vec![put, get(key)],
            failure: vec![get(key)],
        },
    )
    .await?;
    let kv = resp
        .responses
        .iter()
        .find_map(|r| match r {
            ResponseOp::Range(r) => r.kvs.first().cloned(),
            _ => None,
        })
        .ok_or_else(status::session_expired)?;
    Ok((kv, resp.succeeded))
}

/// The oldest key under `name/` (the lock holder or the leader), if any.
pub async fn first_created(
    ctx: &Context,
    caller: &Caller,
    name: &[u8],
) -> Result<(Option<KeyValue>, Revision), Status> {
    let p = prefix(name);
    let req = RangeRequest {
        key: p.clone(),
        range_end: prefix_end(&p),
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..Default::default()
    };
    ctx.read_barrier().await?;
    ctx.check_read(
        caller,
        PolicyOperation::Range,
        [Need::read(&req.key, &req.range_end)],
    )?;
    let resp = ctx.read(true, move |view| view.range(&req)).await?;
    Ok((resp.kvs.into_iter().next(), resp.revision))
}

/// Waits until `mine` (created at `my_rev`) is the oldest key under `name/`. Fails if `mine`
/// disappears meanwhile (its lease ended) or the member stops. Returns the revision at which
/// the turn came.
pub async fn wait_turn(
    ctx: &Context,
    caller: &Caller,
    name: &[u8],
    mine: &[u8],
    my_rev: Revision,
) -> Result<Revision, Status> {
    let mut revs = ctx.raft.subscribe();
    let mut stopping = ctx.stopping.clone();
    let p = prefix(name);
    loop {
        // The keys themselves, not `count`: etcd's count ignores the revision filters.
        let older = RangeRequest {
            key: p.clone(),
            range_end: prefix_end(&p),
            max_create_revision: my_rev - 1,
            keys_only: true,
            limit: 1,
            ..Default::default()
        };
        let mine_req = RangeRequest {
            key: mine.to_vec(),
            count_only: true,
            ..Default::default()
        };
        ctx.read_barrier().await?;
        ctx.check_read(
            caller,
            PolicyOperation::Range,
            [Need::read(&older.key, &older.range_end)],
        )?;
        let (older, mine_left, rev) = ctx
            .read(true, move |view| {
                Ok((
                    view.range(&older)?.kvs.len(),
                    view.range(&mine_req)?.count,
                    view.rev,
                ))
            })
            .await?;
        if mine_left == 0 {
            return Err(status::session_expired());
        }
        if older == 0 {
            return Ok(rev);
        }
        tokio::select! {
            changed = revs.changed() => changed.map_err(|_| status::stopping())?,
            _ = stopping.changed() => return Err(status::stopping()),
        }
    }
}

/// Replaces the value of `key` if it still has create revision `rev`; false if not.
pub async fn put_if_created_at(
    ctx: &Context,
    caller: &Caller,
    key: &[u8],
    rev: Revision,
    value: &[u8],
    lease: i64,
) -> Result<bool, Status> {
    let put = put_op(key, value, lease);
    let resp = txn(
        ctx,
        caller,
        TxnRequest {
            compare: vec![create_rev_is(key, rev)],
            success: vec![put],
            failure: vec![],
        },
    )
    .await?;
    Ok(resp.succeeded)
}

/// Deletes `key` if it still has create revision `rev`; returns the revision after.
pub async fn delete_if_created_at(
    ctx: &Context,
    caller: &Caller,
    key: &[u8],
    rev: Revision,
) -> Result<Revision, Status> {
    let del = delete_op(key);
    Ok(txn(
        ctx,
        caller,
        TxnRequest {
            compare: vec![create_rev_is(key, rev)],
            success: vec![del],
            failure: vec![],
        },
    )
    .await?
    .revision)
}

/// Deletes `key` outright; returns the revision after.
pub async fn delete(ctx: &Context, caller: &Caller, key: &[u8]) -> Result<Revision, Status> {
    let del = delete_op(key);
    Ok(txn(
        ctx,
        caller,
        TxnRequest {
            compare: vec![],
            success: vec![del],
            failure: vec![],
        },
    )
    .await?
    .revision)
}
