//! Membership: etcd's member add / remove / update / promote on top of openraft's joint
//! consensus, run on the leader (other members forward them, see `forward.rs`).
//!
//! etcd semantics kept here:
//! - a member added as a voter counts toward the quorum at once, started or not;
//! - a learner receives the log but does not vote; at most one learner at a time
//!   (etcd's `--max-learners` default), and only a learner that is nearly caught up (90% of
//!   the leader's log, etcd's rule) may be promoted;
//! - a member added by `member add` has no name or client URLs until it starts and publishes
//!   them (etcd's "unstarted" member).
//!
//! Changes are serialized on the leader, so each one sees the result of the last.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::forward::{ForwardReply, ForwardRequest, unexpected};
use super::types::MemberInfo;
use super::{ProposeError, RaftNode};

/// etcd's `--max-learners` default.
const MAX_LEARNERS: usize = 1;

/// How long a membership change waits for the previous one to commit.
const MEMBERSHIP_SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// A member as MemberList shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub info: MemberInfo,
    pub is_learner: bool,
}

/// A membership change, as the API asks for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    Add {
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove {
        id: u64,
    },
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
    Promote {
        id: u64,
    },
    /// A started member records its name and client URLs (etcd's attribute publish).
    Publish {
        id: u64,
        info: MemberInfo,
    },
}

/// etcd's membership errors.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipError {
    #[error("member ID already exist")]
    MemberExists,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("member not found")]
    MemberNotFound,
    #[error("can only promote a learner member")]
    NotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStarted,
}

impl RaftNode {
    /// The members as this member last saw them (voters and learners, by ID).
    pub fn members(&self) -> Vec<Member> {
        let membership = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        to_members(&membership)
    }

    /// The members in the latest membership this member knows to be committed.
    pub fn committed_members(&self) -> Vec<Member> {
        let membership = self
            .raft
            .metrics()
            .borrow_watched()
            .committed_membership_config
            .clone();
        to_members(&membership)
    }

    /// True if another member's committed membership no longer lists this member. A removed
    /// member learns it this way: the leader stops replicating to it before it could apply
    /// its own removal.
    pub async fn removed_by_peers(&self) -> bool {
        let urls: Vec<String> = self
            .members()
            .into_iter()
            .filter(|m| m.id != self.id)
            .filter_map(|m| m.info.peer_urls.first().cloned())
            .collect();
        // Over this member's own channels: no new connection every few seconds.
        let limit = std::time::Duration::from_secs(1);
        match super::hello_through(&self.peers, &urls, limit).await {
            Ok(reply) => {
                reply.cluster_id == self.cluster_id()
                    && !reply.members.is_empty()
                    && reply.members.iter().all(|m| m.id != self.id)
            }
            Err(_) => false,
        }
    }
}

fn to_members(stored: &super::types::StoredMembership) -> Vec<Member> {
    let voters: BTreeSet<u64> = stored.voter_ids().collect();
    stored
        .nodes()
        .map(|(id, info)| Member {
            id: *id,
            info: info.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

impl RaftNode {
    /// The first peer URL of member `id`.
    pub(super) fn peer_url(&self, id: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config
            .get_node(&id)
            .and_then(|info| info.peer_urls.first().cloned())
    }

    /// Applies `change` on the leader; returns the members afterwards.
    pub async fn change_members(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<Member>, ProposeError> {
        match self.on_leader(ForwardRequest::Membership(change)).await? {
            ForwardReply::Membership(members) => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    pub(super) async fn change_members_local(
        &self,
        change: MembershipChange,
    ) -> Result<Vec<Member>, ProposeError> {
        let _serial = self.membership_lock.lock().await;
        // openraft refuses (and logs an error) while the last membership is uncommitted, as
        // it is right after a cluster is founded: wait for it briefly. On timeout the change
        // is tried anyway and its error returned.
        let _ = self
            .raft
            .wait(Some(MEMBERSHIP_SETTLE))
            .metrics(
                |m| m.membership_config.log_id() == m.committed_membership_config.log_id(),
                "membership committed",
            )
            .await;
        let members: BTreeMap<u64, Member> =
            self.members().into_iter().map(|m| (m.id, m)).collect();
        let fail = |e: MembershipError| Err(ProposeError::Membership(e));
        let result = match change {
            MembershipChange::Add {
                id,
                peer_urls,
                is_learner,
            } => {
                // URLs first: IDs derive from URLs, so a taken URL usually means a taken ID too,
                // and etcd names the URL.
                if urls_taken(&members, None, &peer_urls) {
                    return fail(MembershipError::PeerUrlExists);
                }
                if members.contains_key(&id) {
                    return fail(MembershipError::MemberExists);
                }
                let info = MemberInfo {
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                if is_learner {
                    if members.values().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                        return fail(MembershipError::TooManyLearners);
                    }
                    self.raft.add_learner(id, info, false).await
                } else {
                    let add = ChangeMembers::AddVoters(BTreeMap::from([(id, info)]));
                    self.raft.change_membership(add, false).await
                }
            }
            MembershipChange::Remove { id } => {
                let Some(member) = members.get(&id) else {
                    return fail(MembershipError::MemberNotFound);
                };
                let change = if member.is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await
            }
            MembershipChange::Update { id, peer_urls } => {
                let Some(member) = members.get(&id) else {
                    return fail(MembershipError::MemberNotFound);
                };
                if urls_taken(&members, Some(id), &peer_urls) {
                    return fail(MembershipError::PeerUrlExists);
                }
                let info = MemberInfo {
                    peer_urls,
                    ..member.info.clone()
                };
                let set = ChangeMembers::SetNodes(BTreeMap::from([(id, info)]));
                self.raft.change_membership(set, false).await
            }
            MembershipChange::Promote { id } => {
                let Some(member) = members.get(&id) else {
                    return fail(MembershipError::MemberNotFound);
                };
                if !member.is_learner {
                    return fail(MembershipError::NotLearner);
                }
                if !self.learner_caught_up(id) {
                    return fail(MembershipError::LearnerNotReady);
                }
                let add = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                self.raft.change_membership(add, false).await
            }
            MembershipChange::Publish { id, info } => {
                let Some(member) = members.get(&id) else {
                    return fail(MembershipError::MemberNotFound);
                };
                if member.info == info {
                    return Ok(members.into_values().collect());
                }
                let set = ChangeMembers::SetNodes(BTreeMap::from([(id, info)]));
                self.raft.change_membership(set, false).await
            }
        };
        match result {
            Ok(_) => Ok(self.members()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(ProposeError::Stopped(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// etcd's readiness rule: the learner has at least 90% of the leader's log.
    fn learner_caught_up(&self, id: u64) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let leader_index = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |log_id| log_id.index);
        matched * 10 >= leader_index * 9
    }
}

/// True if any of `urls` belongs to a member other than `except`.
fn urls_taken(members: &BTreeMap<u64, Member>, except: Option<u64>, urls: &[String]) -> bool {
    members
        .values()
        .filter(|m| Some(m.id) != except)
        .any(|m| m.info.peer_urls.iter().any(|u| urls.contains(u)))
}
