//! The Raft log on fjall (`raft_log`, `raft_meta` keyspaces).
//!
//! Appends become visible at once and durable in groups: each `append` writes its entries in
//! one batch without syncing and hands its flush callback to the sync thread, which takes every
//! callback waiting at that moment, issues one `fdatasync` of the journal, and completes them
//! all. Under load many appends share one fsync; openraft counts an entry as flushed only when
//! its callback fires, so nothing is acknowledged before it is on disk. Votes are synced before
//! `save_vote` returns.
//!
//! The newest entries are also kept decoded in a [`LogCache`], which serves the reads of what
//! was just appended (replication, apply) without touching fjall.
//!
//! Purging is logical at once and physical in the background. openraft waits for `purge` in
//! its core loop, and deleting a snapshot interval of entries (10,000 by default) in one batch
//! stalled every write for tens of milliseconds once per snapshot. So `purge` records the new
//! boundary in memory (reads and `get_log_state` honour it) and hands it to the purge thread,
//! which deletes in chunks, each batch also recording how far it got: after a crash the log on
//! disk starts right after its recorded boundary, as openraft expects.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, mpsc};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use super::log_cache::LogCache;
use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::storage::Storage;

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
/// The last log id known committed (see `save_committed`).
const COMMITTED: &[u8] = b"committed";
/// How long the log is quiet before the sync thread writes the commit index on its own.
const COMMIT_WRITE_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Appends of at most this many entries are written without `block_in_place`.
const INLINE_APPEND_ENTRIES: usize = 4;
/// Log reads from disk of at most this many entries run on the async task (see
/// `try_get_log_entries`).
const INLINE_READ_ENTRIES: u64 = 16;
/// Bytes of recent entries kept decoded: at 10,000 writes a second of 256-byte values, a few
/// seconds of log, far more than replication or apply normally trail by.
const CACHE_BYTES: usize = 16 << 20;
/// Bytes of entries per AppendEntries request (at least one entry), as etcd's
/// `MaxSizePerMsg` (1 MiB). Requests are pipelined on the replication stream, so this bounds
/// the size of each, not the rate.
pub const REPLICATION_BATCH_BYTES: usize = 1 << 20;
/// Entries the purge thread deletes per batch.
const PURGE_CHUNK: u64 = 1024;

/// Handle to the log. Clones share the store, the cache and the sync and purge threads.
#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    cache: Arc<LogCache>,
    syncer: Arc<Syncer>,
    purger: Arc<Purger>,
}

struct Syncer {
    tx: mpsc::Sender<IOFlushed<TypeConfig>>,
    /// The newest commit index not yet written: the sync thread writes it with its next
    /// fsync, or on its own once the log has been quiet for [`COMMIT_WRITE_DELAY`].
    committed: Arc<std::sync::Mutex<Option<Option<LogId>>>>,
}

struct Purger {
    tx: mpsc::Sender<LogId>,
    /// The last purge asked for: entries up to it are gone for readers, whether or not the
    /// purge thread has deleted them yet.
    purged: std::sync::Mutex<Option<LogId>>,
}

impl Purger {
    fn boundary(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        // Only ever replaced whole, so a poisoned lock still holds a valid value.
        self.purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn purged(&self) -> Option<LogId> {
        *self.boundary()
    }

    /// Moves the boundary up to `log_id` (never down) and hands it to the purge thread.
    fn advance(&self, log_id: LogId) -> io::Result<()> {
        {
            let mut purged = self.boundary();
            *purged = (*purged).max(Some(log_id));
        }
        self.tx
            .send(log_id)
            .map_err(|_| io::Error::other("log purge thread stopped"))
    }
}

/// Deletes the entries up to `upto` that are still on disk, from `*next` on, in batches of
/// [`PURGE_CHUNK`]; each batch also records the id of its last entry as `LAST_PURGED`.
fn purge_in_chunks(s: &Storage, next: &mut u64, upto: &LogId) -> io::Result<()> {
    while *next <= upto.index {
        let end = next.saturating_add(PURGE_CHUNK).min(upto.index + 1);
        let mut batch = s.log_db.batch();
        let mut last = None;
        for guard in s.raft_log.range(next.to_be_bytes()..end.to_be_bytes()) {
            let (key, raw) = guard.into_inner().map_err(to_io)?;
            batch.remove(&s.raft_log, key);
            last = Some(raw);
        }
        let boundary = if end > upto.index {
            Some(*upto)
        } else {
            match last {
                Some(raw) => Some(postcard::from_bytes::<Entry>(&raw).map_err(invalid)?.log_id),
                // A stretch with no entries (the log restarted after a snapshot): nothing to
                // delete, nothing to record.
                None => None,
            }
        };
        if let Some(id) = boundary {
            batch.insert(
                &s.raft_meta,
                LAST_PURGED,
                postcard::to_stdvec(&id).map_err(invalid)?,
            );
        }
        batch.commit().map_err(to_io)?;
        *next = end;
    }
    Ok(())
}

impl LogStore {
    pub fn new(storage: Storage) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let committed: Arc<std::sync::Mutex<Option<Option<LogId>>>> = Arc::default();
        let pending = committed.clone();
        let s = storage.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || {
                // Ends when every LogStore clone (and so every sender) is gone, after writing
                // the last commit index.
                loop {
                    let first = match rx.recv_timeout(COMMIT_WRITE_DELAY) {
                        Ok(first) => first,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            // Quiet: hand the commit index to the OS (a killed process keeps
                            // it); it reaches the disk with the next fsync.
                            write_committed(&s, &pending, Some(fjall::PersistMode::Buffer));
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            write_committed(&s, &pending, Some(fjall::PersistMode::SyncData));
                            return;
                        }
                    };
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let started = std::time::Instant::now();
                    // Rides on this round's fsync.
                    write_committed(&s, &pending, None);
                    let result = s.log_db.persist(fjall::PersistMode::SyncData);
                    crate::metrics::METRICS
                        .wal_fsync
                        .observe(started.elapsed().as_secs_f64());
                    for callback in waiting {
                        callback.io_completed(
                            result
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| io::Error::other(e.to_string())),
                        );
                    }
                }
            })?;
        let purged: Option<LogId> = read_meta(&storage, LAST_PURGED)?;
        let (purge_tx, purge_rx) = mpsc::channel::<LogId>();
        let s = storage.clone();
        let mut next = purged.map_or(0, |p| p.index + 1);
        std::thread::Builder::new()
            .name("raft-log-purge".into())
            .spawn(move || {
                // Ends when every LogStore clone (and so every sender) is gone.
                while let Ok(first) = purge_rx.recv() {
                    let upto = purge_rx
                        .try_iter()
                        .fold(first, |a, b| if b.index > a.index { b } else { a });
                    if let Err(e) = purge_in_chunks(&s, &mut next, &upto) {
                        // The entries stay on disk (readers already skip them); the next
                        // purge tries again from where this one stopped.
                        tracing::error!(error = %e, "purging the Raft log");
                    }
                }
            })?;
        Ok(LogStore {
            storage,
            cache: Arc::new(LogCache::new(CACHE_BYTES)),
            syncer: Arc::new(Syncer { tx, committed }),
            purger: Arc::new(Purger {
                tx: purge_tx,
                purged: std::sync::Mutex::new(purged),
            }),
        })
    }

    /// Runs blocking fjall work off the async worker threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Storage) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || f(storage))
            .await
            .map_err(io::Error::other)?
    }
}

impl LogStore {
    /// The entries from `first` (`None`: past `u64::MAX`) up to `end` (exclusive; `None`:
    /// the log's end). With a `budget` (`None`: no limit), stopping once they add up to more
    /// than that many bytes (the first entry comes whatever its size).
    async fn read_entries(
        &self,
        first: Option<u64>,
        end: Option<u64>,
        budget: Option<usize>,
    ) -> Result<Vec<Entry>, io::Error> {
        if let (Some(first), Some(end)) = (first, end) {
            let cached = match budget {
                None => self.cache.get(first, end),
                Some(budget) => self.cache.get_within(first, end, budget),
            };
            if let Some(entries) = cached {
                return Ok(entries);
            }
        }
        // Entries purged but not deleted yet are not there for readers.
        let floor = self.purger.purged().map_or(0, |p| p.index + 1);
        let Some(first) = first.map(|f| f.max(floor)) else {
            return Ok(Vec::new()); // starts after u64::MAX
        };
        let start = Bound::Included(first.to_be_bytes());
        let end_key = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_be_bytes()));
        let read = move |s: Storage| {
            let (mut out, mut spent) = (Vec::new(), 0usize);
            for guard in s.raft_log.range::<[u8; 8], _>((start, end_key)) {
                let (_, raw) = guard.into_inner().map_err(to_io)?;
                spent = spent.saturating_add(raw.len());
                if budget.is_some_and(|b| spent > b) && !out.is_empty() {
                    break;
                }
                out.push(postcard::from_bytes(&raw).map_err(invalid)?);
            }
            Ok(out)
        };
        // Not in the cache (a follower catching up, or the first reads after a restart): a few
        // entries are read in place, which spares two thread hops; long ranges go to the
        // blocking pool.
        if end.is_some_and(|e| e.saturating_sub(first) <= INLINE_READ_ENTRIES) {
            read(self.storage.clone())
        } else {
            self.blocking(read).await
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let first = match range.start_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        self.read_entries(first, end, None).await
    }

    /// What replication sends in one AppendEntries request: at most
    /// [`REPLICATION_BATCH_BYTES`] of entries (openraft caps only their number). Without a
    /// byte cap, a follower that had fallen a few hundred large entries behind was sent a
    /// request larger than a peer message may be (or than it could take in before the
    /// stream's deadline), again and again, and never caught up.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read_entries(Some(start), Some(end), Some(REPLICATION_BATCH_BYTES))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read_meta(&self.storage, VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.purger.purged();
        let last = match self.storage.raft_log.last_key_value() {
            None => None,
            Some(guard) => {
                let (_, raw) = guard.into_inner().map_err(to_io)?;
                let entry: Entry = postcard::from_bytes(&raw).map_err(invalid)?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id,
            // Entries still on disk below the purge boundary are not the log's end.
            last_log_id: last.max(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let raw = postcard::to_stdvec(vote).map_err(invalid)?;
        self.blocking(move |s| {
            let mut batch = s
                .log_db
                .batch()
                .durability(Some(fjall::PersistMode::SyncData));
            batch.insert(&s.raft_meta, VOTE, raw);
            batch.commit().map_err(to_io)
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            encoded.push((
                entry.log_id.index.to_be_bytes(),
                postcard::to_stdvec(entry).map_err(invalid)?,
            ));
        }
        let sizes: Vec<usize> = encoded.iter().map(|(_, raw)| raw.len()).collect();
        // Written in place, not on the blocking pool: without a sync this is a memtable insert
        // and a buffered journal write, cheaper than the two thread hops a blocking task costs
        // on every write. It can wait for the journal lock while the sync thread is inside an
        // fsync; the Raft core waits for this append either way.
        let encoded_len = encoded.len();
        let write = || {
            let mut batch = self.storage.log_db.batch().durability(None);
            for (index, raw) in encoded {
                batch.insert(&self.storage.raft_log, index, raw);
            }
            batch.commit().map_err(to_io)
        };
        // A large append means many writers, and likely an fsync holding the journal lock:
        // let tokio move this worker's other tasks away while it may wait. A small one (light
        // load, nothing in flight) is written directly, which is cheaper.
        let multi_thread = matches!(
            tokio::runtime::Handle::current().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        if multi_thread && encoded_len > INLINE_APPEND_ENTRIES {
            tokio::task::block_in_place(write)?;
        } else {
            write()?;
        }
        for (entry, size) in entries.into_iter().zip(sizes) {
            self.cache.append(entry, size);
        }
        self.syncer
            .tx
            .send(callback)
            .map_err(|_| io::Error::other("log sync thread stopped"))
    }

    /// Records how far the log is known committed, so that a restarted member re-applies
    /// everything it had committed before it hears from a leader (openraft reads it back with
    /// `read_committed` and re-applies up to it on start). Without it a member restarted
    /// without a quorum served the state of its last flushed apply batch, which could be
    /// empty.
    ///
    /// Nothing is written here: the sync thread writes the newest value with its next fsync,
    /// or to the OS once the log has been quiet for [`COMMIT_WRITE_DELAY`] (a killed process
    /// keeps it), and on shutdown. (Writing it here, once per commit, cost about 5% of
    /// single-client put throughput.) A commit index lost to a crash only means re-applying
    /// less before the leader is heard from, never more than was committed.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        *self
            .syncer
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(read_meta::<Option<LogId>>(&self.storage, COMMITTED)?.flatten())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.cache.truncate_from(from);
        self.blocking(move |s| {
            let mut batch = s
                .log_db
                .batch()
                .durability(Some(fjall::PersistMode::SyncData));
            for guard in s.raft_log.range(from.to_be_bytes()..) {
                batch.remove(&s.raft_log, guard.key().map_err(to_io)?);
            }
            batch.commit().map_err(to_io)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.cache.purge_to(log_id.index);
        self.purger.advance(log_id)
    }
}

/// Writes the pending commit index, if any, with `mode` (`None`: leave it to the caller's
/// persist).
fn write_committed(
    s: &Storage,
    pending: &std::sync::Mutex<Option<Option<LogId>>>,
    mode: Option<fjall::PersistMode>,
) {
    let Some(committed) = pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    let written = postcard::to_stdvec(&committed)
        .map_err(|e| fjall::Error::Io(io::Error::other(e.to_string())))
        .and_then(|raw| {
            let mut batch = s.log_db.batch().durability(mode);
            batch.insert(&s.raft_meta, COMMITTED, raw);
            batch.commit()
        });
    if let Err(e) = written {
        // The next write retries with a newer value; until then a restart re-applies less.
        tracing::error!(error = %e, "writing the Raft commit index");
    }
}

/// A record of `raft_meta`, decoded.
fn read_meta<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    key: &[u8],
) -> io::Result<Option<T>> {
    match storage.raft_meta.get(key).map_err(to_io)? {
        None => Ok(None),
        Some(raw) => postcard::from_bytes(&raw).map(Some).map_err(invalid),
    }
}

pub(crate) fn to_io(e: fjall::Error) -> io::Error {
    io::Error::other(e.to_string())
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
