//! openraft's storage conformance suite against the fjall-backed [`LogStore`] and
//! [`StateMachineStore`], each run on a fresh database in its own temporary directory.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::types::TypeConfig;
use crate::state_machine::StateMachine;
use crate::storage::Storage;

/// Builds a log store and state machine over one new, empty database; the `TempDir` guard
/// keeps the directory alive for the duration of one suite case.
struct FjallBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FjallBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let io_err = |e: std::io::Error| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let dir = tempfile::tempdir().map_err(io_err)?;
        let storage = Storage::open(&dir.path().join("db")).map_err(|e| io_err(std::io::Error::other(e)))?;
        let log_store = LogStore::new(storage.clone()).map_err(io_err)?;
        let sm = StateMachineStore::new(StateMachine::new(storage), dir.path().join("snap")).map_err(io_err)?;
        Ok((dir, log_store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    // Proves LogStore and StateMachineStore satisfy every case of openraft's conformance suite.
    Suite::test_all(FjallBuilder).await
}
