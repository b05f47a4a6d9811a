//! Cairn's snapshot file: what `Maintenance.Snapshot` streams, `etcdctl snapshot save` and
//! `cairnctl snapshot save` write, and `cairnctl snapshot status|restore` read.
//!
//! A snapshot file is a point-in-time copy of one member's whole state (every keyspace of
//! `storage::STATE_KEYSPACES`: keys with their history, leases, users and roles, the plugin
//! registry with its modules, the applied membership), framed so that a reader can tell a
//! whole, unaltered file from anything else before it writes a byte. All integers are
//! big-endian:
//!
//! ```text
//! magic      "CAIRNSNP"                                   8 bytes
//! format     1                                            u32
//! header     length u32, then JSON (`Header`)
//! records    keyspace index u8 (< 0xFF), key length u32, key, value length u32, value
//! end        0xFF, then the number of records             u64
//! padding    length u16 (< 512), then that many zero bytes
//! checksum   SHA-256 of every byte above                  32 bytes
//! ```
//!
//! The padding makes the file's size 32 more than a multiple of 512, the shape of etcd's own
//! snapshots (a bolt database of 512-byte-aligned pages, then its SHA-256), which
//! `etcdctl snapshot save` checks before it keeps a file.
//!
//! The records are exactly those of a Raft snapshot (`StateView::export`). Nothing may follow
//! the checksum. Restoring ([`restore`]) reads the file twice, first only to verify it, and
//! writes the new data dir under a temporary name that is renamed into place only when it is
//! complete and durable, so a truncated or corrupted file, or a crash in the middle, leaves
//! no data dir behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::raft::MemberInfo;
use crate::state_machine::{StateView, write_record};
use crate::storage::{self, Storage};

/// The first bytes of every snapshot file.
pub const MAGIC: &[u8; 8] = b"CAIRNSNP";
/// The layout described in this module's documentation.
pub const FORMAT: u32 = 1;
/// Marks the end of the records (no keyspace has this index).
const END: u8 = 0xFF;
/// Bounds a reader trusts before the checksum has been checked: larger lengths mean the file
/// is damaged, and are refused without allocating them.
const MAX_HEADER_BYTES: u32 = 64 << 10;
const MAX_KEY_BYTES: u32 = 64 << 10;
const MAX_VALUE_BYTES: u32 = 256 << 20;
/// A file's size is `ALIGN * n + 32` (see the padding above).
const ALIGN: u64 = 512;
/// Restore commits the new data dir's records in batches of about this many bytes.
const RESTORE_BATCH_BYTES: usize = 8 << 20;

/// What a snapshot says about itself, ahead of its records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The Cairn version that wrote the file.
    pub cairn_version: String,
    /// The cluster and member the snapshot was taken from.
    pub cluster_id: u64,
    pub member_id: u64,
    /// The store's revision and compact revision in the snapshot.
    pub revision: i64,
    pub compact_revision: i64,
    /// When the snapshot was taken, in milliseconds since the Unix epoch (the member's clock).
    pub created_unix_ms: i64,
}

impl Header {
    /// The header of a snapshot of `view`, taken now by the member `member_id`.
    pub fn of(view: &StateView, cluster_id: u64, member_id: u64) -> io::Result<Header> {
        let revisions = view.revisions().map_err(io::Error::other)?;
        Ok(Header {
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_id,
            member_id,
            revision: revisions.current,
            compact_revision: revisions.compact,
            created_unix_ms: crate::wall_clock_ms(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of strings and integers always serializes")
    }
}

/// Why a file is not a snapshot Cairn can use. Every variant is found before restore writes
/// anything.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("cannot read the snapshot: {0}")]
    Io(#[source] io::Error),
    #[error(
        "not a Cairn snapshot (it does not start with {:?})",
        String::from_utf8_lossy(MAGIC)
    )]
    NotASnapshot,
    #[error("snapshot format {0} is not supported (this Cairn reads format {FORMAT})")]
    UnsupportedFormat(u32),
    #[error("the snapshot is truncated (it ends before its checksum)")]
    Truncated,
    #[error("the snapshot is corrupted: {0}")]
    Corrupt(String),
    #[error(
        "the snapshot is corrupted: its checksum is {expected} but its contents hash to {actual}"
    )]
    Checksum { expected: String, actual: String },
}

impl From<io::Error> for SnapshotFileError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotFileError::Truncated
        } else {
            SnapshotFileError::Io(e)
        }
    }
}

/// What a whole read of a snapshot file found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub header: Header,
    /// The file's size in bytes.
    pub size: u64,
    /// The SHA-256 the file ends with (hex), which its contents matched.
    pub sha256: String,
    /// Live keys (etcd's "total keys").
    pub keys: u64,
    /// Stored revisions of keys (history).
    pub history: u64,
    pub leases: u64,
    pub users: Vec<String>,
    pub roles: Vec<String>,
    /// Installed plugins and bindings, by name.
    pub plugins: Vec<String>,
    pub bindings: Vec<String>,
}

/// Counts what a snapshot holds as its records stream by.
struct Census {
    counts: [u64; 256],
    users: Vec<String>,
    roles: Vec<String>,
    plugins: Vec<String>,
    bindings: Vec<String>,
}

impl Census {
    fn new() -> Self {
        Census {
            counts: [0; 256],
            users: Vec::new(),
            roles: Vec::new(),
            plugins: Vec::new(),
            bindings: Vec::new(),
        }
    }

    fn count(&mut self, keyspace: u8, key: &[u8]) {
        self.counts[keyspace as usize] += 1;
        let named = |prefix: &str| {
            key.strip_prefix(prefix.as_bytes())
                .map(|name| String::from_utf8_lossy(name).into_owned())
        };
        match storage::STATE_KEYSPACES[keyspace as usize] {
            storage::AUTH => {
                self.users.extend(named(crate::auth::store::USER));
                self.roles.extend(named(crate::auth::store::ROLE));
            }
            storage::PLUGINS => {
                self.plugins.extend(named(crate::plugin::registry::PLUGIN));
                self.bindings
                    .extend(named(crate::plugin::registry::BINDING));
            }
            _ => {}
        }
    }

    fn of(&self, name: &str) -> u64 {
        storage::STATE_KEYSPACES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |idx| self.counts[idx])
    }
}

/// Hashes everything written through it and counts the bytes.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes everything read through it and counts the bytes.
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The exact size in bytes of the snapshot [`write`] makes of `view` with `header`, found
/// without reading the values stored apart from their keys.
pub fn size(view: &StateView, header: &Header) -> io::Result<u64> {
    let mut total = (MAGIC.len() + 4 + 4 + header.encode().len() + 1 + 8 + 2) as u64;
    view.for_each_size(|key, value| total += (1 + 4 + key + 4 + value) as u64)?;
    Ok(total + padding(total) + 32)
}

/// Writes a snapshot of `view` to `out`, in bounded memory; returns the number of bytes.
pub fn write(view: &StateView, header: &Header, out: impl Write) -> io::Result<u64> {
    let mut out = Hashing {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let header = header.encode();
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT.to_be_bytes())?;
    out.write_all(&(header.len() as u32).to_be_bytes())?;
    out.write_all(&header)?;
    let mut records = 0u64;
    view.for_each_record(|keyspace, key, value| {
        records += 1;
        write_record(&mut out, keyspace, key, value)
    })?;
    out.write_all(&[END])?;
    out.write_all(&records.to_be_bytes())?;
    let pad = padding(out.bytes + 2);
    out.write_all(&(pad as u16).to_be_bytes())?;
    out.write_all(&vec![0u8; pad as usize])?;
    let digest = out.hasher.clone().finalize();
    out.inner.write_all(&digest)?;
    out.inner.flush()?;
    Ok(out.bytes + digest.len() as u64)
}

/// Reads a whole snapshot from `input`, calling `each` with every record (keyspace index,
/// key, value), and checks its framing and checksum. `each` sees records before the
/// checksum is known: a caller that must not act on a damaged file reads it twice.
pub fn read(
    input: impl Read,
    mut each: impl FnMut(u8, &[u8], &[u8]) -> io::Result<()>,
) -> Result<Summary, SnapshotFileError> {
    let mut input = Verifying {
        inner: input,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut magic = [0u8; 8];
    match input.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => return Err(SnapshotFileError::NotASnapshot),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(SnapshotFileError::NotASnapshot);
        }
        Err(e) => return Err(SnapshotFileError::Io(e)),
    }
    let format = read_u32(&mut input)?;
    if format != FORMAT {
        return Err(SnapshotFileError::UnsupportedFormat(format));
    }
    let header_bytes = read_bytes(&mut input, MAX_HEADER_BYTES, "header")?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| SnapshotFileError::Corrupt(format!("unreadable header: {e}")))?;
    let mut census = Census::new();
    let mut records = 0u64;
    loop {
        let mut keyspace = [0u8; 1];
        input.read_exact(&mut keyspace)?;
        let keyspace = keyspace[0];
        if keyspace == END {
            break;
        }
        if keyspace as usize >= storage::STATE_KEYSPACES.len() {
            return Err(SnapshotFileError::Corrupt(format!(
                "record {records} names keyspace {keyspace}, which does not exist"
            )));
        }
        let key = read_bytes(&mut input, MAX_KEY_BYTES, "key")?;
        let value = read_bytes(&mut input, MAX_VALUE_BYTES, "value")?;
        census.count(keyspace, &key);
        each(keyspace, &key, &value).map_err(SnapshotFileError::Io)?;
        records += 1;
    }
    let mut count = [0u8; 8];
    input.read_exact(&mut count)?;
    let declared = u64::from_be_bytes(count);
    let mut pad = [0u8; 2];
    input.read_exact(&mut pad)?;
    let pad = u16::from_be_bytes(pad);
    if u64::from(pad) >= ALIGN {
        return Err(SnapshotFileError::Corrupt(format!(
            "{pad} bytes of padding"
        )));
    }
    let mut zeros = vec![0u8; pad as usize];
    input.read_exact(&mut zeros)?;
    let actual = hex(&input.hasher.clone().finalize());
    let mut expected = [0u8; 32];
    input.inner.read_exact(&mut expected)?;
    let expected = hex(&expected);
    if expected != actual {
        return Err(SnapshotFileError::Checksum { expected, actual });
    }
    if zeros.iter().any(|b| *b != 0) || (input.bytes + 32) % ALIGN != 32 {
        return Err(SnapshotFileError::Corrupt("bad padding".to_string()));
    }
    if declared != records {
        return Err(SnapshotFileError::Corrupt(format!(
            "it declares {declared} records but holds {records}"
        )));
    }
    let mut rest = [0u8; 1];
    if input.inner.read(&mut rest).map_err(SnapshotFileError::Io)? != 0 {
        return Err(SnapshotFileError::Corrupt(
            "bytes follow its checksum".to_string(),
        ));
    }
    Ok(Summary {
        keys: census.of(storage::KV_META),
        history: census.of(storage::KV_REVS),
        leases: census.of(storage::LEASES),
        users: census.users,
        roles: census.roles,
        plugins: census.plugins,
        bindings: census.bindings,
        header,
        size: input.bytes + 32,
        sha256: expected,
    })
}

/// Reads and verifies the snapshot file at `path`.
pub fn status(path: &Path) -> Result<Summary, SnapshotFileError> {
    let file = fs::File::open(path).map_err(SnapshotFileError::Io)?;
    read(BufReader::with_capacity(1 << 20, file), |_, _, _| Ok(()))
}

/// Zero bytes that bring `written` (everything up to the padding) to a multiple of
/// [`ALIGN`].
fn padding(written: u64) -> u64 {
    (ALIGN - written % ALIGN) % ALIGN
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut raw = [0u8; 4];
    input.read_exact(&mut raw)?;
    Ok(u32::from_be_bytes(raw))
}

fn read_bytes(input: &mut impl Read, max: u32, what: &str) -> Result<Vec<u8>, SnapshotFileError> {
    let len = read_u32(input)?;
    if len > max {
        return Err(SnapshotFileError::Corrupt(format!(
            "a {what} of {len} bytes (at most {max} are possible)"
        )));
    }
    let mut buf = Vec::with_capacity(len as usize);
    input.take(u64::from(len)).read_to_end(&mut buf)?;
    if buf.len() != len as usize {
        return Err(SnapshotFileError::Truncated);
    }
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The new cluster a snapshot is restored into, and which member of it this data dir is for
/// (etcd's `snapshot restore` flags).
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub name: String,
    pub data_dir: PathBuf,
    /// `--initial-cluster`: every member's name and peer URLs.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
}

/// Why a restore did not happen. Nothing is left in the data dir's place in any case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    #[error("data-dir {0:?} exists and is not empty; restore into a new directory")]
    DataDirExists(PathBuf),
    #[error("{0}")]
    Plan(String),
    #[error("cannot write {dir:?}: {reason}")]
    Write { dir: PathBuf, reason: String },
}

/// What [`restore`] made.
#[derive(Clone, Debug)]
pub struct Restored {
    pub summary: Summary,
    pub member_id: u64,
    pub cluster_id: u64,
}

/// Restores the snapshot at `file` into a new data dir for one member of a new cluster: the
/// same keys, revisions, history, leases, users, roles and plugins; a new identity (name, IDs
/// from `--initial-cluster` and its token, as a member founded with those flags would have);
/// no Raft log. Started with `--name` and `--data-dir`, the member founds the new cluster
/// with the planned members, as `--initial-cluster-state new` would.
pub fn restore(file: &Path, plan: &RestorePlan) -> Result<Restored, RestoreError> {
    let (member_id, cluster_id, founding) = plan_members(plan)?;
    // First pass: the whole file must be good before anything is written.
    let summary = status(file)?;
    let dir = &plan.data_dir;
    let occupied = fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(RestoreError::DataDirExists(dir.clone()));
    }
    let staging = staging_dir(dir);
    let write_error = |reason: String| RestoreError::Write {
        dir: dir.clone(),
        reason,
    };
    if staging.exists() {
        // Left by a restore that crashed; it was never renamed into place, so nothing uses it.
        fs::remove_dir_all(&staging).map_err(|e| write_error(e.to_string()))?;
    }
    let result = fill(
        file, &staging, &summary, member_id, cluster_id, plan, founding,
    );
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if dir.exists() {
        // An empty directory: replaced by the complete one.
        fs::remove_dir(dir).map_err(|e| write_error(e.to_string()))?;
    }
    fs::rename(&staging, dir).map_err(|e| write_error(e.to_string()))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| write_error(e.to_string()))?;
    }
    Ok(Restored {
        summary,
        member_id,
        cluster_id,
    })
}

/// The new data dir is written here, next to where it goes, and renamed when whole.
fn staging_dir(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".restoring");
    dir.with_file_name(name)
}

/// This member's ID, the cluster's ID and the founding membership, as founding members
/// started with the plan's flags compute them (`identity.rs`).
fn plan_members(plan: &RestorePlan) -> Result<(u64, u64, BTreeMap<u64, MemberInfo>), RestoreError> {
    let Some((_, mine)) = plan.initial_cluster.iter().find(|(n, _)| *n == plan.name) else {
        return Err(RestoreError::Plan(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            plan.name
        )));
    };
    let mut mine = mine.clone();
    let mut advertised = plan.initial_advertise_peer_urls.clone();
    mine.sort();
    advertised.sort();
    if mine != advertised {
        return Err(RestoreError::Plan(format!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            plan.name,
            mine.join(","),
            advertised.join(",")
        )));
    }
    let founding =
        crate::identity::founding_members(&plan.initial_cluster, &plan.initial_cluster_token);
    if founding.len() != plan.initial_cluster.len() {
        return Err(RestoreError::Plan(
            "two members of --initial-cluster have the same peer URLs".to_string(),
        ));
    }
    let ids: Vec<u64> = founding.keys().copied().collect();
    let member_id = crate::identity::member_id(
        &plan.initial_advertise_peer_urls,
        &plan.initial_cluster_token,
    );
    Ok((member_id, crate::identity::cluster_id(&ids), founding))
}

/// Second pass: the records into a fresh store under `staging`, then the identity.
fn fill(
    file: &Path,
    staging: &Path,
    summary: &Summary,
    member_id: u64,
    cluster_id: u64,
    plan: &RestorePlan,
    founding: BTreeMap<u64, MemberInfo>,
) -> Result<(), RestoreError> {
    let write_error = |reason: String| RestoreError::Write {
        dir: plan.data_dir.clone(),
        reason,
    };
    fs::create_dir_all(staging).map_err(|e| write_error(e.to_string()))?;
    let storage = Storage::open(&staging.join("db")).map_err(|e| write_error(e.to_string()))?;
    let meta = storage::STATE_KEYSPACES
        .iter()
        .position(|n| *n == storage::META)
        .expect("meta is a state keyspace");
    let mut batch = storage.db.batch();
    let mut pending = 0usize;
    let input = BufReader::with_capacity(
        1 << 20,
        fs::File::open(file).map_err(SnapshotFileError::Io)?,
    );
    let second = read(input, |keyspace, key, value| {
        let name = storage::STATE_KEYSPACES[keyspace as usize];
        let ks = storage
            .state_keyspace(name)
            .expect("read() checked the keyspace index");
        if keyspace as usize == meta {
            match key {
                // The new cluster's membership comes from the plan, not the old cluster's.
                storage::MEMBERSHIP => return Ok(()),
                // The same revisions, but nothing of the new, empty log applied yet.
                crate::mvcc::POSITION => {
                    batch.insert(ks, key, crate::mvcc::position_without_log(value));
                    return Ok(());
                }
                _ => {}
            }
        }
        batch.insert(ks, key, value);
        pending += key.len() + value.len();
        if pending >= RESTORE_BATCH_BYTES {
            std::mem::replace(&mut batch, storage.db.batch())
                .commit()
                .map_err(|e| io::Error::other(e.to_string()))?;
            pending = 0;
        }
        Ok(())
    })?;
    if second.sha256 != summary.sha256 {
        return Err(RestoreError::File(SnapshotFileError::Corrupt(
            "the file changed while it was being restored".to_string(),
        )));
    }
    batch.commit().map_err(|e| write_error(e.to_string()))?;
    storage
        .db
        .persist(fjall::PersistMode::SyncAll)
        .map_err(|e| write_error(e.to_string()))?;
    let identity = crate::identity::Identity {
        name: plan.name.clone(),
        member_id,
        peer_urls: plan.initial_advertise_peer_urls.clone(),
        cluster_id,
        cluster_token: plan.initial_cluster_token.clone(),
    };
    crate::identity::save_founding(&storage, &founding).map_err(|e| write_error(e.to_string()))?;
    identity
        .save(&storage)
        .map_err(|e| write_error(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
#[path = "backup_test.rs"]
mod tests;
