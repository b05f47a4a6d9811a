//! The one place that opens fjall. Every keyspace Cairn uses is named here.
//!
//! Two fjall databases, each with its own journal: `state/` holds the state machine, `log/`
//! holds the Raft log. They are apart because fjall holds a database's journal lock while it
//! fsyncs: with one journal, every state-machine commit would wait for the log's fsync and
//! apply could never overlap the next sync. Nothing needs to be atomic across the two: the
//! applied log id lives in `state/`, in the same batch as the data it describes.
//!
//! | database | keyspace    | key                              | value                              |
//! |----------|-------------|----------------------------------|------------------------------------|
//! | state    | `kv_meta`   | user key (live keys only)             | create/mod revision, version, lease; where its value is |
//! | state    | `kv_revs`   | revision (main, sub), big-endian      | the event: key, kind, full version |
//! | state    | `kv_index`  | escaped user key ++ revision          | event kind                         |
//! | state    | `leases`    | lease id, big-endian             | granted TTL                        |
//! | state    | `kv_lease`  | lease id ++ user key             | (empty): the keys a lease holds    |
//! | state    | `meta`      | fixed names                           | revisions, applied log id, members |
//! | state    | `plugins`   | `module/`, `plugin/`, `upload/`, `binding/` + name | the plugin registry (`plugin/registry.rs`) |
//! | state    | `auth`      | `user/`, `role/` + name; `revision`, `enabled` | users, roles, the auth revision (`auth/store.rs`) |
//! | state    | `alarms`    | member ID ++ alarm type               | (empty): the active alarms (`alarm.rs`) |
//! | log      | `raft_log`  | log index, big-endian                 | a Raft log entry                   |
//! | log      | `raft_meta` | fixed names                           | vote, committed, last purged id    |
//!
//! Latest-state reads stream metadata from `kv_meta` and fetch each returned key's value from
//! `kv_revs`, the history (which also serves watches and reads at past revisions); `kv_index`
//! finds a key's versions for those reads and for compaction. A value is stored once, in
//! history, as etcd does, and `keys_only` and `count_only` ranges never load one.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, OwnedWriteBatch};

pub const KV_META: &str = "kv_meta";
pub const KV_REVS: &str = "kv_revs";
pub const KV_INDEX: &str = "kv_index";
pub const META: &str = "meta";
pub const LEASES: &str = "leases";
pub const KV_LEASE: &str = "kv_lease";
pub const PLUGINS: &str = "plugins";
pub const AUTH: &str = "auth";
pub const ALARMS: &str = "alarms";
pub const RAFT_LOG: &str = "raft_log";
pub const RAFT_META: &str = "raft_meta";

/// The key in `meta` under which the state machine keeps the Raft membership it applied last.
pub const MEMBERSHIP: &[u8] = b"raft/membership";

/// Memtable size of the data keyspaces.
const MEMTABLE_BYTES: u64 = 8 << 20;
/// Memtable size of the keyspaces that hold counters.
const COUNTER_MEMTABLE_BYTES: u64 = 1 << 20;

/// All state keyspaces: what a snapshot of the state machine carries.
/// Appended only: a snapshot names keyspaces by their index here.
pub const STATE_KEYSPACES: &[&str] = &[
    KV_META, KV_REVS, KV_INDEX, META, LEASES, KV_LEASE, PLUGINS, AUTH, ALARMS,
];

/// Handles to the open databases and their keyspaces. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    /// The state machine's database.
    pub db: Database,
    /// The Raft log's database.
    pub log_db: Database,
    pub kv_meta: Keyspace,
    pub kv_revs: Keyspace,
    pub kv_index: Keyspace,
    pub meta: Keyspace,
    pub leases: Keyspace,
    pub kv_lease: Keyspace,
    pub plugins: Keyspace,
    pub auth: Keyspace,
    pub alarms: Keyspace,
    pub raft_log: Keyspace,
    pub raft_meta: Keyspace,
    /// The directory both databases live in.
    dir: std::path::PathBuf,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens (or creates) the databases under `dir`.
    pub fn open(dir: &Path) -> fjall::Result<Self> {
        let db = Database::builder(dir.join("state"))
            .worker_threads(2)
            .cache_size(64 << 20)
            .open()?;
        let log_db = Database::builder(dir.join("log"))
            .worker_threads(1)
            .cache_size(16 << 20)
            .open()?;
        // Small memtables: a memtable is a skiplist, and inserts and lookups in it slow down
        // as it grows (cache misses), so flushing often is cheaper than fjall's 64 MiB default.
        let plain = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        // Large values live in blob files, so scans that skip values stay cheap. Any blob
        // file a compaction meets that is a quarter stale may be rewritten (fjall's default
        // considers only the oldest quarter of them, so a store with few blob files never
        // reclaimed the space of overwritten and compacted values; set when a keyspace is
        // created).
        let separated =
            || plain().with_kv_separation(Some(KvSeparationOptions::default().age_cutoff(1.0)));
        // `meta` and `raft_meta` rewrite the same few keys on every entry; a smaller memtable
        // keeps those versions few, so point lookups of them stay fast.
        let counters =
            || KeyspaceCreateOptions::default().max_memtable_size(COUNTER_MEMTABLE_BYTES);
        Ok(Storage {
            kv_meta: db.keyspace(KV_META, plain)?,
            kv_revs: db.keyspace(KV_REVS, separated)?,
            kv_index: db.keyspace(KV_INDEX, plain)?,
            meta: db.keyspace(META, counters)?,
            leases: db.keyspace(LEASES, plain)?,
            kv_lease: db.keyspace(KV_LEASE, plain)?,
            plugins: db.keyspace(PLUGINS, separated)?,
            auth: db.keyspace(AUTH, plain)?,
            alarms: db.keyspace(ALARMS, counters)?,
            raft_log: log_db.keyspace(RAFT_LOG, separated)?,
            raft_meta: log_db.keyspace(RAFT_META, counters)?,
            db,
            log_db,
            dir: dir.to_path_buf(),
        })
    }

    /// The keyspace handle for a state keyspace name from [`STATE_KEYSPACES`].
    pub fn state_keyspace(&self, name: &str) -> Option<&Keyspace> {
        match name {
            KV_META => Some(&self.kv_meta),
            KV_REVS => Some(&self.kv_revs),
            KV_INDEX => Some(&self.kv_index),
            META => Some(&self.meta),
            LEASES => Some(&self.leases),
            KV_LEASE => Some(&self.kv_lease),
            PLUGINS => Some(&self.plugins),
            AUTH => Some(&self.auth),
            ALARMS => Some(&self.alarms),
            _ => None,
        }
    }

    /// Bytes the state's database occupies on disk (blocks allocated to its files: journal,
    /// tables, blob files, including replaced files fjall has not deleted yet; a journal's
    /// preallocated but unwritten length does not count), for `Status.dbSize`. Like etcd's
    /// backend size, it leaves out the log (etcd's WAL).
    pub fn disk_space(&self) -> u64 {
        allocated_bytes(&self.dir.join("state"))
    }

    /// The directory both databases live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One round of etcd's defragment: writes every keyspace's memtable out, then rewrites
    /// the keyspace into fresh tables (fjall's major compaction), dropping versions that
    /// compaction, deletes and overwrites left and rewriting blob files that are largely
    /// stale, while reads and writes go on against the old tables until the new ones are in
    /// place. Versions an open view still reads are kept, and files are deleted only once no
    /// view can reach them, so a full defragment takes a few rounds with the Raft layer's
    /// pinned view refreshed between them (`api/maintenance.rs`).
    pub fn defragment_round(&self) -> fjall::Result<()> {
        let keyspaces = STATE_KEYSPACES
            .iter()
            .filter_map(|name| self.state_keyspace(name))
            .chain([&self.raft_log, &self.raft_meta]);
        for ks in keyspaces {
            // What is still in memory (compaction's deletions, say) first goes to disk, where
            // the major compaction can meet it.
            ks.rotate_memtable_and_wait()?;
            ks.major_compact()?;
        }
        Ok(())
    }

    /// The state's size in use: the tables and blob files the state keyspaces read now, plus
    /// what their memtables hold. It shrinks as soon as a compaction or a defragment replaces
    /// files, where [`Storage::disk_space`] waits until fjall deletes the replaced files. For
    /// `Status.dbSizeInUse` and the quota. Reads no file.
    pub fn disk_space_in_use(&self) -> u64 {
        let tables: u64 = STATE_KEYSPACES
            .iter()
            .filter_map(|name| self.state_keyspace(name))
            .map(|ks| ks.disk_space())
            .sum();
        tables + self.db.write_buffer_size()
    }
}

/// Bytes allocated to the files under `dir`, recursively, as `du` counts them. Files that
/// vanish while it walks (a compaction removing a table) count as nothing. Public for the
/// benchmark tool, which sizes whole data directories with it.
pub fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => allocated_bytes(&entry.path()),
            // st_blocks counts 512-byte units whatever the filesystem's block size.
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The state keyspaces outside the MVCC store, which the state machine's other subsystems
/// write in the same batch as the MVCC data (see [`SideWrites`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideTable {
    /// The lease table (`lease/`).
    Leases,
    /// The plugin registry (`plugin/registry.rs`).
    Plugins,
    /// Users and roles (`auth/store.rs`).
    Auth,
    /// Active alarms (`alarm.rs`).
    Alarms,
}

/// Writes to the side tables inside the state machine's apply batch, so that they commit
/// atomically with the MVCC data and the applied position. The only way into that batch
/// other than MVCC requests: the KV keyspaces and the position cannot be reached from here.
/// Subsystems wrap it in writers that know their records (`lease::LeaseTable`,
/// `plugin::registry::PluginTable`, `auth::store::AuthTable`).
pub struct SideWrites<'b> {
    batch: &'b mut OwnedWriteBatch,
    storage: &'b Storage,
    /// Bumped per write, so the owning batch knows it has something to commit.
    pending: &'b mut usize,
}

impl<'b> SideWrites<'b> {
    /// For `mvcc::ApplyBatch`, which owns the batch.
    pub(crate) fn new(
        batch: &'b mut OwnedWriteBatch,
        storage: &'b Storage,
        pending: &'b mut usize,
    ) -> Self {
        SideWrites {
            batch,
            storage,
            pending,
        }
    }

    fn keyspace(&self, table: SideTable) -> &'b Keyspace {
        let storage: &'b Storage = self.storage;
        match table {
            SideTable::Leases => &storage.leases,
            SideTable::Plugins => &storage.plugins,
            SideTable::Auth => &storage.auth,
            SideTable::Alarms => &storage.alarms,
        }
    }

    pub fn insert(&mut self, table: SideTable, key: &[u8], value: Vec<u8>) {
        self.batch.insert(self.keyspace(table), key, value);
        *self.pending += 1;
    }

    pub fn remove(&mut self, table: SideTable, key: &[u8]) {
        self.batch.remove(self.keyspace(table), key);
        *self.pending += 1;
    }

    /// Records the Raft membership of the entry being applied (opaque bytes of `raft/`).
    pub fn set_membership(&mut self, membership: &[u8]) {
        self.batch
            .insert(&self.storage.meta, MEMBERSHIP, membership);
        *self.pending += 1;
    }
}
