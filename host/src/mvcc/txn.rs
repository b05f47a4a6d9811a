//! Put, DeleteRange and Txn with etcd's apply semantics.
//!
//! A Txn runs in three steps, as etcd's applier does: every compare along the taken path
//! (nested txns included) is evaluated against the state before the txn; then the ops on that
//! path are checked against the same state (`ignore_*` keys and leases, then range revisions);
//! only then do the ops run, each seeing the writes of the ones before it. A failed check
//! leaves no write behind.
//!
//! Plugins come in through [`WriteHooks`]: computed compares are evaluated with the other
//! compares, and guards see the writes on the taken path after the checks, before the first
//! write, so a denial is one more error that leaves nothing behind.

// Counted for /metrics as etcd counts them ("seen by this member"); never read back.
use super::error::{Error, MvccError};
use super::key_range::{KeyRange, MAX_KEY_BYTES};
use super::read::ReadView;
use super::types::{
    Compare, CompareOperand, CompareResult, CompareTarget, Computed, ComputedValue,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest, PutResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use super::write::WriteTxn;
use crate::metrics::METRICS;

/// Answers whether a lease exists; the lease subsystem implements it.
pub trait LeaseLookup {
    fn lease_exists(&self, id: i64) -> bool;
}

/// No leases at all: every lease id is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeases;

impl LeaseLookup for NoLeases {
    fn lease_exists(&self, _id: i64) -> bool {
        false
    }
}

/// One write a guard is shown.
#[derive(Clone, Copy, Debug)]
pub enum WriteOp<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
}

/// Plugins in the write path (implemented by `plugin/`; the store knows only this trait).
/// Everything here runs in apply, so implementations must be deterministic.
/// What a computed compare's left side comes to (see [`WriteHooks::compute`]).
pub type ComputeResult = Result<Option<ComputedValue>, Error>;

pub trait WriteHooks {
    /// Called once per Put, DeleteRange or Txn with the writes that will run (for a txn, those
    /// on the taken path, in order), after etcd's checks and before the first write. An
    /// [`Error::Mvcc`] rejects the request; an [`Error::Fault`] (the plugin host failed)
    /// stops apply.
    fn guard(&mut self, view: &ReadView<'_>, writes: &[WriteOp<'_>]) -> Result<(), Error>;
    /// The left side of a computed compare: `Ok(None)` makes the compare false. Errors as
    /// for [`WriteHooks::guard`].
    fn compute(&mut self, view: &ReadView<'_>, computed: &Computed) -> ComputeResult;
}

/// No plugins.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl WriteHooks for NoHooks {
    fn guard(&mut self, _view: &ReadView<'_>, _writes: &[WriteOp<'_>]) -> Result<(), Error> {
        Ok(())
    }

    fn compute(&mut self, _view: &ReadView<'_>, computed: &Computed) -> ComputeResult {
        Err(MvccError::NoSuchCompare {
            binding: computed.binding.clone(),
        }
        .into())
    }
}

/// A standalone Put.
pub fn put(
    w: &mut WriteTxn<'_>,
    req: &PutRequest,
    leases: &dyn LeaseLookup,
    hooks: &mut dyn WriteHooks,
) -> Result<PutResponse, Error> {
    check_key_len(&req.key)?;
    if req.lease != 0 && !leases.lease_exists(req.lease) {
        return Err(MvccError::LeaseNotFound.into());
    }
    if (req.ignore_value || req.ignore_lease) && w.current().get(&req.key)?.is_none() {
        return Err(MvccError::KeyNotFound.into());
    }
    hooks.guard(&w.before(), &[WriteOp::Put(req)])?;
    apply_put(w, req)
}

/// A standalone DeleteRange.
pub fn delete_range(
    w: &mut WriteTxn<'_>,
    req: &DeleteRangeRequest,
    hooks: &mut dyn WriteHooks,
) -> Result<DeleteRangeResponse, Error> {
    hooks.guard(&w.before(), &[WriteOp::DeleteRange(req)])?;
    apply_delete(w, req)
}

/// A Txn (see the module docs for the order of work).
pub fn txn(
    w: &mut WriteTxn<'_>,
    req: &TxnRequest,
    leases: &dyn LeaseLookup,
    hooks: &mut dyn WriteHooks,
) -> Result<TxnResponse, Error> {
    METRICS.txns.inc();
    let before = w.before();
    let mut path = Vec::new();
    compare_path(&before, req, &mut path, hooks)?;
    check_path(&before, req, &path, leases)?;
    let mut writes = Vec::new();
    writes_on_path(req, &path, &mut 0, &mut writes);
    if !writes.is_empty() {
        hooks.guard(&before, &writes)?;
    }
    drop(before);
    let mut cursor = 0;
    let mut resp = apply_txn(w, req, &path, &mut cursor)?;
    resp.revision = if w.changed() {
        w.write_rev()
    } else {
        w.begin_rev
    };
    Ok(resp)
}

/// The writes a txn would run on `view`'s state (those on its taken path, in order), for a
/// proposer that evaluates guards ahead of apply (`plugin/vet.rs`). Apply decides again on
/// its own state; a txn with a computed compare fails here (`NoSuchCompare`).
pub fn planned_writes<'r>(
    view: &ReadView<'_>,
    req: &'r TxnRequest,
) -> Result<Vec<WriteOp<'r>>, Error> {
    let mut path = Vec::new();
    compare_path(view, req, &mut path, &mut NoHooks)?;
    let mut writes = Vec::new();
    writes_on_path(req, &path, &mut 0, &mut writes);
    Ok(writes)
}

/// A Txn with no write on any branch, served from a read view without going through Raft
/// (as etcd does). The caller checks that the txn is read-only.
pub fn read_only(view: &ReadView<'_>, req: &TxnRequest) -> Result<TxnResponse, Error> {
    METRICS.txns.inc();
    let mut path = Vec::new();
    compare_path(view, req, &mut path, &mut NoHooks)?;
    check_path(view, req, &path, &NoLeases)?;
    let mut resp = read_branch(view, req, &path, &mut 0)?;
    resp.revision = view.rev;
    Ok(resp)
}

fn read_branch(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> Result<TxnResponse, Error> {
    let succeeded = path[*cursor];
    *cursor += 1;
    let mut responses = Vec::new();
    for op in branch(req, succeeded) {
        responses.push(match op {
            RequestOp::Range(r) => {
                METRICS.ranges.inc();
                ResponseOp::Range(view.range(r)?)
            }
            RequestOp::Txn(nested) => ResponseOp::Txn(read_branch(view, nested, path, cursor)?),
            // Writes never reach here: callers send only txns without writes.
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => continue,
        });
    }
    Ok(TxnResponse {
        revision: 0,
        succeeded,
        responses,
    })
}

/// Evaluates all compares along the path the txn will take, depth first, in etcd's order.
fn compare_path(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &mut Vec<bool>,
    hooks: &mut dyn WriteHooks,
) -> Result<(), Error> {
    let mut succeeded = true;
    for cmp in &req.compare {
        let holds = match &cmp.operand {
            Some(CompareOperand::Computed(c)) if cmp.target == CompareTarget::Computed => {
                computed_holds(cmp.result, hooks.compute(view, c)?, &c.expected)
            }
            _ => compare(view, cmp)?,
        };
        if !holds {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for op in branch(req, succeeded) {
        if let RequestOp::Txn(nested) = op {
            compare_path(view, nested, path, hooks)?;
        }
    }
    Ok(())
}

/// A computed value against the expected one; a missing value or one of the other type never
/// holds.
fn computed_holds(
    result: CompareResult,
    got: Option<ComputedValue>,
    expected: &ComputedValue,
) -> bool {
    let ord = match (got, expected) {
        (Some(ComputedValue::Int(a)), ComputedValue::Int(b)) => a.cmp(b),
        (Some(ComputedValue::Bytes(a)), ComputedValue::Bytes(b)) => a.as_slice().cmp(b),
        _ => return false,
    };
    matches!(
        (result, ord),
        (CompareResult::Equal, std::cmp::Ordering::Equal)
            | (CompareResult::Greater, std::cmp::Ordering::Greater)
            | (CompareResult::Less, std::cmp::Ordering::Less)
    ) || (result == CompareResult::NotEqual && ord != std::cmp::Ordering::Equal)
}

/// The writes on the taken path, in the order they will run.
fn writes_on_path<'r>(
    req: &'r TxnRequest,
    path: &[bool],
    cursor: &mut usize,
    out: &mut Vec<WriteOp<'r>>,
) {
    let succeeded = path[*cursor];
    *cursor += 1;
    for op in branch(req, succeeded) {
        match op {
            RequestOp::Put(p) => out.push(WriteOp::Put(p)),
            RequestOp::DeleteRange(d) => out.push(WriteOp::DeleteRange(d)),
            RequestOp::Txn(nested) => writes_on_path(nested, path, cursor, out),
            RequestOp::Range(_) => {}
        }
    }
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// True when every key in the compare's range satisfies it (etcd's applyCompare).
pub fn compare(view: &ReadView<'_>, cmp: &Compare) -> Result<bool, Error> {
    let range = KeyRange::new(&cmp.key, &cmp.range_end);
    let kvs = match &range {
        KeyRange::Single(key) => view.get(key)?.into_iter().collect::<Vec<_>>(),
        KeyRange::Interval { .. } => {
            let mut out = Vec::new();
            for (key, _) in view.metas(&range)? {
                out.extend(view.get(&key)?);
            }
            out
        }
    };
    if kvs.is_empty() {
        // A missing key has no value to compare; its revisions, version and lease are 0.
        return Ok(cmp.target != CompareTarget::Value && compare_kv(cmp, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(cmp, kv)))
}

fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    // etcd reads the operand only when its kind matches the target; otherwise it is 0 (or an
    // empty value).
    let int = match (cmp.target, &cmp.operand) {
        (CompareTarget::Version, Some(CompareOperand::Version(v)))
        | (CompareTarget::Create, Some(CompareOperand::Create(v)))
        | (CompareTarget::Mod, Some(CompareOperand::Mod(v)))
        | (CompareTarget::Lease, Some(CompareOperand::Lease(v))) => *v,
        _ => 0,
    };
    let ord: Ordering = match cmp.target {
        CompareTarget::Value => {
            let rhs: &[u8] = match &cmp.operand {
                Some(CompareOperand::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(rhs)
        }
        CompareTarget::Version => kv.version.cmp(&int),
        CompareTarget::Create => kv.create_revision.cmp(&int),
        CompareTarget::Mod => kv.mod_revision.cmp(&int),
        CompareTarget::Lease => kv.lease.cmp(&int),
        // Computed compares never reach here (see `compare_path`); as a key compare they
        // compare nothing.
        CompareTarget::Computed => return false,
    };
    match cmp.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Checks the ops on the taken path before anything is written, in etcd's order (checkTxn):
/// every Put on the path first, then every Range, so the same error wins when several ops are
/// invalid.
fn check_path(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &[bool],
    leases: &dyn LeaseLookup,
) -> Result<(), Error> {
    check_ops(view, req, path, &mut 0, leases, CheckPass::Puts)?;
    check_ops(view, req, path, &mut 0, leases, CheckPass::Ranges)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckPass {
    Puts,
    Ranges,
}

fn check_ops(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
    leases: &dyn LeaseLookup,
    pass: CheckPass,
) -> Result<(), Error> {
    let succeeded = path[*cursor];
    *cursor += 1;
    for op in branch(req, succeeded) {
        match op {
            // Revision 0 means "current": never future, never compacted.
            RequestOp::Range(r) if pass == CheckPass::Ranges && r.revision != 0 => {
                if r.revision > view.rev {
                    return Err(MvccError::FutureRevision.into());
                }
                if r.revision < view.compact_rev {
                    return Err(MvccError::Compacted.into());
                }
            }
            RequestOp::Put(p) if pass == CheckPass::Puts => {
                check_key_len(&p.key)?;
                if (p.ignore_value || p.ignore_lease) && view.get(&p.key)?.is_none() {
                    return Err(MvccError::KeyNotFound.into());
                }
                if p.lease != 0 && !leases.lease_exists(p.lease) {
                    return Err(MvccError::LeaseNotFound.into());
                }
            }
            RequestOp::Txn(nested) => check_ops(view, nested, path, cursor, leases, pass)?,
            RequestOp::Range(_) | RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
        }
    }
    Ok(())
}

/// A key the store cannot hold (empty, or too long) is an error value, the same on every
/// member, not a panic in the storage engine.
fn check_key_len(key: &[u8]) -> Result<(), Error> {
    if key.is_empty() {
        return Err(MvccError::KeyNotProvided.into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(MvccError::KeyTooLong(key.len()).into());
    }
    Ok(())
}

fn apply_txn(
    w: &mut WriteTxn<'_>,
    req: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> Result<TxnResponse, Error> {
    let succeeded = path[*cursor];
    *cursor += 1;
    let mut responses = Vec::new();
    for op in branch(req, succeeded) {
        let resp = match op {
            RequestOp::Range(r) => {
                METRICS.ranges.inc();
                ResponseOp::Range(w.current().range(r)?)
            }
            RequestOp::Put(p) => ResponseOp::Put(apply_put(w, p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(apply_delete(w, d)?),
            // A nested txn's own header carries no revision, as in etcd.
            RequestOp::Txn(nested) => ResponseOp::Txn(apply_txn(w, nested, path, cursor)?),
        };
        responses.push(resp);
    }
    Ok(TxnResponse {
        revision: 0,
        succeeded,
        responses,
    })
}

fn apply_put(w: &mut WriteTxn<'_>, req: &PutRequest) -> Result<PutResponse, Error> {
    let existing = if req.ignore_value || req.ignore_lease {
        w.current().get(&req.key)?
    } else {
        None
    };
    let value = match (&existing, req.ignore_value) {
        (Some(kv), true) => kv.value.clone(),
        _ => req.value.clone(),
    };
    let lease = match (&existing, req.ignore_lease) {
        (Some(kv), true) => kv.lease,
        _ => req.lease,
    };
    let prev = w.put(&req.key, value, lease, req.prev_kv)?;
    METRICS.puts.inc();
    Ok(PutResponse {
        revision: w.write_rev(),
        prev_kv: if req.prev_kv { prev } else { None },
    })
}

fn apply_delete(
    w: &mut WriteTxn<'_>,
    req: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, Error> {
    let deleted = w.delete_range(&KeyRange::new(&req.key, &req.range_end))?;
    METRICS.deletes.inc();
    let revision = if w.changed() {
        w.write_rev()
    } else {
        w.begin_rev
    };
    Ok(DeleteRangeResponse {
        revision,
        deleted: deleted.len() as i64,
        prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
    })
}
