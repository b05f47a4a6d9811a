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
use super::types::{Event, KeyValue, Revision};

impl ReadView<'_> {
    /// The events of revisions `from..=to` whose key is in `range`, in revision order. With
    /// `prev_kv`, each carries the version its key had before it (when history still has it).
    /// Stops at a revision boundary once the events read hold `max_bytes` of keys and values:
    /// returns them and the last revision they cover (every revision up to it is whole, at
    /// least one revision is read, `to` when all were read).
    pub fn events(
        &self,
        from: Revision,
        to: Revision,
        range: &KeyRange,
        prev_kv: bool,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, Revision), Error> {
        let mut out = Vec::new();
        if from > to {
            return Ok((out, to));
        }
        let (start, end) = (
            Rev { main: from, sub: 0 },
            Rev {
                main: to + 1,
                sub: 0,
            },
        );
        let mut bytes = 0usize;
        for guard in self
            .snap
            .range(&self.storage.kv_revs, start.encode()..end.encode())
        {
            let (raw_rev, raw) = guard.into_inner()?;
            let at = Rev::decode(&raw_rev)
                .ok_or_else(|| corrupt(format!("bad revision key {raw_rev:?}")))?;
            if bytes >= max_bytes && at.main > from && at.sub == 0 {
                // A new revision begins and the budget is spent: the previous ones are whole.
                return Ok((out, at.main - 1));
            }
            let stored: StoredEvent = decode(&raw)?;
            if !range.contains(&stored.key) {
                continue;
            }
            let prev = if prev_kv {
                self.version_before(&stored.key, at)?
            } else {
                None
            };
            let event = Event {
                kind: stored.kind,
                kv: stored.to_kv(at),
                prev_kv: prev,
            };
            bytes += event.size();
            out.push(event);
        }
        Ok((out, to))
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
