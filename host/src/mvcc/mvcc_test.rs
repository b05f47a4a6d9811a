//! Table-driven tests of the MVCC core against a real fjall database in a temporary directory.
//!
//! Each test is a list of [`Step`]s: a write applied through an [`ApplyBatch`] (then committed,
//! as the state machine does) or a read through [`Mvcc::read_view`], each with the exact
//! response or etcd error expected. The expectations follow etcd's observable behaviour.

use std::collections::BTreeSet;

use fjall::Readable;
use tempfile::TempDir;

use super::encoding::{self, INDEX_PUT, Rev, StoredEvent};
use super::*;
use crate::storage::Storage;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A fresh store on its own database.
struct Db {
    _dir: TempDir,
    storage: Storage,
    /// Lease ids that exist; empty means writes are applied with [`NoLeases`].
    leases: BTreeSet<i64>,
}

struct Leases<'a>(&'a BTreeSet<i64>);

impl LeaseLookup for Leases<'_> {
    fn lease_exists(&self, id: i64) -> bool {
        self.0.contains(&id)
    }
}

/// One step of a table: an operation and what it must return.
#[derive(Debug)]
enum Step {
    /// Apply a write; its outcome must be exactly this.
    Write(WriteRequest, Result<WriteResponse, MvccError>),
    /// Read; the outcome must be exactly this.
    Read(RangeRequest, Result<RangeResponse, MvccError>),
    /// Apply a write that only sets the scene; it must succeed.
    Setup(WriteRequest),
}

use Step::{Read, Setup, Write};

impl Db {
    fn new() -> Self {
        Self::with_leases(&[])
    }

    fn with_leases(ids: &[i64]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open storage");
        Db {
            _dir: dir,
            storage,
            leases: ids.iter().copied().collect(),
        }
    }

    /// Applies `req` and commits the batch, as the state machine does for one log entry.
    fn apply(&self, req: &WriteRequest) -> Applied {
        let revs = Mvcc::revisions(&self.storage).expect("revisions");
        let mut batch = ApplyBatch::new(&self.storage, revs);
        let applied = if self.leases.is_empty() {
            batch.apply(req, &NoLeases)
        } else {
            batch.apply(req, &Leases(&self.leases))
        }
        .expect("no storage error");
        batch.set_position(&[]);
        batch.commit().expect("commit");
        applied
    }

    /// Applies `req`. A txn without writes is also served the way the API serves it, from a
    /// read view outside the log, and both answers must agree.
    fn write(&self, req: &WriteRequest) -> Result<WriteResponse, MvccError> {
        let served = match req {
            WriteRequest::Txn(t) if !has_writes(t) => Some(self.read_txn(t)),
            _ => None,
        };
        let applied = self.apply(req);
        if let Some(served) = served {
            assert_eq!(
                served.map(WriteResponse::Txn),
                applied,
                "read-only txn served vs applied: {req:?}"
            );
        }
        applied
    }

    fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let view = Mvcc::read_view(&self.storage).expect("read view");
        match txn::read_only(&view, req) {
            Ok(resp) => Ok(resp),
            Err(Error::Mvcc(e)) => Err(e),
            Err(Error::Fault(e)) => panic!("storage error: {e}"),
        }
    }

    fn read(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let view = Mvcc::read_view(&self.storage).expect("read view");
        match view.range(req) {
            Ok(resp) => Ok(resp),
            Err(Error::Mvcc(e)) => Err(e),
            Err(Error::Fault(e)) => panic!("storage error: {e}"),
        }
    }

    fn rev(&self) -> Revision {
        Mvcc::read_view(&self.storage).expect("read view").rev
    }

    fn run(&self, steps: &[Step]) {
        for (i, step) in steps.iter().enumerate() {
            match step {
                Write(req, want) => {
                    assert_eq!(&self.write(req), want, "step {i}: {req:?}");
                }
                Read(req, want) => assert_eq!(&self.read(req), want, "step {i}: {req:?}"),
                Setup(req) => {
                    let got = self.write(req);
                    assert!(got.is_ok(), "step {i} (setup): {req:?} failed: {got:?}");
                }
            }
        }
    }

    /// Every history entry (`kv_revs`), in revision order.
    fn history(&self) -> Vec<(Rev, StoredEvent)> {
        let snap = self.storage.db.snapshot();
        snap.iter(&self.storage.kv_revs)
            .map(|g| {
                let (k, v) = g.into_inner().expect("read kv_revs");
                (
                    Rev::decode(&k).expect("rev"),
                    encoding::decode(&v).expect("event"),
                )
            })
            .collect()
    }

    /// Every key-index entry (`kv_index`): user key, revision, true for a put.
    fn index(&self) -> Vec<(Vec<u8>, Rev, bool)> {
        let snap = self.storage.db.snapshot();
        snap.iter(&self.storage.kv_index)
            .map(|g| {
                let (k, v) = g.into_inner().expect("read kv_index");
                let (key, rev) = encoding::decode_index_key(&k).expect("index key");
                (key, rev, v.first() == Some(&INDEX_PUT))
            })
            .collect()
    }
}

/// True when some branch of `t`, at any depth, puts or deletes.
fn has_writes(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        RequestOp::Range(_) => false,
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
        RequestOp::Txn(nested) => has_writes(nested),
    })
}

// --- request builders ---

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn put_req(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn put(k: &str, v: &str) -> WriteRequest {
    WriteRequest::Put(put_req(k, v))
}

fn put_with(req: PutRequest) -> WriteRequest {
    WriteRequest::Put(req)
}

fn del_req(k: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(k),
        range_end: b(end),
        prev_kv: false,
    }
}

fn del(k: &str, end: &str) -> WriteRequest {
    WriteRequest::DeleteRange(del_req(k, end))
}

fn txn_req(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> WriteRequest {
    WriteRequest::Txn(txn_req(compare, success, failure))
}

fn compact(rev: Revision) -> WriteRequest {
    WriteRequest::Compact(CompactRequest {
        revision: rev,
        physical: false,
    })
}

fn get(k: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        ..Default::default()
    }
}

fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(k),
        range_end: b(end),
        ..Default::default()
    }
}

/// Every key.
fn all() -> RangeRequest {
    range("\0", "\0")
}

fn at(req: RangeRequest, revision: Revision) -> RangeRequest {
    RangeRequest { revision, ..req }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(put_req(k, v))
}

fn op_del(k: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(del_req(k, end))
}

fn op_range(req: RangeRequest) -> RequestOp {
    RequestOp::Range(req)
}

fn op_txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp::Txn(txn_req(compare, success, failure))
}

/// A compare whose target is the operand's kind.
fn cmp(k: &str, result: CompareResult, operand: CompareOperand) -> Compare {
    let target = match operand {
        CompareOperand::Version(_) => CompareTarget::Version,
        CompareOperand::Create(_) => CompareTarget::Create,
        CompareOperand::Mod(_) => CompareTarget::Mod,
        CompareOperand::Value(_) => CompareTarget::Value,
        CompareOperand::Lease(_) => CompareTarget::Lease,
        CompareOperand::Computed(_) => CompareTarget::Computed,
    };
    Compare {
        result,
        target,
        key: b(k),
        range_end: Vec::new(),
        operand: Some(operand),
    }
}

fn cmp_range(k: &str, end: &str, result: CompareResult, operand: CompareOperand) -> Compare {
    Compare {
        range_end: b(end),
        ..cmp(k, result, operand)
    }
}

fn value(v: &str) -> CompareOperand {
    CompareOperand::Value(b(v))
}

// --- response builders ---

fn kv(k: &str, v: &str, create: Revision, modr: Revision, version: i64) -> KeyValue {
    KeyValue {
        key: b(k),
        value: b(v),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

fn leased(kv: KeyValue, lease: i64) -> KeyValue {
    KeyValue { lease, ..kv }
}

fn rr(revision: Revision, kvs: Vec<KeyValue>) -> RangeResponse {
    let count = kvs.len() as i64;
    RangeResponse {
        revision,
        kvs,
        more: false,
        count,
    }
}

fn found(revision: Revision, kvs: Vec<KeyValue>) -> Result<RangeResponse, MvccError> {
    Ok(rr(revision, kvs))
}

fn put_resp(revision: Revision) -> PutResponse {
    PutResponse {
        revision,
        prev_kv: None,
    }
}

fn put_ok(revision: Revision) -> Result<WriteResponse, MvccError> {
    Ok(WriteResponse::Put(put_resp(revision)))
}

fn del_resp(revision: Revision, deleted: i64) -> DeleteRangeResponse {
    DeleteRangeResponse {
        revision,
        deleted,
        prev_kvs: Vec::new(),
    }
}

fn del_ok(revision: Revision, deleted: i64) -> Result<WriteResponse, MvccError> {
    Ok(WriteResponse::DeleteRange(del_resp(revision, deleted)))
}

fn txn_resp(revision: Revision, succeeded: bool, responses: Vec<ResponseOp>) -> TxnResponse {
    TxnResponse {
        revision,
        succeeded,
        responses,
    }
}

fn txn_ok(
    revision: Revision,
    succeeded: bool,
    responses: Vec<ResponseOp>,
) -> Result<WriteResponse, MvccError> {
    Ok(WriteResponse::Txn(txn_resp(revision, succeeded, responses)))
}

fn compact_ok(revision: Revision) -> Result<WriteResponse, MvccError> {
    Ok(WriteResponse::Compact(CompactResponse { revision }))
}

/// The keys of a range response, concatenated (keys in these tests are one letter).
fn keys_of(resp: &RangeResponse) -> String {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Revisions, versions, generations
// ---------------------------------------------------------------------------------------------

#[test]
fn revisions_start_at_one_and_each_put_adds_one() {
    // Proves the store starts at revision 1, the first put gets 2, and versions count puts.
    let db = Db::new();
    db.run(&[
        Read(all(), found(1, vec![])),
        Read(get("a"), found(1, vec![])),
        Write(put("a", "1"), put_ok(2)),
        Write(put("b", "1"), put_ok(3)),
        Write(put("a", "2"), put_ok(4)),
        Read(get("a"), found(4, vec![kv("a", "2", 2, 4, 2)])),
        Read(
            all(),
            found(4, vec![kv("a", "2", 2, 4, 2), kv("b", "1", 3, 3, 1)]),
        ),
        // A put of an identical value is still a new version and a new revision.
        Write(put("b", "1"), put_ok(5)),
        Read(get("b"), found(5, vec![kv("b", "1", 3, 5, 2)])),
    ]);
}

#[test]
fn delete_ends_generation_and_reput_starts_a_new_one() {
    // Proves a delete is a tombstone revision and a re-put restarts version and create_revision.
    let db = Db::new();
    let del_prev = DeleteRangeRequest {
        prev_kv: true,
        ..del_req("a", "")
    };
    db.run(&[
        Setup(put("a", "1")), // 2
        Setup(put("a", "2")), // 3
        Write(
            WriteRequest::DeleteRange(del_prev),
            Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
                revision: 4,
                deleted: 1,
                prev_kvs: vec![kv("a", "2", 2, 3, 2)],
            })),
        ),
        Read(get("a"), found(4, vec![])),
        Read(all(), found(4, vec![])),
        Write(put("a", "3"), put_ok(5)),
        Read(get("a"), found(5, vec![kv("a", "3", 5, 5, 1)])),
        // History still has the old generation and the gap the tombstone left.
        Read(at(get("a"), 1), found(5, vec![])),
        Read(at(get("a"), 2), found(5, vec![kv("a", "1", 2, 2, 1)])),
        Read(at(get("a"), 3), found(5, vec![kv("a", "2", 2, 3, 2)])),
        Read(at(get("a"), 4), found(5, vec![])),
        Read(at(get("a"), 5), found(5, vec![kv("a", "3", 5, 5, 1)])),
    ]);
}

#[test]
fn delete_that_deletes_nothing_keeps_the_revision() {
    // Proves a DeleteRange that removes no key takes no revision and answers the current one.
    let db = Db::new();
    db.run(&[
        Write(del("a", ""), del_ok(1, 0)),
        Setup(put("a", "1")), // 2
        Write(del("b", ""), del_ok(2, 0)),
        Write(del("x", "z"), del_ok(2, 0)),
        Write(del("b", "a"), del_ok(2, 0)), // inverted range: empty
        Write(del("a", "a"), del_ok(2, 0)), // empty interval
        Write(put("b", "1"), put_ok(3)),
        Write(del("a", "c"), del_ok(4, 2)),
        Read(all(), found(4, vec![])),
        Write(del("a", "\0"), del_ok(4, 0)),
        Write(put("c", "1"), put_ok(5)),
    ]);
}

#[test]
fn delete_range_forms_and_prev_kvs() {
    // Proves prefix and from-key deletes remove exactly their keys, all at one revision.
    let db = Db::new();
    let prev = |k: &str, end: &str| DeleteRangeRequest {
        prev_kv: true,
        ..del_req(k, end)
    };
    db.run(&[
        Setup(put("a", "1")),   // 2
        Setup(put("b/1", "1")), // 3
        Setup(put("b/2", "1")), // 4
        Setup(put("c", "1")),   // 5
        Setup(put("d", "1")),   // 6
        Write(
            WriteRequest::DeleteRange(prev("b/", "b0")),
            Ok(WriteResponse::DeleteRange(DeleteRangeResponse {
                revision: 7,
                deleted: 2,
                prev_kvs: vec![kv("b/1", "1", 3, 3, 1), kv("b/2", "1", 4, 4, 1)],
            })),
        ),
        Write(del("c", "\0"), del_ok(8, 2)),
        Read(all(), found(8, vec![kv("a", "1", 2, 2, 1)])),
        Read(
            at(all(), 6),
            found(
                8,
                vec![
                    kv("a", "1", 2, 2, 1),
                    kv("b/1", "1", 3, 3, 1),
                    kv("b/2", "1", 4, 4, 1),
                    kv("c", "1", 5, 5, 1),
                    kv("d", "1", 6, 6, 1),
                ],
            ),
        ),
        Read(
            at(all(), 7),
            found(
                8,
                vec![
                    kv("a", "1", 2, 2, 1),
                    kv("c", "1", 5, 5, 1),
                    kv("d", "1", 6, 6, 1),
                ],
            ),
        ),
    ]);
}

#[test]
fn put_prev_kv_is_returned_only_when_asked() {
    // Proves prev_kv carries the replaced version on request, and nothing for a new key.
    let db = Db::new();
    let with_prev = |k: &str, v: &str| {
        put_with(PutRequest {
            prev_kv: true,
            ..put_req(k, v)
        })
    };
    db.run(&[
        Write(with_prev("a", "1"), put_ok(2)),
        Write(
            with_prev("a", "2"),
            Ok(WriteResponse::Put(PutResponse {
                revision: 3,
                prev_kv: Some(kv("a", "1", 2, 2, 1)),
            })),
        ),
        Write(put("a", "3"), put_ok(4)),
        Setup(del("a", "")), // 5
        Write(with_prev("a", "4"), put_ok(6)),
    ]);
}

#[test]
fn ignore_value_and_ignore_lease() {
    // Proves ignore_value/ignore_lease keep the old value/lease, and a missing key is KeyNotFound.
    let db = Db::with_leases(&[7, 8]);
    let req = |k: &str, v: &str, lease: i64, ignore_value: bool, ignore_lease: bool| {
        put_with(PutRequest {
            lease,
            ignore_value,
            ignore_lease,
            ..put_req(k, v)
        })
    };
    db.run(&[
        Write(req("a", "", 0, true, false), Err(MvccError::KeyNotFound)),
        Write(req("a", "x", 0, false, true), Err(MvccError::KeyNotFound)),
        Write(req("a", "", 0, true, true), Err(MvccError::KeyNotFound)),
        Read(all(), found(1, vec![])), // the failures took no revision
        Write(req("a", "1", 7, false, false), put_ok(2)),
        Read(get("a"), found(2, vec![leased(kv("a", "1", 2, 2, 1), 7)])),
        Write(req("a", "", 8, true, false), put_ok(3)),
        Read(get("a"), found(3, vec![leased(kv("a", "1", 2, 3, 2), 8)])),
        Write(req("a", "2", 0, false, true), put_ok(4)),
        Read(get("a"), found(4, vec![leased(kv("a", "2", 2, 4, 3), 8)])),
        Write(req("a", "", 0, true, true), put_ok(5)),
        Read(get("a"), found(5, vec![leased(kv("a", "2", 2, 5, 4), 8)])),
        // A plain put detaches the key from its lease.
        Write(put("a", "3"), put_ok(6)),
        Read(get("a"), found(6, vec![kv("a", "3", 2, 6, 5)])),
        Write(
            req("a", "4", 9, false, false),
            Err(MvccError::LeaseNotFound),
        ),
        Setup(del("a", "")), // 7
        Write(req("a", "", 0, true, false), Err(MvccError::KeyNotFound)),
        Read(
            at(get("a"), 5),
            found(7, vec![leased(kv("a", "2", 2, 5, 4), 8)]),
        ),
    ]);
}

#[test]
fn put_with_unknown_lease_is_rejected_without_a_revision() {
    // Proves a put naming a lease that does not exist fails with LeaseNotFound and writes nothing.
    let db = Db::new();
    let leased_put = |k: &str| {
        put_with(PutRequest {
            lease: 42,
            ..put_req(k, "v")
        })
    };
    db.run(&[
        Write(leased_put("a"), Err(MvccError::LeaseNotFound)),
        Read(all(), found(1, vec![])),
        Setup(put("a", "1")), // 2
        Write(leased_put("a"), Err(MvccError::LeaseNotFound)),
        Read(get("a"), found(2, vec![kv("a", "1", 2, 2, 1)])),
        // Inside a txn too, and the txn's other ops are not applied.
        Write(
            txn(
                vec![],
                vec![
                    op_put("b", "1"),
                    RequestOp::Put(PutRequest {
                        lease: 42,
                        ..put_req("c", "1")
                    }),
                ],
                vec![],
            ),
            Err(MvccError::LeaseNotFound),
        ),
        Read(all(), found(2, vec![kv("a", "1", 2, 2, 1)])),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

#[test]
fn reads_at_past_revisions() {
    // Proves a read at revision r sees exactly the state after r, with the current header revision.
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")),                                                // 2
        Setup(put("b", "1")),                                                // 3
        Setup(put("a", "2")),                                                // 4
        Setup(del("b", "")),                                                 // 5
        Setup(put("c", "1")),                                                // 6
        Setup(txn(vec![], vec![op_put("b", "2"), op_del("a", "")], vec![])), // 7
    ]);
    let table: Vec<(Revision, Vec<KeyValue>)> = vec![
        (1, vec![]),
        (2, vec![kv("a", "1", 2, 2, 1)]),
        (3, vec![kv("a", "1", 2, 2, 1), kv("b", "1", 3, 3, 1)]),
        (4, vec![kv("a", "2", 2, 4, 2), kv("b", "1", 3, 3, 1)]),
        (5, vec![kv("a", "2", 2, 4, 2)]),
        (6, vec![kv("a", "2", 2, 4, 2), kv("c", "1", 6, 6, 1)]),
        (7, vec![kv("b", "2", 7, 7, 1), kv("c", "1", 6, 6, 1)]),
        // 0 and negative mean "current".
        (0, vec![kv("b", "2", 7, 7, 1), kv("c", "1", 6, 6, 1)]),
        (-3, vec![kv("b", "2", 7, 7, 1), kv("c", "1", 6, 6, 1)]),
    ];
    for (rev, kvs) in table {
        assert_eq!(db.read(&at(all(), rev)), found(7, kvs), "all at {rev}");
    }
    db.run(&[
        Read(at(all(), 8), Err(MvccError::FutureRevision)),
        Read(at(get("zz"), 8), Err(MvccError::FutureRevision)),
        Read(
            at(range("a", "b"), 4),
            found(7, vec![kv("a", "2", 2, 4, 2)]),
        ),
        Read(at(get("b"), 5), found(7, vec![])),
    ]);
}

#[test]
fn range_forms_single_prefix_from_key_and_all() {
    // Proves the key-range forms: single key, [key, end), from-key "\0", all keys, empty ranges.
    let db = Db::new();
    for k in ["a", "a\0", "ab", "b", "b/1", "b/2", "c"] {
        db.write(&put(k, "v")).expect("put");
    }
    let table: Vec<(RangeRequest, Vec<&str>)> = vec![
        (get("a"), vec!["a"]),
        (get("a\0"), vec!["a\0"]),
        (get("zz"), vec![]),
        (range("a", "b"), vec!["a", "a\0", "ab"]),
        (range("a\0", "ab"), vec!["a\0"]),
        (range("b/", "b0"), vec!["b/1", "b/2"]),
        (range("b", "\0"), vec!["b", "b/1", "b/2", "c"]),
        (
            range("\0", "\0"),
            vec!["a", "a\0", "ab", "b", "b/1", "b/2", "c"],
        ),
        (range("c", "a"), vec![]),
        (range("a", "a"), vec![]),
        (range("d", "\0"), vec![]),
    ];
    for (req, keys) in table {
        let got = db.read(&req).expect("read");
        let got_keys: Vec<Vec<u8>> = got.kvs.iter().map(|kv| kv.key.clone()).collect();
        let want: Vec<Vec<u8>> = keys.iter().map(|k| b(k)).collect();
        assert_eq!(got_keys, want, "{req:?}");
        assert_eq!(got.count, want.len() as i64, "{req:?}");
        // The same range read through history (at a revision below the current one).
        let past = db.read(&at(req.clone(), 7)).expect("read past");
        let past_keys: Vec<Vec<u8>> = past.kvs.iter().map(|kv| kv.key.clone()).collect();
        let want_past: Vec<Vec<u8>> = want
            .iter()
            .filter(|k| k.as_slice() != b"c")
            .cloned()
            .collect();
        assert_eq!(past_keys, want_past, "{req:?} at 7");
    }
}

#[test]
fn limit_more_count_keys_only_count_only() {
    // Proves limit truncates, `more` says so, `count` ignores limit, keys/count_only drop data.
    let db = Db::new();
    for k in ["a", "b", "c", "d", "e"] {
        db.write(&put(k, "val")).expect("put"); // revisions 2..=6
    }
    let kvs: Vec<KeyValue> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, k)| kv(k, "val", i as i64 + 2, i as i64 + 2, 1))
        .collect();
    let limit = |n: i64| RangeRequest { limit: n, ..all() };
    let resp = |kvs: &[KeyValue], more: bool, count: i64| {
        Ok(RangeResponse {
            revision: 6,
            kvs: kvs.to_vec(),
            more,
            count,
        })
    };
    let no_values = |kvs: &[KeyValue]| -> Vec<KeyValue> {
        kvs.iter()
            .map(|kv| KeyValue {
                value: Vec::new(),
                ..kv.clone()
            })
            .collect()
    };
    db.run(&[
        Read(limit(2), resp(&kvs[..2], true, 5)),
        Read(limit(4), resp(&kvs[..4], true, 5)),
        Read(limit(5), resp(&kvs, false, 5)),
        Read(limit(6), resp(&kvs, false, 5)),
        Read(limit(0), resp(&kvs, false, 5)),
        Read(limit(-1), resp(&kvs, false, 5)),
        Read(
            RangeRequest {
                count_only: true,
                ..all()
            },
            resp(&[], false, 5),
        ),
        Read(
            RangeRequest {
                count_only: true,
                limit: 2,
                ..all()
            },
            resp(&[], false, 5),
        ),
        Read(
            RangeRequest {
                keys_only: true,
                ..all()
            },
            resp(&no_values(&kvs), false, 5),
        ),
        Read(
            RangeRequest {
                keys_only: true,
                limit: 1,
                ..all()
            },
            resp(&no_values(&kvs[..1]), true, 5),
        ),
        Read(
            RangeRequest {
                limit: 1,
                ..range("b", "d")
            },
            resp(&kvs[1..2], true, 2),
        ),
        // The same through history.
        Read(at(limit(2), 4), resp(&kvs[..2], true, 3)),
        Read(at(limit(3), 4), resp(&kvs[..3], false, 3)),
        Read(
            at(
                RangeRequest {
                    count_only: true,
                    ..all()
                },
                3,
            ),
            resp(&[], false, 2),
        ),
        Read(
            at(
                RangeRequest {
                    keys_only: true,
                    limit: 1,
                    ..all()
                },
                3,
            ),
            resp(&no_values(&kvs[..1]), true, 2),
        ),
    ]);
}

#[test]
fn revision_filters_apply_before_limit_and_do_not_change_count() {
    // Proves min/max mod/create filters prune before truncation; `count` counts the whole range.
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")), // 2
        Setup(put("b", "1")), // 3
        Setup(put("c", "1")), // 4
        Setup(put("a", "2")), // 5: a = create 2, mod 5
        Setup(put("d", "1")), // 6
    ]);
    let a = kv("a", "2", 2, 5, 2);
    let bb = kv("b", "1", 3, 3, 1);
    let c = kv("c", "1", 4, 4, 1);
    let d = kv("d", "1", 6, 6, 1);
    let resp = |kvs: Vec<KeyValue>, more: bool| {
        Ok(RangeResponse {
            revision: 6,
            kvs,
            more,
            count: 4,
        })
    };
    let f = |min_mod, max_mod, min_create, max_create, limit| RangeRequest {
        min_mod_revision: min_mod,
        max_mod_revision: max_mod,
        min_create_revision: min_create,
        max_create_revision: max_create,
        limit,
        ..all()
    };
    db.run(&[
        Read(
            f(4, 0, 0, 0, 0),
            resp(vec![a.clone(), c.clone(), d.clone()], false),
        ),
        Read(f(0, 4, 0, 0, 0), resp(vec![bb.clone(), c.clone()], false)),
        Read(
            f(0, 0, 3, 0, 0),
            resp(vec![bb.clone(), c.clone(), d.clone()], false),
        ),
        Read(f(0, 0, 0, 3, 0), resp(vec![a.clone(), bb.clone()], false)),
        Read(f(4, 0, 0, 4, 0), resp(vec![a.clone(), c.clone()], false)),
        Read(f(3, 5, 3, 4, 0), resp(vec![bb.clone(), c.clone()], false)),
        Read(f(7, 0, 0, 0, 0), resp(vec![], false)),
        Read(f(4, 0, 0, 0, 2), resp(vec![a.clone(), c.clone()], true)),
        Read(
            f(4, 0, 0, 0, 3),
            resp(vec![a.clone(), c.clone(), d.clone()], false),
        ),
        // Only b passes: one key and no `more`, though four keys are in range.
        Read(f(0, 3, 0, 0, 1), resp(vec![bb.clone()], false)),
        Read(
            RangeRequest {
                count_only: true,
                ..f(4, 0, 0, 0, 0)
            },
            resp(vec![], false),
        ),
        // Filters on a past revision see that revision's versions.
        Read(
            at(f(3, 0, 0, 0, 0), 4),
            Ok(RangeResponse {
                revision: 6,
                kvs: vec![bb.clone(), c.clone()],
                more: false,
                count: 3,
            }),
        ),
    ]);
}

/// Keys with distinct sort targets. State in `[a, e)` at revisions 6 and 7:
/// a: value "0", create 3, mod 5, version 2 · b: "2", 4, 4, 1 · c: "1", 2, 2, 1
/// d: "2", 6, 6, 1
/// (`z` is written at 7 so that reads at 6 go through history).
fn sort_fixture() -> Db {
    let db = Db::new();
    db.run(&[
        Setup(put("c", "1")), // 2
        Setup(put("a", "3")), // 3
        Setup(put("b", "2")), // 4
        Setup(put("a", "0")), // 5
        Setup(put("d", "2")), // 6
        Setup(put("z", "9")), // 7
    ]);
    db
}

fn sorted(target: SortTarget, order: SortOrder) -> RangeRequest {
    RangeRequest {
        sort_target: target,
        sort_order: order,
        ..range("a", "e")
    }
}

#[test]
fn sort_orders_and_targets() {
    // Proves every sort target and order; NONE on a non-key target ascends; ties keep key order.
    use SortOrder::{Ascend, Descend, None};
    use SortTarget::{Create, Key, Mod, Value, Version};
    let db = sort_fixture();
    let table = [
        (Key, None, "abcd"),
        (Key, Ascend, "abcd"),
        (Key, Descend, "dcba"),
        (Version, None, "bcda"),
        (Version, Ascend, "bcda"),
        (Version, Descend, "abcd"),
        (Create, None, "cabd"),
        (Create, Ascend, "cabd"),
        (Create, Descend, "dbac"),
        (Mod, None, "cbad"),
        (Mod, Ascend, "cbad"),
        (Mod, Descend, "dabc"),
        (Value, None, "acbd"),
        (Value, Ascend, "acbd"),
        (Value, Descend, "bdca"),
    ];
    for (target, order, want) in table {
        let resp = db.read(&sorted(target, order)).expect("read");
        assert_eq!(keys_of(&resp), want, "{target:?} {order:?}");
        assert_eq!((resp.count, resp.more), (4, false), "{target:?} {order:?}");
        // History reads sort the same way.
        let past = db.read(&at(sorted(target, order), 6)).expect("read");
        assert_eq!(past, resp, "{target:?} {order:?} at 6");
    }
    // Sort, then truncate.
    let resp = db
        .read(&RangeRequest {
            limit: 2,
            ..sorted(Version, Descend)
        })
        .expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("ab", true, 4)
    );
    let resp = db
        .read(&RangeRequest {
            limit: 1,
            ..sorted(Create, Ascend)
        })
        .expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("c", true, 4)
    );
    let resp = db
        .read(&RangeRequest {
            limit: 3,
            ..sorted(Key, Descend)
        })
        .expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("dcb", true, 4)
    );
}

#[test]
fn sort_order_none_with_limit_sorts_only_the_first_keys() {
    // Proves etcd's quirk: SortOrder NONE on a non-key target sorts only the first limit+1 keys.
    let db = sort_fixture();
    let req = |order: SortOrder, limit: i64| RangeRequest {
        limit,
        ..sorted(SortTarget::Create, order)
    };
    // etcd fetches a, b (limit + 1, key order), sorts them by create revision, keeps one.
    let resp = db.read(&req(SortOrder::None, 1)).expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("a", true, 4)
    );
    let resp = db.read(&req(SortOrder::None, 2)).expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("ca", true, 4)
    );
    // An explicit order sorts everything first.
    let resp = db.read(&req(SortOrder::Ascend, 1)).expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("c", true, 4)
    );
    let resp = db.read(&at(req(SortOrder::None, 1), 6)).expect("read");
    assert_eq!(
        (keys_of(&resp).as_str(), resp.more, resp.count),
        ("a", true, 4)
    );
}

#[test]
fn keys_only_still_sorts_by_value() {
    // Proves keys_only drops values from the answer but not from a sort by value.
    let db = sort_fixture();
    for order in [SortOrder::Ascend, SortOrder::None] {
        let resp = db
            .read(&RangeRequest {
                keys_only: true,
                ..sorted(SortTarget::Value, order)
            })
            .expect("read");
        assert_eq!(keys_of(&resp), "acbd", "{order:?}");
        assert!(resp.kvs.iter().all(|kv| kv.value.is_empty()), "{order:?}");
        let past = db
            .read(&at(
                RangeRequest {
                    keys_only: true,
                    ..sorted(SortTarget::Value, order)
                },
                6,
            ))
            .expect("read");
        assert_eq!(past, resp, "{order:?} at 6");
    }
    let resp = db
        .read(&RangeRequest {
            keys_only: true,
            ..sorted(SortTarget::Value, SortOrder::Descend)
        })
        .expect("read");
    assert_eq!(keys_of(&resp), "bdca");
}

#[test]
fn binary_keys_keep_byte_order_in_latest_and_history_reads() {
    // Proves keys with 0x00 and 0xFF bytes order and range correctly, live and through history.
    let db = Db::new();
    let keys: [&[u8]; 8] = [
        b"\x00",
        b"\x00\x00",
        b"\x00\x01",
        b"\x01",
        b"\xfe",
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
    ];
    // Written out of order; revision i + 2 for keys[order[i]].
    let order = [5, 0, 7, 2, 4, 1, 6, 3];
    for &i in &order {
        db.write(&WriteRequest::Put(PutRequest {
            key: keys[i].to_vec(),
            value: vec![i as u8],
            ..Default::default()
        }))
        .expect("put");
    }
    db.write(&put("zz", "bump")).expect("put"); // so reads at 9 go through history
    let rev_of = |i: usize| order.iter().position(|&o| o == i).unwrap() as i64 + 2;
    let expect = |idx: &[usize]| -> Vec<KeyValue> {
        idx.iter()
            .map(|&i| KeyValue {
                key: keys[i].to_vec(),
                value: vec![i as u8],
                create_revision: rev_of(i),
                mod_revision: rev_of(i),
                version: 1,
                lease: 0,
            })
            .collect()
    };
    let raw = |k: &[u8], end: &[u8]| RangeRequest {
        key: k.to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    };
    // (range, the binary keys it holds, whether it also holds "zz")
    let table: Vec<(RangeRequest, Vec<usize>, bool)> = vec![
        (raw(b"\x00", b"\x00"), vec![0, 1, 2, 3, 4, 5, 6, 7], true), // all keys
        (raw(b"\x00", b""), vec![0], false),
        (raw(b"\x00", b"\x01"), vec![0, 1, 2], false),
        (raw(b"\x00\x00", b"\x00\x01"), vec![1], false),
        (raw(b"\x00\x01", b"\xff"), vec![2, 3, 4], true),
        (raw(b"\xff", b"\x00"), vec![5, 6, 7], false), // from-key
        (raw(b"\xff\x00", b"\xff\xff"), vec![6], false),
        (raw(b"\xff\xff", b""), vec![7], false),
    ];
    for (req, idx, with_zz) in table {
        let mut want = expect(&idx);
        if with_zz {
            want.push(kv("zz", "bump", 10, 10, 1));
            want.sort_by(|x, y| x.key.cmp(&y.key));
        }
        assert_eq!(db.read(&req), found(10, want.clone()), "{req:?}");
        let past: Vec<KeyValue> = want.into_iter().filter(|kv| kv.mod_revision <= 9).collect();
        assert_eq!(
            db.read(&at(req.clone(), 9)),
            found(10, past),
            "{req:?} at 9"
        );
    }
    // Compaction finds every version of these keys, and only theirs.
    for &i in &order[..3] {
        db.write(&WriteRequest::Put(PutRequest {
            key: keys[i].to_vec(),
            value: b"new".to_vec(),
            ..Default::default()
        }))
        .expect("put");
    }
    let before = db.read(&at(raw(b"\x00", b"\x00"), 12)).expect("read");
    db.write(&compact(12)).expect("compact");
    assert_eq!(db.read(&at(raw(b"\x00", b"\x00"), 12)), Ok(before));
    assert_eq!(
        db.index().len(),
        10,
        "one version per key after compaction at 12, plus the put at 13"
    );
}

// ---------------------------------------------------------------------------------------------
// Txn
// ---------------------------------------------------------------------------------------------

#[test]
fn txn_is_one_revision_with_sub_revisions() {
    // Proves all writes of a txn share one revision and get sub-revisions in op order.
    let db = Db::new();
    db.run(&[Setup(put("a", "0"))]); // 2
    let applied = db.apply(&txn(
        vec![],
        vec![op_put("b", "1"), op_put("c", "1"), op_del("a", "")],
        vec![],
    ));
    assert_eq!(
        applied,
        txn_ok(
            3,
            true,
            vec![
                ResponseOp::Put(put_resp(3)),
                ResponseOp::Put(put_resp(3)),
                ResponseOp::DeleteRange(del_resp(3, 1)),
            ]
        )
    );
    // What watchers are sent: history, with previous values.
    let (events, _) = Mvcc::read_view(&db.storage)
        .expect("view")
        .events(3, 3, &KeyRange::all(), true, usize::MAX)
        .expect("history");
    let kinds: Vec<(EventKind, Vec<u8>, Revision)> = events
        .iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, b("b"), 3),
            (EventKind::Put, b("c"), 3),
            (EventKind::Delete, b("a"), 3)
        ]
    );
    assert_eq!(events[2].prev_kv, Some(kv("a", "0", 2, 2, 1)));
    // A delete event's kv carries the key and the delete's revision only.
    assert_eq!(
        events[2].kv,
        KeyValue {
            key: b("a"),
            mod_revision: 3,
            ..Default::default()
        }
    );
    assert_eq!(events[0].prev_kv, None);
    let history: Vec<(Rev, Vec<u8>, EventKind)> = db
        .history()
        .into_iter()
        .map(|(rev, e)| (rev, e.key, e.kind))
        .collect();
    let r = |main, sub| Rev { main, sub };
    assert_eq!(
        history,
        vec![
            (r(2, 0), b("a"), EventKind::Put),
            (r(3, 0), b("b"), EventKind::Put),
            (r(3, 1), b("c"), EventKind::Put),
            (r(3, 2), b("a"), EventKind::Delete),
        ]
    );
    db.run(&[
        Read(
            all(),
            found(3, vec![kv("b", "1", 3, 3, 1), kv("c", "1", 3, 3, 1)]),
        ),
        Read(at(all(), 2), found(3, vec![kv("a", "0", 2, 2, 1)])),
        Write(put("d", "1"), put_ok(4)),
    ]);
}

#[test]
fn txn_without_changes_keeps_the_revision() {
    // Proves read-only txns, empty txns and txns whose deletes find nothing take no revision.
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")), // 2
        Write(txn(vec![], vec![], vec![]), txn_ok(2, true, vec![])),
        Write(
            txn(
                vec![cmp("a", CompareResult::Equal, value("1"))],
                vec![op_range(get("a"))],
                vec![],
            ),
            txn_ok(
                2,
                true,
                vec![ResponseOp::Range(rr(2, vec![kv("a", "1", 2, 2, 1)]))],
            ),
        ),
        Write(
            txn(
                vec![cmp("a", CompareResult::Equal, value("nope"))],
                vec![op_put("b", "1")],
                vec![op_range(get("b"))],
            ),
            txn_ok(2, false, vec![ResponseOp::Range(rr(2, vec![]))]),
        ),
        Write(
            txn(vec![], vec![op_del("zz", ""), op_range(get("a"))], vec![]),
            txn_ok(
                2,
                true,
                vec![
                    ResponseOp::DeleteRange(del_resp(2, 0)),
                    ResponseOp::Range(rr(2, vec![kv("a", "1", 2, 2, 1)])),
                ],
            ),
        ),
        Write(put("b", "1"), put_ok(3)),
    ]);
}

#[test]
fn txn_ops_see_earlier_ops_writes() {
    // Proves later ops of a txn read the txn's own earlier writes, at the txn's revision.
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")), // 2
        Setup(put("c", "1")), // 3
    ]);
    let put_prev = RequestOp::Put(PutRequest {
        prev_kv: true,
        ..put_req("a", "2")
    });
    db.run(&[Write(
        txn(
            vec![],
            vec![
                op_range(get("a")),
                put_prev,
                op_range(get("a")),
                op_del("c", ""),
                op_range(get("c")),
                op_range(all()),
                op_range(at(get("a"), 2)),
                op_range(at(all(), 3)),
                op_del("c", ""),
                op_put("d", "1"),
                op_range(RangeRequest {
                    count_only: true,
                    ..all()
                }),
            ],
            vec![],
        ),
        txn_ok(
            4,
            true,
            vec![
                // Before the first write the txn reads at the store's revision.
                ResponseOp::Range(rr(3, vec![kv("a", "1", 2, 2, 1)])),
                ResponseOp::Put(PutResponse {
                    revision: 4,
                    prev_kv: Some(kv("a", "1", 2, 2, 1)),
                }),
                ResponseOp::Range(rr(4, vec![kv("a", "2", 2, 4, 2)])),
                ResponseOp::DeleteRange(del_resp(4, 1)),
                ResponseOp::Range(rr(4, vec![])),
                ResponseOp::Range(rr(4, vec![kv("a", "2", 2, 4, 2)])),
                ResponseOp::Range(rr(4, vec![kv("a", "1", 2, 2, 1)])),
                ResponseOp::Range(rr(4, vec![kv("a", "1", 2, 2, 1), kv("c", "1", 3, 3, 1)])),
                // Deleting the deleted key finds nothing, but the txn has changed: revision 4.
                ResponseOp::DeleteRange(del_resp(4, 0)),
                ResponseOp::Put(put_resp(4)),
                ResponseOp::Range(RangeResponse {
                    revision: 4,
                    kvs: vec![],
                    more: false,
                    count: 2,
                }),
            ],
        ),
    )]);
    db.run(&[Read(
        all(),
        found(4, vec![kv("a", "2", 2, 4, 2), kv("d", "1", 4, 4, 1)]),
    )]);
}

#[test]
fn txn_reads_merge_own_writes_with_stored_keys() {
    // Proves ranges in a txn merge its own puts and deletes with stored keys (limit, count, sort).
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")), // 2
        Setup(put("c", "1")), // 3
        Setup(put("e", "1")), // 4
    ]);
    let a = kv("a", "1", 2, 2, 1);
    let bb = kv("b", "2", 5, 5, 1);
    let d = kv("d", "2", 5, 5, 1);
    let e = kv("e", "2", 4, 5, 2);
    let no_value = |kv: &KeyValue| KeyValue {
        value: Vec::new(),
        ..kv.clone()
    };
    db.run(&[
        Write(
            txn(
                vec![],
                vec![
                    op_put("b", "2"),
                    op_del("c", ""),
                    op_put("e", "2"),
                    op_put("d", "2"),
                    op_range(all()),
                    op_range(RangeRequest { limit: 2, ..all() }),
                    op_range(RangeRequest {
                        limit: 3,
                        keys_only: true,
                        ..range("b", "\0")
                    }),
                    op_range(RangeRequest {
                        sort_target: SortTarget::Create,
                        sort_order: SortOrder::Descend,
                        ..all()
                    }),
                    op_range(RangeRequest {
                        min_mod_revision: 5,
                        ..all()
                    }),
                ],
                vec![],
            ),
            txn_ok(
                5,
                true,
                vec![
                    ResponseOp::Put(put_resp(5)),
                    ResponseOp::DeleteRange(del_resp(5, 1)),
                    ResponseOp::Put(put_resp(5)),
                    ResponseOp::Put(put_resp(5)),
                    ResponseOp::Range(rr(5, vec![a.clone(), bb.clone(), d.clone(), e.clone()])),
                    ResponseOp::Range(RangeResponse {
                        revision: 5,
                        kvs: vec![a.clone(), bb.clone()],
                        more: true,
                        count: 4,
                    }),
                    ResponseOp::Range(rr(5, vec![no_value(&bb), no_value(&d), no_value(&e)])),
                    ResponseOp::Range(rr(5, vec![bb.clone(), d.clone(), e.clone(), a.clone()])),
                    ResponseOp::Range(RangeResponse {
                        revision: 5,
                        kvs: vec![bb.clone(), d.clone(), e.clone()],
                        more: false,
                        count: 4,
                    }),
                ],
            ),
        ),
        Read(all(), found(5, vec![a, bb, d, e])),
    ]);
}

#[test]
fn txn_failure_branch_runs_when_any_compare_fails() {
    // Proves compares are ANDed: one false compare runs the failure branch.
    let db = Db::new();
    db.run(&[Setup(put("a", "1"))]); // 2
    let ok = cmp("a", CompareResult::Equal, value("1"));
    let bad = cmp("a", CompareResult::Equal, CompareOperand::Version(9));
    db.run(&[
        Write(
            txn(
                vec![ok.clone(), bad.clone()],
                vec![op_put("s", "1")],
                vec![op_put("f", "1")],
            ),
            txn_ok(3, false, vec![ResponseOp::Put(put_resp(3))]),
        ),
        Write(
            txn(
                vec![bad, ok.clone()],
                vec![op_put("s", "1")],
                vec![op_put("f", "2")],
            ),
            txn_ok(4, false, vec![ResponseOp::Put(put_resp(4))]),
        ),
        Write(
            txn(
                vec![ok.clone(), ok],
                vec![op_put("s", "1")],
                vec![op_put("f", "3")],
            ),
            txn_ok(5, true, vec![ResponseOp::Put(put_resp(5))]),
        ),
        Read(
            range("f", "t"),
            found(5, vec![kv("f", "2", 3, 4, 2), kv("s", "1", 5, 5, 1)]),
        ),
    ]);
}

/// Runs a read-only txn with one compare; returns whether it succeeded (no revision may move).
fn compare_holds(db: &Db, c: Compare) -> bool {
    let before = db.rev();
    let resp = db
        .write(&txn(vec![c.clone()], vec![], vec![]))
        .expect("txn");
    let WriteResponse::Txn(t) = resp else {
        panic!("not a txn response: {resp:?}")
    };
    assert_eq!((t.revision, db.rev()), (before, before), "{c:?}");
    t.succeeded
}

#[test]
fn compare_every_target_and_result() {
    // Proves VERSION, CREATE, MOD, VALUE and LEASE compares under EQUAL, GREATER, LESS, NOT_EQUAL.
    use CompareOperand::{Create, Lease, Mod, Version};
    use CompareResult::{Equal, Greater, Less, NotEqual};
    let db = Db::with_leases(&[5]);
    db.run(&[
        Setup(put("a", "x")), // 2
        Setup(put_with(PutRequest {
            lease: 5,
            ..put_req("a", "m")
        })), // 3
    ]);
    // a: version 2, create 2, mod 3, value "m", lease 5.
    let table: Vec<(CompareResult, CompareOperand, bool)> = vec![
        (Equal, Version(2), true),
        (Equal, Version(1), false),
        (NotEqual, Version(2), false),
        (NotEqual, Version(3), true),
        (Greater, Version(1), true),
        (Greater, Version(2), false),
        (Less, Version(3), true),
        (Less, Version(2), false),
        (Equal, Create(2), true),
        (NotEqual, Create(2), false),
        (Greater, Create(1), true),
        (Greater, Create(2), false),
        (Less, Create(3), true),
        (Less, Create(2), false),
        (Equal, Mod(3), true),
        (Equal, Mod(2), false),
        (NotEqual, Mod(4), true),
        (Greater, Mod(2), true),
        (Greater, Mod(3), false),
        (Less, Mod(4), true),
        (Less, Mod(3), false),
        (Equal, value("m"), true),
        (Equal, value("x"), false),
        (NotEqual, value("m"), false),
        (NotEqual, value(""), true),
        (Greater, value("a"), true),
        (Greater, value(""), true),
        (Greater, value("m"), false),
        (Greater, value("ma"), false),
        (Less, value("z"), true),
        (Less, value("ma"), true),
        (Less, value("m"), false),
        (Equal, Lease(5), true),
        (Equal, Lease(0), false),
        (NotEqual, Lease(0), true),
        (Greater, Lease(4), true),
        (Less, Lease(6), true),
        (Less, Lease(5), false),
    ];
    for (result, operand, want) in table {
        let c = cmp("a", result, operand);
        assert_eq!(compare_holds(&db, c.clone()), want, "{c:?}");
    }
}

#[test]
fn compare_on_a_missing_key() {
    // Proves a VALUE compare on a missing key always fails and other targets compare against 0.
    use CompareOperand::{Create, Lease, Mod, Version};
    use CompareResult::{Equal, Greater, Less, NotEqual};
    let db = Db::new();
    db.run(&[Setup(put("a", "1"))]);
    let table: Vec<(CompareResult, CompareOperand, bool)> = vec![
        (Equal, value(""), false),
        (NotEqual, value(""), false),
        (NotEqual, value("x"), false),
        (Greater, value(""), false),
        (Less, value("x"), false),
        (Equal, Version(0), true),
        (Less, Version(1), true),
        (Greater, Version(0), false),
        (NotEqual, Version(0), false),
        (Equal, Create(0), true),
        (Less, Create(1), true),
        (Equal, Mod(0), true),
        (NotEqual, Mod(0), false),
        (Greater, Mod(-1), true),
        (Equal, Lease(0), true),
        (Less, Lease(1), true),
    ];
    for (result, operand, want) in table {
        let c = cmp("missing", result, operand);
        assert_eq!(compare_holds(&db, c.clone()), want, "{c:?}");
    }
    // A deleted key is missing too.
    db.run(&[Setup(del("a", ""))]);
    assert!(compare_holds(&db, cmp("a", Equal, Version(0))));
    assert!(!compare_holds(&db, cmp("a", Equal, value("1"))));
}

#[test]
fn compare_operand_of_another_kind_counts_as_zero() {
    // Proves etcd's rule: a compare reads its operand only when the operand matches the target.
    let db = Db::new();
    db.run(&[Setup(put("a", "v")), Setup(put("a", "v"))]); // version 2, create 2, mod 3
    let mismatched = |target, result, operand| Compare {
        result,
        target,
        key: b("a"),
        range_end: Vec::new(),
        operand,
    };
    use CompareResult::{Equal, Greater};
    let table = vec![
        (
            CompareTarget::Mod,
            Equal,
            Some(CompareOperand::Version(3)),
            false,
        ),
        (
            CompareTarget::Mod,
            Greater,
            Some(CompareOperand::Version(3)),
            true,
        ),
        (
            CompareTarget::Version,
            Equal,
            Some(CompareOperand::Mod(2)),
            false,
        ),
        (CompareTarget::Version, Greater, None, true),
        (CompareTarget::Lease, Equal, None, true),
        (
            CompareTarget::Value,
            Greater,
            Some(CompareOperand::Version(1)),
            true,
        ),
        (CompareTarget::Value, Equal, None, false),
    ];
    for (target, result, operand, want) in table {
        let c = mismatched(target, result, operand);
        assert_eq!(compare_holds(&db, c.clone()), want, "{c:?}");
    }
}

#[test]
fn compare_over_a_range_needs_every_key() {
    // Proves a compare with range_end holds only if every live key in the range satisfies it.
    use CompareOperand::Version;
    use CompareResult::{Equal, Greater, Less, NotEqual};
    let db = Db::new();
    db.run(&[
        Setup(put("p/1", "v")), // 2
        Setup(put("p/2", "v")), // 3
        Setup(put("p/2", "v")), // 4: p/2 version 2
        Setup(put("p/3", "v")), // 5
        Setup(put("z", "w")),   // 6
    ]);
    let table: Vec<(Compare, bool)> = vec![
        (cmp_range("p/", "p0", Greater, Version(0)), true),
        (cmp_range("p/", "p0", Equal, Version(1)), false),
        (cmp_range("p/", "p0", Less, Version(3)), true),
        (cmp_range("p/", "p0", NotEqual, Version(2)), false),
        (cmp_range("p/", "p0", Equal, value("v")), true),
        (cmp_range("p/", "\0", Equal, value("v")), false), // z has "w"
        (cmp_range("p/3", "\0", Equal, Version(1)), true),
        (cmp_range("p/2", "\0", Equal, Version(1)), false),
        (
            cmp_range("\0", "\0", Greater, CompareOperand::Create(1)),
            true,
        ),
        (cmp_range("p/1", "p/2", Equal, Version(1)), true),
        // No key in the range: the same as a missing key.
        (cmp_range("q", "r", Equal, Version(0)), true),
        (cmp_range("q", "r", Equal, value("")), false),
        (cmp_range("p/3", "p/1", Equal, Version(0)), true), // inverted: empty
        (cmp_range("p/3", "p/1", NotEqual, value("x")), false),
    ];
    for (c, want) in table {
        assert_eq!(compare_holds(&db, c.clone()), want, "{c:?}");
    }
    // A key deleted from the range no longer takes part.
    db.run(&[Setup(del("p/2", ""))]);
    assert!(compare_holds(&db, cmp_range("p/", "p0", Equal, Version(1))));
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    // Proves nested compares are evaluated before any op of the outer txn runs.
    use CompareResult::Equal;
    let db = Db::new();
    db.run(&[Setup(put("a", "1"))]); // 2
    db.run(&[
        Write(
            txn(
                vec![],
                vec![
                    op_put("a", "2"),
                    op_txn(
                        vec![cmp("a", Equal, value("1"))],
                        vec![op_put("b", "old")],
                        vec![op_put("b", "new")],
                    ),
                ],
                vec![],
            ),
            txn_ok(
                3,
                true,
                vec![
                    ResponseOp::Put(put_resp(3)),
                    ResponseOp::Txn(txn_resp(0, true, vec![ResponseOp::Put(put_resp(3))])),
                ],
            ),
        ),
        Read(get("b"), found(3, vec![kv("b", "old", 3, 3, 1)])),
        // On the failure branch, two levels deep: c is put by the outer branch, yet both nested
        // compares still see it missing.
        Write(
            txn(
                vec![cmp("a", Equal, value("1"))],
                vec![op_put("x", "1")],
                vec![
                    op_put("c", "1"),
                    op_txn(
                        vec![cmp("c", Equal, CompareOperand::Version(0))],
                        vec![
                            op_put("d", "saw-no-c"),
                            op_txn(
                                vec![cmp("c", Equal, CompareOperand::Create(0))],
                                vec![op_range(get("c"))],
                                vec![],
                            ),
                        ],
                        vec![op_put("d", "saw-c")],
                    ),
                ],
            ),
            txn_ok(
                4,
                false,
                vec![
                    ResponseOp::Put(put_resp(4)),
                    ResponseOp::Txn(txn_resp(
                        0,
                        true,
                        vec![
                            ResponseOp::Put(put_resp(4)),
                            ResponseOp::Txn(txn_resp(
                                0,
                                true,
                                vec![ResponseOp::Range(rr(4, vec![kv("c", "1", 4, 4, 1)]))],
                            )),
                        ],
                    )),
                ],
            ),
        ),
        Read(get("d"), found(4, vec![kv("d", "saw-no-c", 4, 4, 1)])),
        Read(get("x"), found(4, vec![])),
    ]);
}

#[test]
fn txn_put_checks_fail_the_whole_txn() {
    // Proves missing keys for ignore_* and unknown leases fail a txn (nested too), writing nothing.
    let db = Db::new();
    db.run(&[Setup(put("a", "1"))]); // 2
    let ignore_value = |k: &str| {
        RequestOp::Put(PutRequest {
            ignore_value: true,
            ..put_req(k, "")
        })
    };
    let ignore_lease = |k: &str| {
        RequestOp::Put(PutRequest {
            ignore_lease: true,
            ..put_req(k, "z")
        })
    };
    let leased = |k: &str| {
        RequestOp::Put(PutRequest {
            lease: 3,
            ..put_req(k, "z")
        })
    };
    db.run(&[
        Write(
            txn(vec![], vec![op_put("x", "1"), ignore_value("b")], vec![]),
            Err(MvccError::KeyNotFound),
        ),
        Write(
            txn(vec![], vec![op_put("x", "1"), ignore_lease("b")], vec![]),
            Err(MvccError::KeyNotFound),
        ),
        Write(
            txn(vec![], vec![op_put("x", "1"), leased("b")], vec![]),
            Err(MvccError::LeaseNotFound),
        ),
        Write(
            txn(
                vec![],
                vec![
                    op_put("x", "1"),
                    op_txn(vec![], vec![ignore_value("b")], vec![]),
                ],
                vec![],
            ),
            Err(MvccError::KeyNotFound),
        ),
        // A check on the branch not taken does not matter.
        Write(
            txn(
                vec![],
                vec![op_put("x", "1")],
                vec![ignore_value("b"), leased("c")],
            ),
            txn_ok(3, true, vec![ResponseOp::Put(put_resp(3))]),
        ),
        // ignore_value on an existing key keeps its value.
        Write(
            txn(vec![], vec![ignore_value("a")], vec![]),
            txn_ok(4, true, vec![ResponseOp::Put(put_resp(4))]),
        ),
        Read(
            all(),
            found(4, vec![kv("a", "1", 2, 4, 2), kv("x", "1", 3, 3, 1)]),
        ),
    ]);
}

#[test]
fn txn_range_revision_checks() {
    // Proves txn range revisions are checked against the state before the txn (future, compacted).
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")), // 2
        Setup(put("a", "2")), // 3
        Setup(put("b", "1")), // 4
        Write(compact(3), compact_ok(4)),
    ]);
    let a2 = kv("a", "2", 2, 3, 2);
    db.run(&[
        Write(
            txn(vec![], vec![op_range(at(get("a"), 2))], vec![]),
            Err(MvccError::Compacted),
        ),
        Write(
            txn(vec![], vec![op_range(at(get("a"), 5))], vec![]),
            Err(MvccError::FutureRevision),
        ),
        // Revision 5 would exist once the put is applied, but etcd checks against the state before.
        Write(
            txn(
                vec![],
                vec![op_put("c", "1"), op_range(at(get("a"), 5))],
                vec![],
            ),
            Err(MvccError::FutureRevision),
        ),
        Read(all(), found(4, vec![a2.clone(), kv("b", "1", 4, 4, 1)])),
        // Revision 0 means "current", never compacted.
        Write(
            txn(vec![], vec![op_range(get("a"))], vec![]),
            txn_ok(4, true, vec![ResponseOp::Range(rr(4, vec![a2.clone()]))]),
        ),
        Write(
            txn(vec![], vec![op_range(at(get("a"), 3))], vec![]),
            txn_ok(4, true, vec![ResponseOp::Range(rr(4, vec![a2.clone()]))]),
        ),
        // Only the taken branch is checked.
        Write(
            txn(
                vec![cmp("a", CompareResult::Equal, value("nope"))],
                vec![op_range(at(get("a"), 9))],
                vec![],
            ),
            txn_ok(4, false, vec![]),
        ),
    ]);
}

#[test]
fn txn_checks_puts_before_ranges() {
    // Proves etcd's check order: every put on the taken path is checked before any range.
    let db = Db::new();
    db.run(&[Setup(put("a", "1"))]); // 2
    let leased = RequestOp::Put(PutRequest {
        lease: 3,
        ..put_req("b", "z")
    });
    db.run(&[
        Write(
            txn(
                vec![],
                vec![op_range(at(get("a"), 9)), leased.clone()],
                vec![],
            ),
            Err(MvccError::LeaseNotFound),
        ),
        Write(
            txn(
                vec![],
                vec![
                    op_txn(vec![], vec![op_range(at(get("a"), 9))], vec![]),
                    leased,
                ],
                vec![],
            ),
            Err(MvccError::LeaseNotFound),
        ),
        Write(
            txn(
                vec![],
                vec![op_range(at(get("a"), 9)), op_put("b", "z")],
                vec![],
            ),
            Err(MvccError::FutureRevision),
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------------

#[test]
fn compact_boundaries() {
    // Proves compaction's errors and read boundaries: at C reads work, below C they are Compacted.
    let db = Db::new();
    db.run(&[
        Write(compact(2), Err(MvccError::FutureRevision)),
        Write(compact(1), compact_ok(1)), // the current revision of an empty store
        Write(compact(1), Err(MvccError::Compacted)),
        Write(put("a", "1"), put_ok(2)),
        Write(put("a", "2"), put_ok(3)),
        Write(put("b", "1"), put_ok(4)),
        Write(compact(5), Err(MvccError::FutureRevision)),
        Write(compact(3), compact_ok(4)),
        Write(compact(3), Err(MvccError::Compacted)),
        Write(compact(2), Err(MvccError::Compacted)),
        Read(at(get("a"), 2), Err(MvccError::Compacted)),
        Read(at(all(), 1), Err(MvccError::Compacted)),
        Read(at(get("a"), 3), found(4, vec![kv("a", "2", 2, 3, 2)])),
        Read(at(get("b"), 3), found(4, vec![])),
        Read(
            all(),
            found(4, vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]),
        ),
        Read(
            at(all(), 0),
            found(4, vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]),
        ),
        // Compacting at the current revision is allowed.
        Write(compact(4), compact_ok(4)),
        Read(at(all(), 3), Err(MvccError::Compacted)),
        Read(
            at(all(), 4),
            found(4, vec![kv("a", "2", 2, 3, 2), kv("b", "1", 4, 4, 1)]),
        ),
        // Compaction takes no revision.
        Write(put("c", "1"), put_ok(5)),
        Read(
            at(all(), 5),
            found(
                5,
                vec![
                    kv("a", "2", 2, 3, 2),
                    kv("b", "1", 4, 4, 1),
                    kv("c", "1", 5, 5, 1),
                ],
            ),
        ),
        Write(compact(6), Err(MvccError::FutureRevision)),
    ]);
}

#[test]
fn compaction_drops_dead_history_and_keeps_the_latest_version() {
    // Proves compaction at C keeps each key's latest put <= C and drops keys deleted by C.
    let db = Db::new();
    db.run(&[
        Setup(put("a", "1")), // 2
        Setup(put("a", "2")), // 3
        Setup(put("b", "1")), // 4
        Setup(del("b", "")),  // 5
        Setup(put("c", "1")), // 6
        Setup(put("c", "2")), // 7
        Setup(del("a", "")),  // 8 (deleted exactly at the compact revision)
        Setup(put("a", "3")), // 9
        Setup(put("e", "1")), // 10
        Setup(put("e", "2")), // 11
        Write(compact(8), compact_ok(11)),
    ]);
    let r = |main| Rev { main, sub: 0 };
    assert_eq!(
        db.index(),
        vec![
            (b("a"), r(9), true),
            (b("c"), r(7), true),
            (b("e"), r(10), true),
            (b("e"), r(11), true)
        ]
    );
    let history: Vec<(Rev, Vec<u8>)> = db
        .history()
        .into_iter()
        .map(|(rev, e)| (rev, e.key))
        .collect();
    assert_eq!(
        history,
        vec![
            (r(7), b("c")),
            (r(9), b("a")),
            (r(10), b("e")),
            (r(11), b("e"))
        ]
    );
    db.run(&[
        Read(at(all(), 8), found(11, vec![kv("c", "2", 6, 7, 2)])),
        Read(at(get("b"), 8), found(11, vec![])),
        Read(
            at(all(), 9),
            found(11, vec![kv("a", "3", 9, 9, 1), kv("c", "2", 6, 7, 2)]),
        ),
        Read(at(get("e"), 10), found(11, vec![kv("e", "1", 10, 10, 1)])),
        Read(at(all(), 7), Err(MvccError::Compacted)),
        // A second compaction drops the versions the writes since have superseded.
        Setup(put("c", "3")), // 12
        Setup(del("e", "")),  // 13
        Write(compact(13), compact_ok(13)),
    ]);
    assert_eq!(
        db.index(),
        vec![(b("a"), r(9), true), (b("c"), r(12), true)]
    );
    let history: Vec<(Rev, Vec<u8>)> = db
        .history()
        .into_iter()
        .map(|(rev, e)| (rev, e.key))
        .collect();
    assert_eq!(history, vec![(r(9), b("a")), (r(12), b("c"))]);
    db.run(&[
        Read(
            all(),
            found(13, vec![kv("a", "3", 9, 9, 1), kv("c", "3", 6, 12, 3)]),
        ),
        Read(
            at(all(), 13),
            found(13, vec![kv("a", "3", 9, 9, 1), kv("c", "3", 6, 12, 3)]),
        ),
        Read(at(all(), 12), Err(MvccError::Compacted)),
    ]);
}

/// A deterministic pseudo-random sequence (64-bit LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];

/// One random write over [`KEYS`]: puts, deletes, range deletes, txns, and no-op deletes.
fn random_write(rng: &mut Lcg, n: usize) -> WriteRequest {
    let key = |rng: &mut Lcg| KEYS[rng.below(KEYS.len() as u64) as usize];
    match rng.below(10) {
        0..=4 => put(key(rng), &format!("v{n}")),
        5 => del(key(rng), ""),
        6 => del("k2", "k4"),
        7 => del("zz", ""),
        _ => {
            // Distinct keys: up to three puts and one delete of another key.
            let start = rng.below(KEYS.len() as u64) as usize;
            let puts = 1 + rng.below(3) as usize;
            let mut ops: Vec<RequestOp> = (0..puts)
                .map(|i| op_put(KEYS[(start + i) % KEYS.len()], &format!("t{n}.{i}")))
                .collect();
            if rng.below(2) == 0 {
                ops.push(op_del(KEYS[(start + puts) % KEYS.len()], ""));
            }
            txn(vec![], ops, vec![])
        }
    }
}

/// Everything these tests read at revision `rev`.
fn observe(db: &Db, rev: Revision) -> Vec<Result<RangeResponse, MvccError>> {
    let mut reqs = vec![
        all(),
        range("k1", "k4"),
        range("k3", "\0"),
        RangeRequest {
            count_only: true,
            ..all()
        },
        RangeRequest {
            keys_only: true,
            limit: 2,
            ..all()
        },
        RangeRequest {
            limit: 3,
            sort_target: SortTarget::Mod,
            sort_order: SortOrder::Descend,
            ..all()
        },
        RangeRequest {
            min_mod_revision: rev / 2,
            ..all()
        },
    ];
    reqs.extend(KEYS.iter().map(|k| get(k)));
    reqs.iter()
        .map(|req| db.read(&at(req.clone(), rev)))
        .collect()
}

/// Checks that history at or below `c` holds exactly the latest live version of each key at `c`.
fn assert_compacted_history(db: &Db, c: Revision, live_at_c: &RangeResponse) {
    let mut kept: Vec<(Vec<u8>, Revision)> = db
        .history()
        .into_iter()
        .filter(|(rev, _)| rev.main <= c)
        .map(|(rev, event)| {
            assert_eq!(
                event.kind,
                EventKind::Put,
                "tombstone at {rev:?} survived compaction at {c}"
            );
            (event.key, rev.main)
        })
        .collect();
    kept.sort();
    let want: Vec<(Vec<u8>, Revision)> = live_at_c
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(kept, want, "history at or below {c}");
    let kept_in_index = db
        .index()
        .into_iter()
        .filter(|(_, rev, _)| rev.main <= c)
        .count();
    assert_eq!(kept_in_index, want.len(), "index entries at or below {c}");
    assert_eq!(
        db.index().len(),
        db.history().len(),
        "index and history agree"
    );
}

#[test]
fn compaction_preserves_every_read_at_or_above_the_compact_revision() {
    // Proves over a seeded random history that two compactions change no read at revisions >= C.
    let db = Db::new();
    let mut rng = Lcg(0x00c0_ffee);
    for n in 0..150 {
        // Some random writes fail with etcd errors, by design; they leave nothing behind.
        let _ = db.apply(&random_write(&mut rng, n));
    }
    let mut prev_c = -1;
    for round in 0..2 {
        let cur = db.rev();
        // Somewhere in the upper half of the revisions not yet compacted.
        let lo = prev_c.max(1) + (cur - prev_c.max(1)) / 2;
        let c = lo + rng.below((cur - lo + 1) as u64) as i64;
        let before: Vec<_> = (c..=cur).map(|rev| observe(&db, rev)).collect();
        let history_len = db.history().len();
        assert_eq!(db.write(&compact(c)), compact_ok(cur), "round {round}");
        let after: Vec<_> = (c..=cur).map(|rev| observe(&db, rev)).collect();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert_eq!(
                a,
                b,
                "round {round}: read at {} changed by compaction at {c}",
                c + i as i64
            );
        }
        assert!(
            db.history().len() < history_len,
            "round {round}: compaction at {c} removed nothing"
        );
        assert_eq!(
            db.read(&at(all(), c - 1)),
            Err(MvccError::Compacted),
            "round {round}"
        );
        let live_at_c = before[0][0].as_ref().expect("read at c");
        assert_compacted_history(&db, c, live_at_c);
        prev_c = c;
        for n in 0..100 {
            let _ = db.apply(&random_write(&mut rng, 1000 * (round + 1) + n));
        }
    }
}

/// Hooks for the write-path tests: denies puts whose value is "bad", records what it was
/// shown, and computes the argument's length.
#[derive(Default)]
struct FakeHooks {
    shown: Vec<String>,
    /// What `a` held in the view each guard call was given.
    a_seen: Vec<Option<Vec<u8>>>,
}

impl crate::mvcc::WriteHooks for FakeHooks {
    fn guard(
        &mut self,
        _view: &ReadView<'_>,
        writes: &[crate::mvcc::WriteOp<'_>],
    ) -> Result<(), Error> {
        let a = _view.get(b"a").expect("read a").map(|kv| kv.value);
        self.a_seen.push(a);
        for w in writes {
            match w {
                crate::mvcc::WriteOp::Put(p) => {
                    self.shown
                        .push(format!("put {}", String::from_utf8_lossy(&p.key)));
                    if p.value == b"bad" {
                        return Err(MvccError::GuardDenied {
                            binding: "fake".into(),
                            reason: "bad value".into(),
                        }
                        .into());
                    }
                }
                crate::mvcc::WriteOp::DeleteRange(d) => {
                    self.shown
                        .push(format!("del {}", String::from_utf8_lossy(&d.key)));
                }
            }
        }
        Ok(())
    }

    fn compute(&mut self, _view: &ReadView<'_>, computed: &Computed) -> ComputeResult {
        Ok((computed.binding == "len")
            .then_some(ComputedValue::Int(computed.argument.len() as i64)))
    }
}

impl Db {
    fn apply_hooked(
        &self,
        req: &WriteRequest,
        hooks: &mut FakeHooks,
    ) -> Result<WriteResponse, MvccError> {
        let revs = Mvcc::revisions(&self.storage).expect("revisions");
        let mut batch = ApplyBatch::new(&self.storage, revs);
        let applied = batch
            .apply_with(req, &NoLeases, hooks)
            .expect("no storage error");
        batch.set_position(&[]);
        batch.commit().expect("commit");
        applied
    }
}

fn computed(binding: &str, argument: &str, result: CompareResult, expected: i64) -> Compare {
    Compare {
        result,
        target: CompareTarget::Computed,
        key: b(binding),
        range_end: Vec::new(),
        operand: Some(CompareOperand::Computed(Computed {
            binding: binding.into(),
            argument: b(argument),
            expected: ComputedValue::Int(expected),
        })),
    }
}

#[test]
fn guards_see_the_taken_path_and_a_denial_writes_nothing() {
    // Proves guards are shown exactly the writes that will run (the taken branch, nested
    // txns included, in order), and that a denial leaves no write and no revision behind.
    let db = Db::new();
    let mut hooks = FakeHooks::default();
    assert_eq!(db.apply_hooked(&put("a", "1"), &mut hooks), put_ok(2));
    let t = txn(
        vec![cmp("a", CompareResult::Equal, value("1"))],
        vec![
            op_put("b", "2"),
            op_txn(
                vec![cmp("zz", CompareResult::Equal, value("x"))],
                vec![op_put("never", "x")],
                vec![op_del("c", "")],
            ),
        ],
        vec![op_put("other", "x")],
    );
    assert!(db.apply_hooked(&t, &mut hooks).is_ok());
    assert_eq!(hooks.shown, ["put a", "put b", "del c"]);
    let denied = txn(vec![], vec![op_put("d", "ok"), op_put("e", "bad")], vec![]);
    assert_eq!(
        db.apply_hooked(&denied, &mut hooks),
        Err(MvccError::GuardDenied {
            binding: "fake".into(),
            reason: "bad value".into()
        })
    );
    assert_eq!(
        db.read(&get("d")),
        found(3, vec![]),
        "nothing of the denied txn was written"
    );
    assert_eq!(
        db.apply_hooked(&put("f", "bad"), &mut hooks).map(|_| ()),
        Err(MvccError::GuardDenied {
            binding: "fake".into(),
            reason: "bad value".into()
        })
    );
}

#[test]
fn computed_compares_pick_the_branch() {
    // Proves a computed compare is compared with the compare's operator, and that a missing
    // value (an unknown or failing compare) is false.
    let db = Db::new();
    let mut hooks = FakeHooks::default();
    let t = |c: Compare| txn(vec![c], vec![op_put("yes", "1")], vec![op_put("no", "1")]);
    let succeeded = |r: Result<WriteResponse, MvccError>| match r {
        Ok(WriteResponse::Txn(t)) => t.succeeded,
        other => panic!("{other:?}"),
    };
    assert!(succeeded(db.apply_hooked(
        &t(computed("len", "abc", CompareResult::Equal, 3)),
        &mut hooks
    )));
    assert!(succeeded(db.apply_hooked(
        &t(computed("len", "abc", CompareResult::Greater, 2)),
        &mut hooks
    )));
    assert!(!succeeded(db.apply_hooked(
        &t(computed("len", "abc", CompareResult::Less, 3)),
        &mut hooks
    )));
    assert!(succeeded(db.apply_hooked(
        &t(computed("len", "abc", CompareResult::NotEqual, 4)),
        &mut hooks
    )));
    assert!(!succeeded(db.apply_hooked(
        &t(computed("other", "abc", CompareResult::Equal, 3)),
        &mut hooks
    )));
}

#[test]
fn hooks_see_the_batch_so_far() {
    // Proves hooks read the state before their request including the batch's uncommitted
    // writes, so a plugin's input does not depend on how the log was cut into batches.
    let db = Db::new();
    let revs = Mvcc::revisions(&db.storage).expect("revisions");
    let mut batch = ApplyBatch::new(&db.storage, revs);
    let mut hooks = FakeHooks::default();
    batch
        .apply_with(&put("b", "0"), &NoLeases, &mut hooks)
        .expect("apply")
        .expect("the write succeeds");
    batch
        .apply(&put("a", "1"), &NoLeases)
        .expect("apply")
        .expect("the write succeeds");
    batch
        .apply_with(&put("c", "2"), &NoLeases, &mut hooks)
        .expect("apply")
        .expect("the write succeeds");
    batch
        .apply(&del("a", ""), &NoLeases)
        .expect("apply")
        .expect("the write succeeds");
    batch
        .apply_with(&put("d", "3"), &NoLeases, &mut hooks)
        .expect("apply")
        .expect("the write succeeds");
    assert_eq!(hooks.a_seen, [None, Some(b("1")), None]);
}

// ---------------------------------------------------------------------------------------------
// Faults: what stops apply, by kind, with what failed in the message
// ---------------------------------------------------------------------------------------------

/// Hooks whose plugin host fails on every call.
struct FailingHost;

impl FailingHost {
    fn fault() -> Error {
        Fault::PluginHost {
            binding: "quota".into(),
            reason: "engine out of memory".into(),
        }
        .into()
    }
}

impl crate::mvcc::WriteHooks for FailingHost {
    fn guard(&mut self, _: &ReadView<'_>, _: &[WriteOp<'_>]) -> Result<(), Error> {
        Err(Self::fault())
    }

    fn compute(&mut self, _: &ReadView<'_>, _: &Computed) -> ComputeResult {
        Err(Self::fault())
    }
}

#[test]
fn a_plugin_host_fault_stops_apply_and_names_the_binding() {
    // Proves a host fault in a hook leaves apply as a Fault (not a client error), with the
    // binding and the reason in its message, and nothing of the request is committed.
    let db = Db::new();
    let revs = Mvcc::revisions(&db.storage).expect("revisions");
    let mut batch = ApplyBatch::new(&db.storage, revs);
    let put = WriteRequest::Put(PutRequest {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    });
    let fault = batch
        .apply_with(&put, &NoLeases, &mut FailingHost)
        .expect_err("a fault");
    assert!(matches!(fault, Fault::PluginHost { .. }), "{fault:?}");
    assert_eq!(
        fault.to_string(),
        "plugin host fault in quota: engine out of memory"
    );
    drop(batch);
    let view = Mvcc::read_view(&db.storage).expect("view");
    assert!(view.get(b"a").expect("get").is_none());
}

#[test]
fn a_corrupt_record_is_a_corruption_fault() {
    // Proves a history record that does not decode is reported as corruption of the store
    // (not as a disk error), and a registry record likewise, each saying what it was.
    let db = Db::new();
    db.apply(&WriteRequest::Put(PutRequest {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    }))
    .expect("the put succeeds");
    let at = Rev { main: 2, sub: 0 }.encode();
    db.storage
        .kv_revs
        .insert(at, b"\xff\xff\xff".to_vec())
        .expect("insert");
    let view = Mvcc::read_view(&db.storage).expect("view");
    let e = view
        .events(2, 2, &KeyRange::all(), false, usize::MAX)
        .expect_err("an error");
    assert!(
        matches!(e, Error::Fault(Fault::Corrupt { .. })),
        "{e:?} is not corruption"
    );
    assert!(e.to_string().starts_with("corrupt store record: "), "{e}");

    db.storage
        .plugins
        .insert(b"plugin/x".to_vec(), b"\xff".to_vec())
        .expect("insert");
    let e = crate::plugin::Registry::load(&db.storage).expect_err("an error");
    assert!(
        e.to_string()
            .starts_with("corrupt plugin registry record: "),
        "{e}"
    );
}

#[test]
fn an_etcd_error_where_none_can_occur_is_a_broken_invariant() {
    // Proves callers that can only meet faults report a stray etcd error as a broken
    // invariant, naming the error.
    let fault = into_fault(Error::Mvcc(MvccError::Compacted));
    assert!(matches!(fault, Fault::Invariant(_)));
    assert_eq!(
        fault.to_string(),
        "broken invariant: etcd error mvcc: required revision has been compacted where none can occur"
    );
}
