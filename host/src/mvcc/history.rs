//! History in revision order: what watchers are sent.
//!
//! `kv_revs` holds every change keyed by revision, so a watcher never needs an in-memory
//! queue to be complete: it asks for the events after the last revision it was sent, up to
//! the latest committed one, and gets them in order, each revision whole.

use fjall::Readable;

use super::encoding::{self, INDEX_PUT, Rev, StoredEvent};
use super::error::Error;
use super::key_range::KeyRange;
use super::read::{ReadView, corrupt, decode};
use super::types::{Event, EventKind, KeyValue, Revision};

impl ReadView<'_> {
    /// The events of revisions `from..=to` whose key is in `range`, in revision order. With
    /// `prev_kv`, each carries the version its key had before it (when history still has it).
    pub fn events(
        &self,
        from: Revision,
        to: Revision,
        range: &KeyRange,
        prev_kv: bool,
    ) -> Result<Vec<Event>, Error> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        let (start, end) = (
            Rev { main: from, sub: 0 },
            Rev {
                main: to + 1,
                sub: 0,
            },
        );
        for guard in self
            .snap
            .range(&self.storage.kv_revs, start.encode()..end.encode())
        {
            let (raw_rev, raw) = guard.into_inner()?;
            let at = Rev::decode(&raw_rev)
                .ok_or_else(|| corrupt(format!("bad revision key {raw_rev:?}")))?;
            let stored: StoredEvent = decode(&raw)?;
            if !range.contains(&stored.key) {
                continue;
            }
            let prev = if prev_kv {
                self.version_before(&stored.key, at)?
            } else {
                None
            };
            out.push(Event {
                kind: stored.kind,
                kv: stored.to_kv(at),
                prev_kv: prev,
            });
        }
        Ok(out)
    }

    /// The live version of `key` just before `at`, if history still has it.
    pub fn version_before(&self, key: &[u8], at: Rev) -> Result<Option<KeyValue>, Error> {
        let bounds = encoding::index_key_start(key)..encoding::index_key(key, at);
        let Some(guard) = self.snap.range(&self.storage.kv_index, bounds).next_back() else {
            return Ok(None);
        };
        let (raw, kind) = guard.into_inner()?;
        if kind.first() != Some(&INDEX_PUT) {
            return Ok(None);
        }
        let (_, prev) = encoding::decode_index_key(&raw)
            .ok_or_else(|| corrupt(format!("bad index key {raw:?}")))?;
        Ok(Some(self.event(prev)?.to_kv(prev)))
    }
}

/// True when `event` passes a watcher's filters (etcd's NOPUT and NODELETE).
pub fn passes(event: &Event, no_put: bool, no_delete: bool) -> bool {
    match event.kind {
        EventKind::Put => !no_put,
        EventKind::Delete => !no_delete,
    }
}
