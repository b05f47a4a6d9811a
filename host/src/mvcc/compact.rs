//! Compaction: drops history that no read at or above the compact revision can see.
//!
//! For each key, of its versions at or below revision `C` only the latest survives, and only
//! if it is a put (a tombstone at or below `C` goes too, ending the key's history). Keys
//! untouched since the previous compaction already have that shape, so only keys written in
//! `(previous, C]` are visited.

use std::collections::BTreeSet;

use fjall::{OwnedWriteBatch, Readable};

use super::encoding::{self, INDEX_PUT, Rev};
use super::error::{Error, MvccError};
use super::read::{ReadView, corrupt, decode};
use super::types::Revision;
use crate::storage::Storage;

/// Checks a compaction request against the view (etcd's errors and order).
pub fn check(view: &ReadView<'_>, rev: Revision) -> Result<(), MvccError> {
    if rev <= view.compact_rev {
        return Err(MvccError::Compacted);
    }
    if rev > view.rev {
        return Err(MvccError::FutureRevision);
    }
    Ok(())
}

/// Adds the deletions of a compaction at `rev` to `batch`; returns how many history entries
/// it removes. The caller has run [`check`] and records the new compact revision.
pub fn compact(
    storage: &Storage,
    view: &ReadView<'_>,
    rev: Revision,
    batch: &mut OwnedWriteBatch,
) -> Result<usize, Error> {
    let from = Rev {
        main: view.compact_rev.max(0) + 1,
        sub: 0,
    };
    let to = Rev {
        main: rev + 1,
        sub: 0,
    };
    let mut touched = BTreeSet::new();
    for guard in view
        .snap
        .range(&storage.kv_revs, from.encode()..to.encode())
    {
        let (_, raw) = guard.into_inner()?;
        let event: encoding::StoredEvent = decode(&raw)?;
        touched.insert(event.key);
    }
    let mut removed = 0;
    for key in touched {
        let start = encoding::index_key_start(&key);
        let end = encoding::index_key(&key, to);
        let mut versions = Vec::new();
        for guard in view.snap.range(&storage.kv_index, start..end) {
            let (raw, kind) = guard.into_inner()?;
            let (_, at) = encoding::decode_index_key(&raw)
                .ok_or_else(|| corrupt(format!("bad index key {raw:?}")))?;
            versions.push((at, kind.first() == Some(&INDEX_PUT)));
        }
        let keep_last = versions.last().is_some_and(|(_, live)| *live);
        let drop_count = if keep_last {
            versions.len() - 1
        } else {
            versions.len()
        };
        for (at, _) in &versions[..drop_count] {
            batch.remove(&storage.kv_index, encoding::index_key(&key, *at));
            batch.remove(&storage.kv_revs, at.encode());
            removed += 1;
        }
    }
    Ok(removed)
}
