//! Adapts [`crate::state_machine::StateMachine`] to openraft's `RaftStateMachine`.
//!
//! Snapshots cost O(1) to take. The state already lives on disk (etcd's backend works the same
//! way), so a snapshot for log compaction only needs the state to be durable up to a known log
//! id: `build_snapshot` pins a consistent fjall view, syncs, and reads the applied log id from
//! that view. The bytes are produced only when a snapshot has to travel (to a lagging member,
//! or into `install_snapshot`): [`SnapshotData::write_to`] streams the pinned view. A received
//! snapshot arrives as a file. After a restart, the current snapshot is a fresh view of the
//! recovered state, which is durable by definition.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::log_store::invalid;
use super::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state_machine::{AppliedMarker, StateMachine, StateView};

/// Applied entries handed to one blocking task at most.
const APPLY_CHUNK: usize = 256;
/// Chunks up to this size are applied on the async task itself.
const INLINE_APPLY: usize = 4;

pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// The data of a snapshot: a pinned view of this member's state, or a file received from a
/// peer, both in the format of [`StateView::export`].
#[derive(Debug)]
pub enum SnapshotData {
    View(StateView),
    File(File),
}

impl SnapshotData {
    /// Streams the snapshot's bytes into `out`.
    pub fn write_to(&mut self, out: &mut impl Write) -> io::Result<()> {
        match self {
            SnapshotData::View(view) => view.export(out),
            SnapshotData::File(file) => {
                file.rewind()?;
                io::copy(file, out).map(|_| ())
            }
        }
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    sm: StateMachine,
    /// Where received snapshots are staged before import.
    snapshot_dir: Arc<PathBuf>,
    /// The latest snapshot this member built or installed, pinned.
    current: Arc<Mutex<Option<(SnapshotMeta, StateView)>>>,
    /// The log index of the last applied entry, published as soon as it is applied (openraft's
    /// metrics report it later), for reads and forwarded writes waiting on this member.
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateMachineStore {
    pub fn new(sm: StateMachine, snapshot_dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&snapshot_dir)?;
        let marker = sm
            .applied_marker()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (applied, _) = decode_marker(&marker)?;
        Ok(StateMachineStore {
            sm,
            snapshot_dir: Arc::new(snapshot_dir),
            current: Arc::default(),
            applied: Arc::new(tokio::sync::watch::Sender::new(
                applied.map_or(0, |id| id.index),
            )),
        })
    }

    /// Follows the index of the last applied log entry.
    pub fn applied_index(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Pins a view, makes everything in it durable, and records it as the current snapshot.
    fn build(&self) -> io::Result<Snapshot> {
        let view = self.sm.view();
        // The view was taken before this sync, so everything it shows is on disk afterwards.
        self.sm.persist().map_err(io::Error::other)?;
        let meta = snapshot_meta(&view.marker().map_err(io::Error::other)?)?;
        self.set_current(meta.clone(), view.clone());
        Ok(Snapshot {
            meta,
            snapshot: SnapshotData::View(view),
        })
    }

    /// Re-pins the current snapshot's view at the state as it is now, if nothing has been
    /// applied since that snapshot (the same state, so the same snapshot): the old view stops
    /// holding back fjall's garbage collection. False if entries were applied since; then
    /// only a new snapshot can move the pin.
    pub fn repin(&self) -> io::Result<bool> {
        let view = self.sm.view();
        let now = snapshot_meta(&view.marker().map_err(io::Error::other)?)?;
        let mut current = self.current.lock().expect("snapshot lock poisoned");
        match current.as_mut() {
            // Nothing pinned by this store.
            None => Ok(true),
            Some((meta, pinned)) if meta.last_log_id == now.last_log_id => {
                *pinned = view;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    fn set_current(&self, meta: SnapshotMeta, view: StateView) {
        *self.current.lock().expect("snapshot lock poisoned") = Some((meta, view));
    }

    fn install(&self, meta: &SnapshotMeta, mut data: SnapshotData) -> io::Result<()> {
        let staged = self.snapshot_dir.join("installing.tmp");
        let mut file = BufWriter::new(File::create(&staged)?);
        data.write_to(&mut file)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        self.sm.import(&mut BufReader::new(File::open(&staged)?))?;
        fs::remove_file(&staged)?;
        self.set_current(meta.clone(), self.sm.view());
        if let Some(id) = &meta.last_log_id {
            self.applied.send_replace(id.index);
        }
        Ok(())
    }

    fn current_snapshot(&self) -> io::Result<Option<Snapshot>> {
        if let Some((meta, view)) = self.current.lock().expect("snapshot lock poisoned").clone() {
            return Ok(Some(Snapshot {
                meta,
                snapshot: SnapshotData::View(view),
            }));
        }
        // Nothing built since start: the recovered state is the snapshot, if anything was applied.
        let snapshot = self.build()?;
        if snapshot.meta.last_log_id.is_none() {
            *self.current.lock().expect("snapshot lock poisoned") = None;
            return Ok(None);
        }
        Ok(Some(snapshot))
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

/// One log entry ready to apply: what the state machine needs and who waits for the answer.
struct Pending {
    index: u64,
    command: Option<crate::state_machine::Command>,
    marker: AppliedMarker,
    responder: Option<openraft::storage::ApplyResponder<TypeConfig>>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build())
            .await
            .map_err(io::Error::other)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
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
            let mut last_index = chunk[0].index;
            while chunk.len() < APPLY_CHUNK {
                match entries.next().now_or_never() {
                    Some(Some(item)) => {
                        let pending = to_pending(item?)?;
                        last_index = pending.index;
                        chunk.push(pending);
                    }
                    _ => break,
                }
            }
            // Applying touches only memory (apply batches are not synced, see
            // `StateMachine::apply`), so a few entries run in place; a larger chunk goes to the
            // blocking pool rather than hold an async worker for long.
            let done = if chunk.len() <= INLINE_APPLY {
                apply_chunk(&self.sm, chunk)
            } else {
                let sm = self.sm.clone();
                tokio::task::spawn_blocking(move || apply_chunk(&sm, chunk))
                    .await
                    .map_err(io::Error::other)?
            }
            .map_err(|fault| {
                // openraft stops this member's Raft on a storage error; say why first.
                tracing::error!(%fault, "apply cannot go on; this member stops applying");
                io::Error::other(fault.to_string())
            })?;
            self.applied.send_replace(last_index);
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
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let this = self.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || this.install(&meta, snapshot))
            .await
            .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.current_snapshot())
            .await
            .map_err(io::Error::other)?
    }
}

type Applied = Vec<(
    Option<openraft::storage::ApplyResponder<TypeConfig>>,
    crate::state_machine::CommandResponse,
)>;

fn apply_chunk(sm: &StateMachine, chunk: Vec<Pending>) -> Result<Applied, crate::mvcc::Fault> {
    let responses = sm.apply(chunk.iter().map(|p| (p.command.as_ref(), &p.marker)))?;
    Ok(chunk
        .into_iter()
        .map(|p| p.responder)
        .zip(responses)
        .collect())
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
        index: entry.log_id.index,
        command,
        marker: AppliedMarker {
            applied,
            membership,
        },
        responder,
    })
}
