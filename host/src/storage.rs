//! The one place that opens fjall. Every keyspace Cairn uses is named here.
//!
//! Layout (one fjall `Database`, so one journal and atomic batches across keyspaces):
//!
//! | keyspace    | key                                   | value                              |
//! |-------------|---------------------------------------|------------------------------------|
//! | `kv_meta`   | user key (live keys only)             | create/mod revision, version, lease |
//! | `kv_value`  | user key (live keys only)             | the value                          |
//! | `kv_revs`   | revision (main, sub), big-endian      | the event: key, kind, full version |
//! | `kv_index`  | escaped user key ++ revision          | event kind                         |
//! | `meta`      | fixed names                           | revisions, applied log id, members |
//! | `raft_log`  | log index, big-endian                 | a Raft log entry                   |
//! | `raft_meta` | fixed names                           | vote, committed, last purged id    |
//!
//! Latest-state reads stream from `kv_meta`/`kv_value`; `kv_revs` is the history that serves
//! watches and reads at past revisions; `kv_index` finds a key's versions for those reads and
//! for compaction. Metadata and values are apart so that `keys_only` and `count_only` ranges
//! never load a value.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions};

pub const KV_META: &str = "kv_meta";
pub const KV_VALUE: &str = "kv_value";
pub const KV_REVS: &str = "kv_revs";
pub const KV_INDEX: &str = "kv_index";
pub const META: &str = "meta";
pub const RAFT_LOG: &str = "raft_log";
pub const RAFT_META: &str = "raft_meta";

/// All state keyspaces: what a snapshot of the state machine carries.
pub const STATE_KEYSPACES: &[&str] = &[KV_META, KV_VALUE, KV_REVS, KV_INDEX, META];

/// Handles to the open database and its keyspaces. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    pub db: Database,
    pub kv_meta: Keyspace,
    pub kv_value: Keyspace,
    pub kv_revs: Keyspace,
    pub kv_index: Keyspace,
    pub meta: Keyspace,
    pub raft_log: Keyspace,
    pub raft_meta: Keyspace,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> fjall::Result<Self> {
        let db = Database::builder(dir)
            .worker_threads(2)
            .cache_size(64 << 20)
            .open()?;
        // Large values live in blob files, so scans that skip values stay cheap.
        let separated = || {
            KeyspaceCreateOptions::default()
                .with_kv_separation(Some(KvSeparationOptions::default()))
        };
        Ok(Storage {
            kv_meta: db.keyspace(KV_META, KeyspaceCreateOptions::default)?,
            kv_value: db.keyspace(KV_VALUE, separated)?,
            kv_revs: db.keyspace(KV_REVS, separated)?,
            kv_index: db.keyspace(KV_INDEX, KeyspaceCreateOptions::default)?,
            meta: db.keyspace(META, KeyspaceCreateOptions::default)?,
            raft_log: db.keyspace(RAFT_LOG, separated)?,
            raft_meta: db.keyspace(RAFT_META, KeyspaceCreateOptions::default)?,
            db,
        })
    }

    /// The keyspace handle for a state keyspace name from [`STATE_KEYSPACES`].
    pub fn state_keyspace(&self, name: &str) -> Option<&Keyspace> {
        match name {
            KV_META => Some(&self.kv_meta),
            KV_VALUE => Some(&self.kv_value),
            KV_REVS => Some(&self.kv_revs),
            KV_INDEX => Some(&self.kv_index),
            META => Some(&self.meta),
            _ => None,
        }
    }

    /// Bytes on disk (journal plus tables), for `Status.dbSize`.
    pub fn disk_space(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    /// Bytes of tables holding live state, for `Status.dbSizeInUse`.
    pub fn disk_space_in_use(&self) -> u64 {
        [
            &self.kv_meta,
            &self.kv_value,
            &self.kv_revs,
            &self.kv_index,
            &self.meta,
        ]
        .iter()
        .map(|ks| ks.disk_space())
        .sum()
    }
}
