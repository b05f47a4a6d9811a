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
//!
//! With etcd's `--strict-reconfig-check` (on by default) a change is refused up front when it
//! would leave the cluster without a quorum of started members, or when it needs members that
//! the leader has not heard from lately (`ready_to_add_voter`, `ready_to_remove_voter`). A
//! voter is added as a learner and promoted at once, without waiting for it to catch up
//! (openraft's `AddVoters` waits for that, forever for a member that never starts): as in
//! etcd, the new voter counts toward the quorum from then on.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::transport::forward::{ForwardReply, ForwardRequest, unexpected};
use super::types::{Member, MemberInfo, MembershipChange, TypeConfig};
use super::{ProposeError, RaftNode};

/// etcd's `--max-learners` default.
const MAX_LEARNERS: usize = 1;

/// How long a membership change waits for the previous one to commit.
const MEMBERSHIP_SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

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
    #[error("unhealthy cluster")]
    Unhealthy,
}

/// Member `id`, or etcd's "member not found".
fn known(members: &BTreeMap<u64, Member>, id: u64) -> Result<&Member, MembershipError> {
    members.get(&id).ok_or(MembershipError::MemberNotFound)
}

/// etcd's checks on a member add, in etcd's order; the new member's record.
fn addition(
    members: &BTreeMap<u64, Member>,
    id: u64,
    peer_urls: Vec<String>,
    is_learner: bool,
) -> Result<MemberInfo, MembershipError> {
    // URLs first: IDs derive from URLs, so a taken URL usually means a taken ID too, and
    // etcd names the URL.
    if urls_taken(members, None, &peer_urls) {
        return Err(MembershipError::PeerUrlExists);
    }
    if members.contains_key(&id) {
        return Err(MembershipError::MemberExists);
    }
    if is_learner && members.values().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
        return Err(MembershipError::TooManyLearners);
    }
    Ok(MemberInfo {
        name: String::new(),
        peer_urls,
        client_urls: Vec::new(),
    })
}

/// The change that gives member `id` new peer URLs, after etcd's checks.
fn new_peer_urls(
    members: &BTreeMap<u64, Member>,
    id: u64,
    peer_urls: Vec<String>,
) -> Result<ChangeMembers<u64, MemberInfo>, MembershipError> {
    let member = known(members, id)?;
    if urls_taken(members, Some(id), &peer_urls) {
        return Err(MembershipError::PeerUrlExists);
    }
    let info = MemberInfo {
        peer_urls,
        ..member.info.clone()
    };
    Ok(ChangeMembers::SetNodes(BTreeMap::from([(id, info)])))
}

/// etcd's `IsReadyToAddVotingMember`: after adding a voter, at least a quorum of the voters
/// must be started (have published their name). Adding a second voter to a one-member cluster
/// is the exception etcd makes (it is how a restored member gets company).
fn ready_to_add_voter(members: &BTreeMap<u64, Member>) -> bool {
    let (voters, started) = started_voters(members, None);
    let total = voters + 1; // and the voter being added, unstarted
    (started == 1 && total == 2) || started > total / 2
}

/// etcd's `IsReadyToRemoveVotingMember`: the voters left must keep a started quorum.
fn ready_to_remove_voter(members: &BTreeMap<u64, Member>, id: u64) -> bool {
    let (voters, started) = started_voters(members, Some(id));
    started > voters / 2
}

/// How many voters there are, leaving out `except`, and how many of them have started.
fn started_voters(members: &BTreeMap<u64, Member>, except: Option<u64>) -> (usize, usize) {
    let voters = members
        .values()
        .filter(|m| !m.is_learner && Some(m.id) != except);
    voters.fold((0, 0), |(total, started), m| {
        (total + 1, started + usize::from(!m.info.name.is_empty()))
    })
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
        if let MembershipChange::Add {
            is_learner: false, ..
        } = &change
        {
            // Refuse at once what the rule refuses, without queueing behind a change that
            // is still waiting for a member to start; checked again under the lock.
            self.may_add_voter(&self.members().into_iter().map(|m| (m.id, m)).collect())?;
        }
        let serial = self.membership_lock.clone().lock_owned().await;
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
        let result = match change {
            MembershipChange::Add {
                id,
                peer_urls,
                is_learner,
            } => {
                let info = addition(&members, id, peer_urls, is_learner)?;
                if is_learner {
                    self.raft.add_learner(id, info, false).await
                } else {
                    self.may_add_voter(&members)?;
                    match self.raft.add_learner(id, info, false).await {
                        Ok(_) => return self.promote_new_voter(id, serial).await,
                        Err(e) => Err(e),
                    }
                }
            }
            MembershipChange::Remove { id } => {
                let member = known(&members, id)?;
                if !member.is_learner {
                    self.may_remove_voter(&members, id)?;
                }
                let change = if member.is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await
            }
            MembershipChange::Update { id, peer_urls } => {
                let set = new_peer_urls(&members, id, peer_urls)?;
                self.raft.change_membership(set, false).await
            }
            MembershipChange::Promote { id } => {
                if !known(&members, id)?.is_learner {
                    return Err(MembershipError::NotLearner.into());
                }
                if !self.learner_caught_up(id) {
                    return Err(MembershipError::LearnerNotReady.into());
                }
                let add = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                self.raft.change_membership(add, false).await
            }
            MembershipChange::Publish { id, info } => {
                if known(&members, id)?.info == info {
                    return Ok(members.into_values().collect());
                }
                let set = ChangeMembers::SetNodes(BTreeMap::from([(id, info)]));
                self.raft.change_membership(set, false).await
            }
        };
        drop(serial);
        result.map_err(change_error)?;
        Ok(self.members())
    }

    /// Makes the just-added learner `id` a voter. The change runs on its own task, holding
    /// the membership lock until it is done: when the new voter is needed for the quorum (a
    /// one-member cluster growing to two, as etcd allows) it completes only once that member
    /// starts. The caller waits a bounded time, and answers as etcd does either way: the
    /// member is in the cluster as a voter from now on.
    async fn promote_new_voter(
        &self,
        id: u64,
        serial: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<Vec<Member>, ProposeError> {
        let raft = self.raft.clone();
        let promote = tokio::spawn(async move {
            let result = raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await;
            drop(serial);
            if let Err(e) = &result {
                tracing::warn!(member = format!("{id:x}"), error = %e, "promoting a new voter");
            }
            result
        });
        match tokio::time::timeout(self.leader_lease, promote).await {
            Ok(Ok(result)) => {
                result.map_err(change_error)?;
                Ok(self.members())
            }
            Ok(Err(join)) => Err(ProposeError::Stopped(join.to_string())),
            Err(_) => {
                tracing::info!(
                    member = format!("{id:x}"),
                    "the new voter completes its addition when it starts"
                );
                let mut members = self.members();
                for m in members.iter_mut().filter(|m| m.id == id) {
                    m.is_learner = false;
                }
                Ok(members)
            }
        }
    }

    /// etcd's `mayAddMember` for a voter (with `--strict-reconfig-check`): a started quorum
    /// after the addition, and every voter heard from lately.
    fn may_add_voter(&self, members: &BTreeMap<u64, Member>) -> Result<(), ProposeError> {
        if !self.strict_reconfig_check {
            return Ok(());
        }
        if !ready_to_add_voter(members) {
            return Err(ProposeError::Membership(MembershipError::NotEnoughStarted));
        }
        let active = self.active_members();
        if members
            .values()
            .any(|m| !m.is_learner && !active.contains(&m.id))
        {
            return Err(ProposeError::Membership(MembershipError::Unhealthy));
        }
        Ok(())
    }

    /// etcd's `mayRemoveMember` for a voter (with `--strict-reconfig-check`): the voters left
    /// keep a started quorum, and, unless the one removed is already down, enough of them are
    /// active to keep a quorum.
    fn may_remove_voter(
        &self,
        members: &BTreeMap<u64, Member>,
        id: u64,
    ) -> Result<(), ProposeError> {
        if !self.strict_reconfig_check {
            return Ok(());
        }
        if !ready_to_remove_voter(members, id) {
            return Err(ProposeError::Membership(MembershipError::NotEnoughStarted));
        }
        let active = self.active_members();
        if id != self.id && !active.contains(&id) {
            return Ok(()); // removing a member that is down takes nothing from the quorum
        }
        let voters: Vec<&Member> = members.values().filter(|m| !m.is_learner).collect();
        let active_voters = voters.iter().filter(|m| active.contains(&m.id)).count();
        if active_voters.saturating_sub(1) < 1 + voters.len().saturating_sub(1) / 2 {
            return Err(ProposeError::Membership(MembershipError::Unhealthy));
        }
        Ok(())
    }

    /// This member and the members whose heartbeats it (as leader) saw acknowledged within
    /// the leader lease (two election timeouts): Raft's own measure of who is alive. (etcd
    /// asks whether its connection to the peer has been up for 5 s.)
    fn active_members(&self) -> BTreeSet<u64> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let mut active = BTreeSet::from([self.id]);
        for id in metrics.heartbeat.iter().flat_map(|h| h.keys()) {
            if super::heard_within(&metrics, *id, self.leader_lease) {
                active.insert(*id);
            }
        }
        active
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

/// openraft's refusal of a membership change, as a proposal error.
fn change_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(e) => ProposeError::Stopped(e.to_string()),
        RaftError::Fatal(e) => ProposeError::Stopped(e.to_string()),
    }
}

/// True if any of `urls` belongs to a member other than `except`.
fn urls_taken(members: &BTreeMap<u64, Member>, except: Option<u64>, urls: &[String]) -> bool {
    members
        .values()
        .filter(|m| Some(m.id) != except)
        .any(|m| m.info.peer_urls.iter().any(|u| urls.contains(u)))
}
