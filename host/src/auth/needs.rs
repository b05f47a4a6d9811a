//! What each KV request needs of its caller, as etcd decides it: READ over a range's keys,
//! WRITE over a put's key or a delete's range (and READ too when the client asks for the
//! previous values), and for a txn the needs of every compare and of every op in both
//! branches, nested txns included, whichever branch runs.

use super::AuthError;
use super::perms::{Access, UserPermissions};
use crate::mvcc::{PutRequest, RangeRequest, RequestOp, TxnRequest, WriteRequest};

/// One access over etcd's key range (`key` alone when `range_end` is empty). A put's also
/// carries what it writes, which static roles ignore and policy hooks are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need<'a> {
    pub access: Access,
    pub key: &'a [u8],
    pub range_end: &'a [u8],
    /// The value a put writes (`None` for anything else, and for a put that keeps the value).
    pub value: Option<&'a [u8]>,
    /// The lease a put attaches (0: none).
    pub lease: i64,
}

impl<'a> Need<'a> {
    pub fn read(key: &'a [u8], range_end: &'a [u8]) -> Need<'a> {
        Need {
            access: Access::Read,
            key,
            range_end,
            value: None,
            lease: 0,
        }
    }

    pub fn write(key: &'a [u8], range_end: &'a [u8]) -> Need<'a> {
        Need {
            access: Access::Write,
            key,
            range_end,
            value: None,
            lease: 0,
        }
    }

    fn put(put: &'a PutRequest) -> Need<'a> {
        Need {
            value: (!put.ignore_value).then_some(put.value.as_slice()),
            lease: put.lease,
            ..Need::write(&put.key, &[])
        }
    }
}

impl UserPermissions {
    /// etcd's `permission denied` unless every need is allowed.
    pub fn check<'a>(&self, needs: impl IntoIterator<Item = Need<'a>>) -> Result<(), AuthError> {
        if self.is_root() {
            return Ok(());
        }
        for need in needs {
            if !self.allows(need.access, need.key, need.range_end) {
                return Err(AuthError::PermissionDenied);
            }
        }
        Ok(())
    }
}

/// What a Range needs.
pub fn of_range(req: &RangeRequest) -> Need<'_> {
    Need::read(&req.key, &req.range_end)
}

/// What a KV write needs; `None` for a compaction, which is not a matter of key permissions
/// (see `state_machine.rs`, which decides it).
pub fn of_write(req: &WriteRequest) -> Option<Vec<Need<'_>>> {
    let mut needs = Vec::new();
    match req {
        WriteRequest::Put(put) => of_op_put(put, &mut needs),
        WriteRequest::DeleteRange(del) => {
            of_op_delete(&del.key, &del.range_end, del.prev_kv, &mut needs)
        }
        WriteRequest::Txn(txn) => of_txn(txn, &mut needs),
        WriteRequest::Compact(_) => return None,
    }
    Some(needs)
}

/// What a txn needs: its compares and both branches, nested txns walked with an explicit
/// stack (a txn may nest up to `--max-txn-ops` deep).
pub fn of_txn<'a>(txn: &'a TxnRequest, needs: &mut Vec<Need<'a>>) {
    let mut stack = vec![txn];
    while let Some(txn) = stack.pop() {
        for compare in &txn.compare {
            needs.push(Need::read(&compare.key, &compare.range_end));
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(range) => needs.push(of_range(range)),
                RequestOp::Put(put) => of_op_put(put, needs),
                RequestOp::DeleteRange(del) => {
                    of_op_delete(&del.key, &del.range_end, del.prev_kv, needs)
                }
                RequestOp::Txn(nested) => stack.push(nested),
            }
        }
    }
}

fn of_op_put<'a>(put: &'a PutRequest, needs: &mut Vec<Need<'a>>) {
    needs.push(Need::put(put));
    if put.prev_kv {
        needs.push(Need::read(&put.key, &[]));
    }
}

fn of_op_delete<'a>(key: &'a [u8], range_end: &'a [u8], prev_kv: bool, needs: &mut Vec<Need<'a>>) {
    needs.push(Need::write(key, range_end));
    if prev_kv {
        needs.push(Need::read(key, range_end));
    }
}

/// The keys already held by the leases `req` attaches (see [`leases_of`]), as `lease_keys`
/// lists each lease's keys.
pub fn leased_keys<E>(
    req: &WriteRequest,
    mut lease_keys: impl FnMut(i64) -> Result<Vec<Vec<u8>>, E>,
) -> Result<Vec<Vec<u8>>, E> {
    let mut keys = Vec::new();
    for id in leases_of(req) {
        keys.extend(lease_keys(id)?);
    }
    Ok(keys)
}

/// The leases a write attaches to keys (its puts', nested txns included, both branches): a
/// caller must be allowed to write every key such a lease already holds.
pub fn leases_of(req: &WriteRequest) -> Vec<i64> {
    let mut leases = Vec::new();
    let mut stack = Vec::new();
    match req {
        WriteRequest::Put(put) => leases.push(put.lease),
        WriteRequest::Txn(txn) => stack.push(txn),
        WriteRequest::DeleteRange(_) | WriteRequest::Compact(_) => {}
    }
    while let Some(txn) = stack.pop() {
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Put(put) => leases.push(put.lease),
                RequestOp::Txn(nested) => stack.push(nested),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
            }
        }
    }
    leases.retain(|&id| id != 0);
    leases.sort_unstable();
    leases.dedup();
    leases
}
