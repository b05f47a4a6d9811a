//! Adapts [`crate::state_machine::StateMachine`] to openraft's `RaftStateMachine`.
//!
//! Snapshots are files: `build_snapshot` makes the state durable, exports a consistent fjall
//! snapshot of the state keyspaces to `<data-dir>/snap/`, and records which file is current in
//! `current.meta`. The file handle is the snapshot data openraft passes around (and, later, what
//! the peer transport streams).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::log_store::invalid;
use super::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state_machine::{AppliedMarker, StateMachine};

/// Applied entries handed to one blocking task at most.
const APPLY_CHUNK: usize = 256;

pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, File>;

#[derive(Clone)]
pub struct StateMachineStore {
    sm: StateMachine,
    snapshot_dir: Arc<PathBuf>,
}

/// What `current.meta` records about the current snapshot.
#[derive(Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

impl StateMachineStore {
    pub fn new(sm: StateMachine, snapshot_dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&snapshot_dir)?;
        Ok(StateMachineStore {
            sm,
            snapshot_dir: Arc::new(snapshot_dir),
        })
    }

    fn current(&self) -> io::Result<Option<CurrentSnapshot>> {
        match fs::read(self.snapshot_dir.join("current.meta")) {
            Ok(raw) => postcard::from_bytes(&raw).map(Some).map_err(invalid),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes `file` (already in the snapshot dir and synced) the current snapshot.
    fn set_current(&self, meta: &SnapshotMeta, file: &str) -> io::Result<()> {
        let current = CurrentSnapshot {
            meta: meta.clone(),
            file: file.to_string(),
        };
        let raw = postcard::to_stdvec(&current).map_err(invalid)?;
        write_synced(&self.snapshot_dir, "current.meta", &raw)?;
        // Older snapshot files are no longer needed.
        for entry in fs::read_dir(&*self.snapshot_dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".snap") && name != file {
                let _ = fs::remove_file(self.snapshot_dir.join(&*name));
            }
        }
        Ok(())
    }

    fn build(&self) -> io::Result<Snapshot> {
        self.sm
            .persist()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = self.snapshot_dir.join("building.tmp");
        let mut out = BufWriter::new(File::create(&tmp)?);
        let marker = self.sm.export(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let meta = snapshot_meta(&marker)?;
        let name = snapshot_file_name(&meta);
        fs::rename(&tmp, self.snapshot_dir.join(&name))?;
        sync_dir(&self.snapshot_dir)?;
        self.set_current(&meta, &name)?;
        let snapshot = File::open(self.snapshot_dir.join(&name))?;
        Ok(Snapshot { meta, snapshot })
    }

    fn install(&self, meta: &SnapshotMeta, mut data: File) -> io::Result<()> {
        data.rewind()?;
        let name = snapshot_file_name(meta);
        let path = self.snapshot_dir.join(&name);
        // Copy through a temporary file: `data` may be the very file at `path` (a member
        // re-installing its own snapshot), which truncating first would destroy.
        let tmp = self.snapshot_dir.join("installing.tmp");
        let mut copy = File::create(&tmp)?;
        io::copy(&mut data, &mut copy)?;
        copy.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(&self.snapshot_dir)?;
        self.sm.import(&mut BufReader::new(File::open(&path)?))?;
        self.set_current(meta, &name)
    }
}

/// `<term>-<index>.snap`, so snapshot files sort and read as the log position they cover.
fn snapshot_file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!("{}-{}.snap", id.leader_id.term, id.index),
        None => "empty.snap".to_string(),
    }
}

/// Decodes the state machine's applied marker into openraft's terms.
fn decode_marker(marker: &AppliedMarker) -> io::Result<(Option<LogId>, StoredMembership)> {
    let applied = if marker.applied.is_empty() {
        None
    } else {
        postcard::from_bytes(&marker.applied).map_err(invalid)?
    };
    let membership = match &marker.membership {
        None => StoredMembership::default(),
        Some(raw) => postcard::from_bytes(raw).map_err(invalid)?,
    };
    Ok((applied, membership))
}

fn snapshot_meta(marker: &AppliedMarker) -> io::Result<SnapshotMeta> {
    let (last_log_id, last_membership) = decode_marker(marker)?;
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One log entry ready to apply: what the state machine needs and who waits for the answer.
struct Pending {
    command: Option<crate::state_machine::Command>,
    marker: AppliedMarker,
    responder: Option<openraft::storage::ApplyResponder<TypeConfig>>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build())
            .await
            .map_err(io::Error::other)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = File;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let marker = self
            .sm
            .applied_marker()
            .map_err(|e| io::Error::other(e.to_string()))?;
        decode_marker(&marker)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(first) = entries.next().await {
            // Take what is ready now, so one blocking task applies many entries.
            let mut chunk = vec![to_pending(first?)?];
            while chunk.len() < APPLY_CHUNK {
                match entries.next().now_or_never() {
                    Some(Some(item)) => chunk.push(to_pending(item?)?),
                    _ => break,
                }
            }
            let sm = self.sm.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut done = Vec::with_capacity(chunk.len());
                for p in chunk {
                    let response = sm.apply(p.command.as_ref(), &p.marker)?;
                    done.push((p.responder, response));
                }
                Ok::<_, crate::mvcc::StorageError>(done)
            })
            .await
            .map_err(io::Error::other)?
            .map_err(|e| io::Error::other(e.to_string()))?;
            for (responder, response) in done {
                if let Some(r) = responder {
                    r.send(response);
                }
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: File,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&meta, snapshot))
            .await
            .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match self.current()? {
            None => Ok(None),
            Some(c) => {
                let snapshot = File::open(self.snapshot_dir.join(&c.file))?;
                Ok(Some(Snapshot {
                    meta: c.meta,
                    snapshot,
                }))
            }
        }
    }
}

fn to_pending((entry, responder): EntryResponder<TypeConfig>) -> io::Result<Pending> {
    let applied = postcard::to_stdvec(&Some(entry.log_id)).map_err(invalid)?;
    let (command, membership) = match entry.payload {
        EntryPayload::Blank => (None, None),
        EntryPayload::Normal(cmd) => (Some(cmd), None),
        EntryPayload::Membership(m) => {
            let stored = StoredMembership::new(Some(entry.log_id), m);
            (None, Some(postcard::to_stdvec(&stored).map_err(invalid)?))
        }
    };
    Ok(Pending {
        command,
        marker: AppliedMarker {
            applied,
            membership,
        },
        responder,
    })
}
