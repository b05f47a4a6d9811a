//! etcd's Maintenance service. Status, Hash, HashKV, Snapshot (Cairn's own file format,
//! `backup.rs`), Defragment (without stopping the member), MoveLeader and Alarm are served;
//! the rest answer `Unimplemented` until their issue lands (see docs/compatibility.md).

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use futures::stream::BoxStream;
use tonic::{Request, Response, Status};

use super::{Context, status};
use crate::alarm::{AlarmAction, AlarmKind, AlarmMember};
use crate::backup;
use crate::mvcc::Mvcc;
use crate::raft::ProposeError;
use crate::state_machine::{Command, CommandResponse, StateView};

/// The etcd API version Cairn speaks, reported by Status and /version.
pub const ETCD_VERSION: &str = "3.6.0";

/// A snapshot travels in messages of this many bytes (etcd's 32 KiB is many small messages
/// for a large store; gRPC's default 4 MiB receive limit is far above this).
const SNAPSHOT_CHUNK_BYTES: usize = 256 << 10;
/// Messages written ahead of the client: memory per snapshot stream stays about 1 MiB.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 4;

/// Cuts the snapshot into `SnapshotResponse`s, each saying how many bytes remain after it,
/// and hands them to the stream; a client that has gone away ends the write (`BrokenPipe`).
struct Chunks {
    tx: tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
    buf: Vec<u8>,
    remaining: u64,
    header: Option<pb::ResponseHeader>,
}

impl Chunks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        let message = pb::SnapshotResponse {
            header: self.header,
            remaining_bytes: self.remaining,
            blob,
            version: ETCD_VERSION.to_string(),
        };
        self.tx
            .blocking_send(Ok(message))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The active alarms as `Status.errors` lists them (etcd's words, trailing space included).
fn alarm_errors(ctx: &Context) -> Vec<String> {
    let alarms = ctx.alarms.read().expect("alarms lock poisoned");
    alarms
        .list(None)
        .into_iter()
        .map(|(member, kind)| format!("memberID:{member} alarm:{} ", kind.name()))
        .collect()
}

/// Compaction rounds in a defragment (see `Storage::defragment_round`).
const DEFRAGMENT_ROUNDS: usize = 3;

pub struct MaintenanceService {
    ctx: Context,
    /// Held while a defragment runs.
    defragmenting: tokio::sync::Mutex<()>,
}

impl MaintenanceService {
    pub fn new(ctx: Context) -> Self {
        MaintenanceService {
            ctx,
            defragmenting: tokio::sync::Mutex::new(()),
        }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction as Action;
        let caller = self.ctx.caller(&request)?;
        let req = request.into_inner();
        let kind = AlarmKind::from_proto(req.alarm);
        // etcd answers alarms without a header.
        let answer = |alarms: Vec<AlarmMember>| {
            Response::new(pb::AlarmResponse {
                header: None,
                alarms: alarms
                    .into_iter()
                    .map(|(member, kind)| pb::AlarmMember {
                        member_id: member,
                        alarm: kind.to_proto(),
                    })
                    .collect(),
            })
        };
        let action = match Action::try_from(req.action) {
            Ok(Action::Get) => {
                // After a read point, as etcd answers GET through Raft.
                self.ctx.read_barrier().await?;
                let alarms = self.ctx.alarms.read().expect("alarms lock poisoned");
                return Ok(answer(alarms.list(kind)));
            }
            Ok(Action::Activate) => AlarmAction::Activate,
            Ok(Action::Deactivate) => AlarmAction::Deactivate,
            Err(_) => return Err(status::invalid_argument("unknown alarm action")),
        };
        // Raising or clearing an alarm is root's (etcd 3.4.42 and later); apply checks it.
        self.ctx.check_admin(&caller)?;
        // NONE names no alarm: nothing to raise or clear.
        let Some(kind) = kind else {
            return Ok(answer(Vec::new()));
        };
        let command = Command::Alarm {
            action,
            member: req.member_id,
            kind,
        };
        match self.ctx.propose_as(caller, command).await? {
            CommandResponse::Alarm(changed, _) => Ok(answer(changed.into_iter().collect())),
            other => Err(status::internal(
                "raising or clearing an alarm",
                format!("unexpected response {other:?}"),
            )),
        }
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let storage = self.ctx.storage.clone();
        let (rev, db_size, in_use) = tokio::task::spawn_blocking(move || {
            let rev = Mvcc::read_view(&storage).map(|v| v.rev);
            (rev, storage.disk_space(), storage.disk_space_in_use())
        })
        .await
        .map_err(|e| status::internal("status task failed", e))?;
        let rev = rev.map_err(|e| status::storage_error(&e))?;
        let raft = self.ctx.raft.status();
        Ok(Response::new(pb::StatusResponse {
            header: self.ctx.header(rev),
            version: ETCD_VERSION.to_string(),
            db_size: db_size as i64,
            leader: raft.leader.unwrap_or(0),
            raft_index: raft.last_log_index,
            raft_term: raft.term,
            raft_applied_index: raft.applied_index,
            errors: alarm_errors(&self.ctx),
            db_size_in_use: in_use as i64,
            is_learner: raft.is_learner,
            storage_version: ETCD_VERSION.to_string(),
            db_size_quota: self.ctx.quota.limit.map_or(0, |q| q as i64),
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        // One at a time: a second request waits for the first.
        let _only = self.defragmenting.lock().await;
        let started = std::time::Instant::now();
        let before = (
            self.ctx.storage.disk_space(),
            self.ctx.storage.disk_space_in_use(),
        );
        // Round one merges tables and finds stale blob files; round two rewrites those; round
        // three lets fjall delete what the first two replaced. Before each, the Raft layer's
        // snapshot view is refreshed, so it pins nothing the rounds make obsolete.
        for _ in 0..DEFRAGMENT_ROUNDS {
            if let Err(e) = self
                .ctx
                .raft
                .refresh_snapshot(self.ctx.limits.request_timeout)
                .await
            {
                // Still worth going on: it reclaims all but what the old view pins.
                tracing::warn!(error = %e, "defragment: could not refresh the snapshot view");
            }
            let storage = self.ctx.storage.clone();
            tokio::task::spawn_blocking(move || storage.defragment_round())
                .await
                .map_err(|e| status::internal("defragment task failed", e))?
                .map_err(|e| status::internal("defragmenting", e))?;
        }
        let after = (
            self.ctx.storage.disk_space(),
            self.ctx.storage.disk_space_in_use(),
        );
        // The quota sees the space at once: a write right after an `alarm disarm` that
        // follows this defragment must not meet the size from before it.
        self.ctx.quota.measure(&self.ctx.storage);
        tracing::info!(
            before_bytes = before.0,
            before_in_use_bytes = before.1,
            after_bytes = after.0,
            after_in_use_bytes = after.1,
            took_ms = started.elapsed().as_millis() as u64,
            "defragmented"
        );
        let rev = self.ctx.read(true, |view| Ok(view.rev)).await?;
        Ok(Response::new(pb::DefragmentResponse {
            header: self.ctx.header(rev),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let (hash, rev) = self
            .ctx
            .read(true, |view| Ok((view.hash_all()?, view.rev)))
            .await?;
        Ok(Response::new(pb::HashResponse {
            header: self.ctx.header(rev),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let revision = request.into_inner().revision;
        let (hash, compact_revision, current) = self
            .ctx
            .read(true, move |view| {
                view.hash_kv(revision).map(|(h, c)| (h, c, view.rev))
            })
            .await?;
        let hash_revision = if revision <= 0 { current } else { revision };
        Ok(Response::new(pb::HashKvResponse {
            header: self.ctx.header(current),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = BoxStream<'static, Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        // The state as this member has applied it now (as etcd's: not a linearizable read).
        let view = StateView::of(&self.ctx.storage);
        let header = backup::Header::of(&view, self.ctx.cluster_id, self.ctx.member_id)
            .map_err(|e| status::internal("reading the snapshot's revisions", e))?;
        let (size, view, header) = tokio::task::spawn_blocking(move || {
            backup::size(&view, &header).map(|size| (size, view, header))
        })
        .await
        .map_err(|e| status::internal("snapshot task failed", e))?
        .map_err(|e| status::internal("sizing the snapshot", e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
        let response_header = self.ctx.header(header.revision);
        tokio::task::spawn_blocking(move || {
            let mut out = Chunks {
                tx: tx.clone(),
                buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
                remaining: size,
                header: response_header,
            };
            // `write` flushes its output last, which sends the final message.
            let written = backup::write(&view, &header, &mut out);
            let failure = match written {
                Ok(n) if n == size => return,
                Ok(n) => status::internal(
                    "writing the snapshot",
                    format!("it came to {n} bytes, not the {size} announced"),
                ),
                // The client went away: nobody to tell.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return,
                Err(e) => status::internal("writing the snapshot", e),
            };
            tracing::warn!(error = %failure.message(), "snapshot stream failed");
            let _ = tx.blocking_send(Err(failure));
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    /// Hands leadership to a voter. As in etcd, only the leader accepts it (etcdctl sends it
    /// to the leader's endpoint).
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        let target = request.into_inner().target_id;
        let raft = &self.ctx.raft;
        if !raft.status().is_leader {
            return Err(status::propose_error(&ProposeError::NotLeader {
                leader: None,
            }));
        }
        let voter = raft
            .members()
            .iter()
            .any(|m| m.id == target && !m.is_learner);
        if !voter {
            return Err(status::bad_leader_transferee());
        }
        raft.transfer_leader(target, self.ctx.limits.request_timeout)
            .await
            .map_err(|e| status::propose_error(&e))?;
        // etcd answers with an empty message, no header (and clients such as the Rust
        // etcd-client crate expect exactly that).
        Ok(Response::new(pb::MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        self.ctx.check_admin(&self.ctx.caller(&request)?)?;
        Err(status::unimplemented("Maintenance.Downgrade"))
    }
}
