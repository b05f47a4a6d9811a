//! etcd's `--force-new-cluster`: disaster recovery for a cluster that lost its quorum for
//! good. The surviving member's data dir is made into a one-member cluster of that member,
//! keeping everything it had committed.
//!
//! Before Raft starts, the log is cut back to what this member knows committed (or applied,
//! if that is further) — uncommitted entries are dropped, as etcd drops them — and one
//! membership entry naming only this member is appended after it. openraft takes the last
//! membership in the log as the effective one, so the member campaigns alone, wins, and
//! commits that entry with its first blank entry as leader. The cluster ID stays.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::{Membership, RaftTypeConfig};

use super::log_store::LogStore;
use super::state_machine::StateMachineStore;
use super::types::{Entry, LogId, MemberInfo, TypeConfig};

/// Rewrites the log so that the member `id` (described by `me`) is the only voter.
pub(super) async fn rewrite_as_one_member(
    log_store: &mut LogStore,
    state_machine: &mut StateMachineStore,
    id: u64,
    me: MemberInfo,
) -> io::Result<()> {
    let state = log_store.get_log_state().await?;
    let committed = log_store.read_committed().await?;
    let (applied, _) = state_machine.applied_state().await?;
    let keep: Option<LogId> = committed.max(applied);
    if state.last_log_id > keep {
        tracing::warn!(
            from = ?keep,
            to = ?state.last_log_id,
            "--force-new-cluster: dropping log entries that were never committed"
        );
        log_store.truncate_after(keep).await?;
    }
    let last = keep.max(state.last_purged_log_id);
    let term = match &last {
        Some(id) => id.committed_leader_id().term,
        None => {
            let vote = log_store.get_log_reader().await.read_vote().await?;
            vote.map_or(0, |v| v.leader_id.term)
        }
    };
    let index = last.map_or(0, |id| id.index + 1);
    let membership = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, me)]))
        .map_err(|e| io::Error::other(e.to_string()))?;
    let leader = <TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, id);
    let entry = Entry::new_membership(LogId::new(leader, index), membership);
    let (flushed_tx, flushed_rx) = TypeConfig::oneshot();
    // Completed by the log's sync thread once the entry is on disk.
    let callback = openraft::storage::IOFlushed::signal(flushed_tx);
    log_store.append([entry], callback).await?;
    flushed_rx
        .await
        .map_err(|_| io::Error::other("the log's sync thread stopped"))??;
    tracing::warn!(
        member = format!("{id:x}"),
        index,
        "--force-new-cluster: this member is now the only member of its cluster"
    );
    Ok(())
}
