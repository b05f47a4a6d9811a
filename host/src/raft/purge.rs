//! Log purging: which applied entries a member may drop from its Raft log.
//!
//! openraft's own rule purges everything more than `--experimental-snapshot-catchup-entries`
//! behind the latest snapshot, whatever the followers still need. Under sustained load that
//! can trap a slow follower: it falls that far behind, gets a snapshot, and while the
//! snapshot travels and installs (seconds, on a large store) the leader snapshots and purges
//! again, past the entries that would follow the snapshot it is installing; so it gets
//! another snapshot, and another, and never serves again. A benchmark showed exactly that.
//!
//! So Cairn turns openraft's rule off and purges itself, with two holds on the leader:
//! - nothing is purged while a snapshot is being sent to a peer (etcd does the same: it
//!   skips log compaction while a snapshot is in flight);
//! - entries a live follower (one that answered the leader within two election timeouts)
//!   still needs are kept while it lags by at most [`HOLD_SNAPSHOTS`] × `--snapshot-count`
//!   entries, so a follower that just installed a snapshot, or one that is briefly slow,
//!   catches up from the log. A follower further behind, or down, gets a snapshot when it
//!   needs one, as in etcd.

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use super::RaftNode;

/// How often a member looks for entries it may purge.
const PURGE_TICK: Duration = Duration::from_millis(100);
/// Entries purged at least at once (fewer wait for the next look).
const PURGE_BATCH: u64 = 256;
/// How many snapshot intervals of entries the leader keeps for a follower that lags.
const HOLD_SNAPSHOTS: u64 = 10;

/// What a member knows when it decides how far to purge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PurgeState {
    /// The last index in this member's latest snapshot.
    pub snapshot: Option<u64>,
    /// The last index already purged.
    pub purged: Option<u64>,
    /// On the leader: every other member.
    pub followers: Option<Vec<Follower>>,
    /// On the leader: whether a snapshot is on its way to some peer.
    pub sending_snapshot: bool,
}

/// What the leader knows of another member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Follower {
    /// Its last replicated index (`None`: nothing yet).
    pub matched: Option<u64>,
    /// Whether it answered the leader lately.
    pub live: bool,
}

/// The index to purge up to (inclusive), if there is a batch worth purging.
pub fn purge_upto(state: &PurgeState, catchup: u64, hold: u64) -> Option<u64> {
    let snapshot = state.snapshot?;
    if state.sending_snapshot {
        return None;
    }
    let mut upto = snapshot.checked_sub(catchup)?;
    for follower in state.followers.iter().flatten() {
        let matched = follower.matched.unwrap_or(0);
        if follower.live && snapshot.saturating_sub(matched) <= hold {
            // The follower's next append names its last entry as the previous one.
            upto = upto.min(matched.saturating_sub(1));
        }
    }
    let first_unpurged = state.purged.map_or(0, |p| p + 1);
    (upto >= first_unpurged + PURGE_BATCH).then_some(upto)
}

impl RaftNode {
    /// Purges the log as the module doc says, until `stopped`.
    pub async fn purge_duties(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let hold = self.snapshot_count.saturating_mul(HOLD_SNAPSHOTS);
        loop {
            let state = {
                let metrics = self.raft.metrics();
                let m = metrics.borrow_watched();
                let leading = m.state == ServerState::Leader;
                let live = |id: &u64| super::heard_within(&m, *id, self.leader_lease);
                PurgeState {
                    snapshot: m.snapshot.map(|id| id.index),
                    purged: m.purged.map(|id| id.index),
                    followers: m.replication.as_ref().filter(|_| leading).map(|r| {
                        r.iter()
                            .filter(|(id, _)| **id != self.id)
                            .map(|(id, matched)| Follower {
                                matched: matched.map(|m| m.index),
                                live: live(id),
                            })
                            .collect()
                    }),
                    sending_snapshot: leading && self.peers.sending_snapshots(),
                }
            };
            if let Some(upto) = purge_upto(&state, self.catchup_entries, hold)
                && let Err(e) = self.raft.trigger().purge_log(upto).await
            {
                tracing::warn!(error = %e, "purging the log");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(PURGE_TICK) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        snapshot: u64,
        purged: Option<u64>,
        followers: Option<Vec<Option<u64>>>,
    ) -> PurgeState {
        let live = |matched| Follower {
            matched,
            live: true,
        };
        PurgeState {
            snapshot: Some(snapshot),
            purged,
            followers: followers.map(|f| f.into_iter().map(live).collect()),
            sending_snapshot: false,
        }
    }

    #[test]
    fn without_followers_it_keeps_the_catchup_entries() {
        assert_eq!(
            purge_upto(&state(20_000, None, None), 5_000, 100_000),
            Some(15_000)
        );
        assert_eq!(
            purge_upto(&state(20_000, Some(9_999), None), 5_000, 100_000),
            Some(15_000)
        );
        // Nothing yet, or less than a batch more.
        assert_eq!(purge_upto(&state(4_000, None, None), 5_000, 100_000), None);
        assert_eq!(
            purge_upto(&state(20_000, Some(14_900), None), 5_000, 100_000),
            None
        );
        let none = PurgeState::default();
        assert_eq!(purge_upto(&none, 5_000, 100_000), None);
    }

    #[test]
    fn the_leader_keeps_what_a_close_follower_needs() {
        // One follower is current, one 12,000 entries back: keep from its entry on.
        let s = state(20_000, Some(1_000), Some(vec![Some(20_100), Some(8_000)]));
        assert_eq!(purge_upto(&s, 5_000, 100_000), Some(7_999));
        // A follower that has nothing yet, within the hold: keep everything.
        let s = state(20_000, None, Some(vec![None]));
        assert_eq!(purge_upto(&s, 5_000, 100_000), None);
    }

    #[test]
    fn a_follower_beyond_the_hold_or_down_gets_a_snapshot_instead() {
        let s = state(
            200_000,
            Some(1_000),
            Some(vec![Some(50_000), Some(199_000)]),
        );
        assert_eq!(purge_upto(&s, 5_000, 100_000), Some(195_000));
        let mut s = state(20_000, Some(1_000), Some(vec![Some(8_000), Some(20_000)]));
        assert_eq!(purge_upto(&s, 5_000, 100_000), Some(7_999));
        if let Some(f) = s.followers.as_mut() {
            f[0].live = false;
        }
        assert_eq!(purge_upto(&s, 5_000, 100_000), Some(15_000));
    }

    #[test]
    fn nothing_is_purged_while_a_snapshot_is_sent() {
        let mut s = state(20_000, None, Some(vec![Some(20_000), Some(20_000)]));
        assert_eq!(purge_upto(&s, 5_000, 100_000), Some(15_000));
        s.sending_snapshot = true;
        assert_eq!(purge_upto(&s, 5_000, 100_000), None);
    }
}
