//! Corruption detection (`--experimental-initial-corrupt-check`,
//! `--experimental-corrupt-check-time`): members compare HashKV at the same revision.
//!
//! HashKV is exact over Cairn's own encoding of history (`mvcc/hash.rs`): members that
//! applied the same log hold byte-identical history, so at the same revision and the same
//! compact revision their hashes are equal, and a difference is a real divergence (a
//! damaged disk, a bug), never noise. A member that cannot hash at the revision (it has not
//! applied it yet, or compacted past it) or has another compact revision is skipped, as etcd
//! skips it.
//!
//! - At start, with the initial check, a member compares its hash at its own revision with
//!   every peer's and refuses to start on a mismatch.
//! - Periodically, the leader compares its hash with every follower's and raises the CORRUPT
//!   alarm for each follower that differs (`alarm.rs`), logging both hashes.

use crate::raft::RaftNode;
use crate::storage::Storage;

/// One member whose history differs from this member's at the same revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub member: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub local_hash: u32,
    pub peer_hash: u32,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "member {:x} has hash {} at revision {} (compact revision {}), this member {}",
            self.member, self.peer_hash, self.revision, self.compact_revision, self.local_hash
        )
    }
}

/// What one comparison found.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub mismatches: Vec<Mismatch>,
    /// Members that answered with a hash comparable to this member's.
    pub agreed: usize,
    /// Members that were skipped (unreachable, behind, compacted differently), with why.
    pub skipped: Vec<(u64, String)>,
}

/// Compares this member's HashKV at its current revision with every other member's.
pub async fn compare(raft: &RaftNode, storage: &Storage) -> Result<Comparison, String> {
    let storage = storage.clone();
    let (revision, local) = tokio::task::spawn_blocking(move || {
        let view = crate::mvcc::Mvcc::read_view(&storage).map_err(|e| e.to_string())?;
        let local = view.hash_kv(view.rev).map_err(|e| e.to_string())?;
        Ok::<_, String>((view.rev, local))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (local_hash, compact_revision) = local;
    let mut out = Comparison::default();
    for member in raft.members() {
        if member.id == raft.id() {
            continue;
        }
        match raft.hash_kv_of(member.id, revision).await {
            Ok(Some((peer_hash, peer_compact))) if peer_compact == compact_revision => {
                if peer_hash == local_hash {
                    out.agreed += 1;
                } else {
                    out.mismatches.push(Mismatch {
                        member: member.id,
                        revision,
                        compact_revision,
                        local_hash,
                        peer_hash,
                    });
                }
            }
            Ok(Some((_, peer_compact))) => out.skipped.push((
                member.id,
                format!("compact revision {peer_compact}, not {compact_revision}"),
            )),
            Ok(None) => out
                .skipped
                .push((member.id, format!("cannot hash at revision {revision}"))),
            Err(e) => out.skipped.push((member.id, e.to_string())),
        }
    }
    Ok(out)
}
