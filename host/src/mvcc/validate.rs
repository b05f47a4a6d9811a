//! Request checks that need no state: etcd runs them in its gRPC layer, before a request is
//! proposed, and so does Cairn (`api/` calls these before `raft.client_write`).

use std::collections::BTreeSet;

use thiserror::Error;

use super::key_range::MAX_KEY_BYTES;
use super::types::{PutRequest, RangeRequest, RequestOp, TxnRequest};

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InvalidRequest {
    #[error("key is not provided")]
    EmptyKey,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// Cairn's own limit (etcd has none below the request size): see [`MAX_KEY_BYTES`].
    #[error("key is too long: {0} bytes, at most {MAX_KEY_BYTES} can be stored")]
    KeyTooLong(usize),
}

pub fn check_range(req: &RangeRequest) -> Result<(), InvalidRequest> {
    if req.key.is_empty() {
        return Err(InvalidRequest::EmptyKey);
    }
    Ok(())
}

pub fn check_put(req: &PutRequest) -> Result<(), InvalidRequest> {
    if req.key.is_empty() {
        return Err(InvalidRequest::EmptyKey);
    }
    if req.key.len() > MAX_KEY_BYTES {
        return Err(InvalidRequest::KeyTooLong(req.key.len()));
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(InvalidRequest::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(InvalidRequest::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(key: &[u8]) -> Result<(), InvalidRequest> {
    if key.is_empty() {
        return Err(InvalidRequest::EmptyKey);
    }
    Ok(())
}

/// etcd's checkTxnRequest: op counts (the largest of compares, success and failure), empty
/// keys, then the duplicate-key rule on each branch.
pub fn check_txn(req: &TxnRequest, max_txn_ops: usize) -> Result<(), InvalidRequest> {
    check_txn_shape(req, max_txn_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_shape(req: &TxnRequest, max_txn_ops: usize) -> Result<(), InvalidRequest> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_txn_ops {
        return Err(InvalidRequest::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(InvalidRequest::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_delete_range(&d.key)?,
            RequestOp::Txn(t) => check_txn_shape(t, max_txn_ops - ops)?,
        }
    }
    Ok(())
}

/// A delete's interval as etcd's duplicate check sees it: `[key, range_end)` compared as plain
/// byte strings. etcd applies no `"\0"` rule here, so a from-key delete (`range_end = "\0"`)
/// conflicts with no put; Cairn keeps that quirk so the same txns are accepted.
#[derive(Clone, Debug)]
struct DeleteInterval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl DeleteInterval {
    fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

/// etcd's checkIntervals: within one branch a key may be put once and may not be put when a
/// delete of the same branch (or of a nested txn) covers it. The two branches of a nested txn
/// may put the same key, since only one of them runs.
fn check_intervals(
    ops: &[RequestOp],
) -> Result<(BTreeSet<Vec<u8>>, Vec<DeleteInterval>), InvalidRequest> {
    let mut dels: Vec<DeleteInterval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(DeleteInterval {
                start: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let covered = |dels: &[DeleteInterval], key: &[u8]| dels.iter().any(|d| d.contains(key));
    let mut puts = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(nested) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&nested.success)?;
        let (puts_else, dels_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || covered(&dels, key) {
                return Err(InvalidRequest::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            if (puts.contains(key) && !puts_then.contains(key)) || covered(&dels, key) {
                return Err(InvalidRequest::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || covered(&dels, &p.key) {
            return Err(InvalidRequest::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::types::DeleteRangeRequest;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        })
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_key_rules_match_etcd() {
        // Proves the duplicate-key rule: same branch conflicts, opposite nested branches don't.
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128),
            Err(InvalidRequest::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![]), 128),
            Err(InvalidRequest::DuplicateKey)
        );
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![del("a", "\0"), put("b")], vec![]), 128),
            Ok(())
        );
        let nested = RequestOp::Txn(txn(vec![put("x")], vec![put("x")]));
        assert_eq!(check_txn(&txn(vec![nested.clone()], vec![]), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![nested, put("x")], vec![]), 128),
            Err(InvalidRequest::DuplicateKey)
        );
    }

    #[test]
    fn too_many_ops_counts_the_largest_list() {
        // Proves --max-txn-ops applies to compares, success and failure separately.
        let ops: Vec<_> = (0..3).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(
            check_txn(&txn(ops.clone(), vec![]), 2),
            Err(InvalidRequest::TooManyOps)
        );
        assert_eq!(check_txn(&txn(ops, vec![]), 3), Ok(()));
    }
}
