//! Requests only the leader can serve, from any member.
//!
//! A client may talk to any member. Writes, read indexes, membership changes and the lessor's
//! requests (lease keepalives and remaining TTLs) run on the leader: a member that does
//! not lead sends them to the leader (`Peers::call`: over the long-lived `Peer.Calls` stream,
//! or a unary `Peer.Forward` for a large request) and relays the reply.
//!
//! Retries are safe only when the request cannot have been proposed: the leader said "not
//! leader", or the connection to it was never made. Once a forwarded write may have reached
//! the leader, a lost reply is reported as such (etcd's "request timed out, possibly due to
//! connection lost") rather than retried, so a write is never applied twice.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use cairn_proto::cairn_raft::CallKind;

use super::calls::CallError;
use crate::lease::LessorRequest;
use crate::raft::types::{Member, MembershipChange};
use crate::raft::{ProposeError, RaftNode};
use crate::state_machine::{Command, CommandResponse};

/// How long to wait for a leader to appear before a request fails with "no leader", per try.
const LEADER_WAIT: Duration = Duration::from_millis(100);

/// A leader-only request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(Command),
    /// The leader's commit index after a leadership check (ReadIndex).
    ReadIndex,
    Membership(MembershipChange),
    /// A question for the leader's lessor (see [`LessorHandler`]).
    Lessor(LessorRequest),
    /// HashKV at a revision, asked of one member (any member answers it, leader or not):
    /// the corruption check (`corrupt.rs`).
    HashKv(i64),
}

impl ForwardRequest {
    /// False for requests that may run twice without harm.
    fn changes_state(&self) -> bool {
        match self {
            ForwardRequest::Write(_) | ForwardRequest::Membership(_) => true,
            // Keepalives and lessor queries: renewing twice is renewing.
            ForwardRequest::ReadIndex | ForwardRequest::Lessor(_) | ForwardRequest::HashKv(_) => {
                false
            }
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    /// The response, and the log index of the write (so the forwarding member can wait until
    /// it has applied the write itself before answering its client).
    Write {
        response: CommandResponse,
        index: u64,
    },
    ReadIndex(u64),
    Membership(Vec<Member>),
    Lessor(i64),
    /// The hash and compact revision at the asked revision; `None` if this member cannot
    /// hash there (compacted away, or not applied yet).
    HashKv(Option<(u32, i64)>),
}

/// Answers [`LessorRequest`]s on the leader (its lessor owns lease deadlines). The API
/// registers one at start: answering takes the lease table and proposals, which live above
/// Raft.
pub trait LessorHandler: Send + Sync + 'static {
    fn handle(
        &self,
        request: LessorRequest,
    ) -> Pin<Box<dyn Future<Output = Result<i64, String>> + Send + 'static>>;
}

impl RaftNode {
    /// Runs `request` on the leader, wherever it is.
    pub(in crate::raft) async fn on_leader(
        &self,
        request: ForwardRequest,
    ) -> Result<ForwardReply, ProposeError> {
        let started = tokio::time::Instant::now();
        loop {
            let leader = self.status().leader;
            let outcome = match leader {
                Some(id) if id == self.id => self.serve_forwarded(request.clone()).await,
                Some(id) => self.forward_to(id, &request).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match outcome {
                Err(ProposeError::NotLeader { .. }) | Err(ProposeError::NotSent(_)) => {
                    // No leader yet, or leadership moved: wait for the next one.
                    if started.elapsed() >= self.leader_patience {
                        return Err(ProposeError::NoLeader);
                    }
                    self.wait_for_leader_change(leader, LEADER_WAIT).await;
                }
                other => return other,
            }
        }
    }

    /// Waits (up to `limit`) until a leader is known ([`RaftNode::status`]'s) that differs
    /// from `old`.
    ///
    /// It must judge by the same leader as `status`, which `on_leader` read `old` from. A
    /// leader frozen past its lease (SIGSTOP, a stalled disk) reports no leader while
    /// openraft's metrics still name itself: judged by openraft's, "a leader other than
    /// none" held at once, and every write it held spun in `on_leader` without yielding,
    /// starving the Raft core that would have learned the new leader.
    async fn wait_for_leader_change(&self, old: Option<u64>, limit: Duration) {
        let lease = self.leader_lease;
        let _ = self
            .raft
            .wait(Some(limit))
            .metrics(
                |m| crate::raft::known_leader(m, lease).is_some_and(|l| Some(l) != old),
                "leader change",
            )
            .await;
    }

    /// Sends `request` to member `leader` and returns its reply.
    async fn forward_to(
        &self,
        leader: u64,
        request: &ForwardRequest,
    ) -> Result<ForwardReply, ProposeError> {
        let Some(url) = self.peer_url(leader) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        if let Err(e) = self.peers.link(leader).await {
            return Err(ProposeError::NotSent(e.to_string()));
        }
        let payload =
            postcard::to_stdvec(request).map_err(|e| ProposeError::Stopped(e.to_string()))?;
        let envelope = self.peers.envelope(payload);
        let lost = match self
            .peers
            .call(&url, CallKind::Forward, envelope, None)
            .await
        {
            Ok(reply) => {
                return postcard::from_bytes::<Result<ForwardReply, ProposeError>>(&reply.payload)
                    .map_err(|e| {
                        ProposeError::Stopped(format!("bad reply from the leader: {e}"))
                    })?;
            }
            // Nothing was sent.
            Err(CallError::NotSent(why)) => return Err(ProposeError::NotSent(why)),
            // The leader refused it (another cluster, or fault injection): nothing ran.
            Err(CallError::Refused(s)) if s.code() == tonic::Code::FailedPrecondition => {
                return Err(ProposeError::NotSent(s.message().to_string()));
            }
            Err(CallError::Refused(s)) => s.message().to_string(),
            Err(CallError::Lost(why)) => why,
        };
        // It may have run. Requests that change nothing may always be sent again.
        if request.changes_state() {
            tracing::debug!(error = %lost, "forwarded request lost");
            Err(ProposeError::ConnectionLost)
        } else {
            Err(ProposeError::NotSent(lost))
        }
    }

    /// Serves a leader-only request on this member, which believes it leads.
    pub(in crate::raft) async fn serve_forwarded(
        &self,
        request: ForwardRequest,
    ) -> Result<ForwardReply, ProposeError> {
        match request {
            ForwardRequest::Write(command) => {
                let (response, index) = self.write_local(command).await?;
                Ok(ForwardReply::Write { response, index })
            }
            ForwardRequest::ReadIndex => self.read_index_local().await.map(ForwardReply::ReadIndex),
            ForwardRequest::Membership(change) => self
                .change_members_local(change)
                .await
                .map(ForwardReply::Membership),
            ForwardRequest::HashKv(revision) => self.hash_kv_local(revision).await,
            ForwardRequest::Lessor(request) => {
                let status = self.status();
                if !status.is_leader {
                    return Err(ProposeError::NotLeader {
                        leader: status.leader,
                    });
                }
                let Some(handler) = self.lessor.get() else {
                    return Err(ProposeError::Lessor("no lessor handler".into()));
                };
                handler
                    .handle(request)
                    .await
                    .map(ForwardReply::Lessor)
                    .map_err(ProposeError::Lessor)
            }
        }
    }

    /// This member's HashKV at `revision` (see [`ForwardRequest::HashKv`]).
    async fn hash_kv_local(&self, revision: i64) -> Result<ForwardReply, ProposeError> {
        let storage = self.storage.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            crate::mvcc::Mvcc::read_view(&storage)?.hash_kv(revision)
        })
        .await
        .map_err(|e| ProposeError::Stopped(e.to_string()))?;
        match hashed {
            Ok(hash) => Ok(ForwardReply::HashKv(Some(hash))),
            Err(crate::mvcc::Error::Mvcc(_)) => Ok(ForwardReply::HashKv(None)),
            Err(crate::mvcc::Error::Fault(f)) => Err(ProposeError::Stopped(f.to_string())),
        }
    }

    /// Member `member`'s HashKV at `revision` and its compact revision (`None`: it cannot
    /// hash there), asked over the peer channel; this member answers for itself.
    pub async fn hash_kv_of(
        &self,
        member: u64,
        revision: i64,
    ) -> Result<Option<(u32, i64)>, ProposeError> {
        let request = ForwardRequest::HashKv(revision);
        let reply = if member == self.id {
            self.serve_forwarded(request).await?
        } else {
            self.forward_to(member, &request).await?
        };
        match reply {
            ForwardReply::HashKv(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// Asks the leader's lessor (see [`LessorHandler`]).
    pub async fn ask_lessor(&self, request: LessorRequest) -> Result<i64, ProposeError> {
        match self.on_leader(ForwardRequest::Lessor(request)).await? {
            ForwardReply::Lessor(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers the handler for lessor requests; later calls are ignored.
    pub fn set_lessor_handler(&self, handler: std::sync::Arc<dyn LessorHandler>) {
        let _ = self.lessor.set(handler);
    }
}

pub(in crate::raft) fn unexpected(reply: &ForwardReply) -> ProposeError {
    ProposeError::Stopped(format!("unexpected reply from the leader: {reply:?}"))
}
