//! openraft's storage conformance suite against the fjall-backed [`LogStore`] and
//! [`StateMachineStore`], each run on a fresh database in its own temporary directory, plus a
//! snapshot round trip that carries real KV state (the suite's entries carry none).

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id, membership_ent};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::types::{Entry, TypeConfig};
use crate::mvcc::{
    CompactRequest, DeleteRangeRequest, Error, Mvcc, MvccError, PutRequest, RangeRequest,
    RangeResponse, RequestOp, Revision, TxnRequest, WriteRequest,
};
use crate::state_machine::{Command, StateMachine};
use crate::storage::Storage;

/// Opens a log store and a state machine over one database under `dir`.
fn open(dir: &Path) -> io::Result<(Storage, LogStore, StateMachineStore)> {
    let storage = Storage::open(&dir.join("db")).map_err(io::Error::other)?;
    let log_store = LogStore::new(storage.clone())?;
    let sm = StateMachineStore::new(
        StateMachine::new(storage.clone()).map_err(io::Error::other)?,
        dir.join("snap"),
    )?;
    Ok((storage, log_store, sm))
}

/// Builds a log store and state machine over one new, empty database; the `TempDir` guard
/// keeps the directory alive for the duration of one suite case.
struct FjallBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FjallBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let io_err =
            |e: io::Error| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().map_err(io_err)?;
        let (_, log_store, sm) = open(dir.path()).map_err(io_err)?;
        Ok((dir, log_store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    // Proves LogStore and StateMachineStore satisfy every case of openraft's conformance suite.
    Suite::test_all(FjallBuilder).await
}

fn kv_entry(index: u64, req: WriteRequest) -> Entry {
    Entry::new_normal(log_id::<TypeConfig>(1, 0, index), Command::Kv(req))
}

fn put(k: &str, v: &str) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) -> io::Result<()> {
    sm.apply(futures::stream::iter(
        entries.into_iter().map(|e| Ok((e, None))),
    ))
    .await
}

/// Every key at every revision from 1 to the current one (errors included).
fn all_history(storage: &Storage) -> Vec<Result<RangeResponse, MvccError>> {
    let view = Mvcc::read_view(storage).expect("read view");
    (1..=view.rev)
        .map(|rev: Revision| {
            let req = RangeRequest {
                key: b"\0".to_vec(),
                range_end: b"\0".to_vec(),
                revision: rev,
                ..Default::default()
            };
            view.range(&req).map_err(|e| match e {
                Error::Mvcc(m) => m,
                Error::Fault(s) => panic!("fault: {s}"),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_carries_the_kv_state() -> io::Result<()> {
    // Proves a snapshot built on one member and installed on another reproduces its MVCC state.
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (store_a, _log_a, mut sm_a) = open(dir_a.path())?;
    let (store_b, _log_b, mut sm_b) = open(dir_b.path())?;
    let members = vec![BTreeSet::from([0u64])];
    apply(
        &mut sm_a,
        vec![
            membership_ent::<TypeConfig>(1, 0, 1, members.clone()),
            kv_entry(2, put("a", "1")),
            kv_entry(3, put("b", "1")),
            kv_entry(4, put("a", "2")),
            kv_entry(
                5,
                WriteRequest::DeleteRange(DeleteRangeRequest {
                    key: b"b".to_vec(),
                    ..Default::default()
                }),
            ),
            kv_entry(
                6,
                WriteRequest::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![RequestOp::Put(PutRequest {
                        key: b"c".to_vec(),
                        value: b"1".to_vec(),
                        ..Default::default()
                    })],
                    failure: vec![],
                }),
            ),
            kv_entry(
                7,
                WriteRequest::Compact(CompactRequest {
                    revision: 3,
                    physical: false,
                }),
            ),
            blank_ent::<TypeConfig>(2, 0, 8),
        ],
    )
    .await?;
    // B starts with state of its own, which the snapshot must replace.
    apply(
        &mut sm_b,
        vec![
            membership_ent::<TypeConfig>(1, 0, 1, members),
            kv_entry(2, put("stale", "x")),
            kv_entry(3, put("stale", "y")),
        ],
    )
    .await?;

    let snap = sm_a.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(snap.meta.last_log_id, Some(log_id::<TypeConfig>(2, 0, 8)));
    sm_b.install_snapshot(&snap.meta, snap.snapshot).await?;

    assert_eq!(sm_b.applied_state().await?, sm_a.applied_state().await?);
    let current = sm_b
        .get_current_snapshot()
        .await?
        .expect("installed snapshot");
    assert_eq!(current.meta, snap.meta);
    let history = all_history(&store_a);
    assert_eq!(history.len(), 6, "revisions 1..=6");
    assert_eq!(
        history[..2],
        [Err(MvccError::Compacted), Err(MvccError::Compacted)]
    );
    assert_eq!(all_history(&store_b), history);

    // Both go on identically from the snapshot.
    for sm in [&mut sm_a, &mut sm_b] {
        apply(
            sm,
            vec![kv_entry(9, put("d", "1")), kv_entry(10, put("a", "3"))],
        )
        .await?;
    }
    assert_eq!(all_history(&store_b), all_history(&store_a));
    assert_eq!(sm_b.applied_state().await?, sm_a.applied_state().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_is_immediate_for_readers_and_complete_after_a_restart() -> io::Result<()> {
    // Proves the two halves of a purge: readers stop seeing the entries at once (openraft
    // waits for `purge`, so it must be quick), and the purge thread deletes them in chunks,
    // recording the boundary, so the reopened log starts right after it.
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    let dir = tempfile::tempdir()?;
    let to_io = |e: StorageError<TypeConfig>| io::Error::other(e.to_string());
    let boundary = log_id::<TypeConfig>(1, 0, 2500);
    {
        let (storage, mut log, _) = open(dir.path())?;
        let entries: Vec<Entry> = (1..=3000)
            .map(|i| blank_ent::<TypeConfig>(1, 0, i))
            .collect();
        log.blocking_append(entries).await.map_err(to_io)?;
        log.purge(boundary).await?;
        let state = log.get_log_state().await?;
        assert_eq!(state.last_purged_log_id, Some(boundary));
        let read = log.try_get_log_entries(1..3001).await?;
        assert_eq!(read.first().map(|e| e.log_id.index), Some(2501));
        assert_eq!(read.len(), 500);
        // Wait (bounded) for the purge thread to delete the last purged entry.
        let started = std::time::Instant::now();
        while storage
            .raft_log
            .get(2500u64.to_be_bytes())
            .map_err(io::Error::other)?
            .is_some()
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the purge thread did not delete the entries"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            storage
                .raft_log
                .get(1u64.to_be_bytes())
                .map_err(io::Error::other)?
                .is_none()
        );
    }
    let (_, mut log, _) = open(dir.path())?;
    let state = log.get_log_state().await?;
    assert_eq!(state.last_purged_log_id, Some(boundary));
    assert_eq!(state.last_log_id, Some(log_id::<TypeConfig>(1, 0, 3000)));
    let read = log.try_get_log_entries(2501..3001).await?;
    assert_eq!(read.len(), 500);
    let read = log.try_get_log_entries(..).await?;
    assert_eq!(
        read.first().map(|e| e.log_id.index),
        Some(2501),
        "an unbounded range starts at the boundary"
    );
    assert_eq!(read.len(), 500);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_reads_stop_at_the_batch_bytes() -> io::Result<()> {
    // Proves what one AppendEntries request carries is bounded by bytes, whether the entries
    // come from the cache (the store that appended them) or from disk (a fresh store: its
    // cache is empty), that a single entry larger than the bound still goes, and that other
    // log reads are not bounded.
    use super::log_store::REPLICATION_BATCH_BYTES;
    use openraft::storage::{RaftLogReader, RaftLogStorageExt};
    let dir = tempfile::tempdir()?;
    let to_io = |e: StorageError<TypeConfig>| io::Error::other(e.to_string());
    let value = "v".repeat(REPLICATION_BATCH_BYTES / 4);
    let big = "b".repeat(REPLICATION_BATCH_BYTES * 2);
    let mut entries: Vec<Entry> = (1..=10)
        .map(|i| kv_entry(i, put(&format!("k{i}"), &value)))
        .collect();
    entries.push(kv_entry(11, put("big", &big)));
    entries.push(kv_entry(12, put("k12", &value)));
    for from in ["cache", "disk"] {
        let (_, mut log, _) = open(dir.path())?;
        if from == "cache" {
            log.blocking_append(entries.clone()).await.map_err(to_io)?;
        }
        let mut read = async |start, end| -> io::Result<Vec<u64>> {
            let entries = log.limited_get_log_entries(start, end).await?;
            Ok(entries.iter().map(|e| e.log_id.index).collect())
        };
        // A quarter of the bound each, plus a little: three fit, not four.
        assert_eq!(read(1, 13).await?, vec![1, 2, 3], "from {from}");
        assert_eq!(read(9, 13).await?, vec![9, 10], "from {from}");
        assert_eq!(read(11, 13).await?, vec![11], "from {from}");
        assert_eq!(
            log.try_get_log_entries(1..13).await?.len(),
            12,
            "from {from}"
        );
    }
    Ok(())
}
