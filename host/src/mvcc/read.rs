//! Reads: Range at the current or a past revision, from one consistent fjall snapshot.
//!
//! The order of work follows etcd's apply of a Range (fetch, filter, sort, truncate) so that
//! `count`, `more` and sort ties come out the same, but the fetch streams: without sorting or
//! filters only `limit + 1` values are loaded, `count_only` and `keys_only` load none, and
//! keys past the limit are only counted.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use fjall::{Readable, Snapshot};

use super::encoding::{self, INDEX_PUT, KeyMeta, Rev, StoredEvent};
use super::error::{Error, MvccError};
use super::key_range::{KeyRange, MAX_KEY_BYTES};
use super::types::{KeyValue, RangeRequest, RangeResponse, Revision, SortOrder, SortTarget};
use crate::storage::Storage;

/// Keys written earlier in the same request (a Txn reads its own writes), `None` = deleted.
pub type Overlay = BTreeMap<Vec<u8>, Option<(KeyMeta, Vec<u8>)>>;

/// An [`Overlay`] a plugin call can hold on to without copying it: writers change it through
/// `Arc::make_mut`, which copies only while a call still holds the previous version (none
/// does once the call has returned).
pub type SharedOverlay = std::sync::Arc<Overlay>;

/// A consistent view of the store at one revision.
pub struct ReadView<'a> {
    pub(crate) storage: &'a Storage,
    pub(crate) snap: Snapshot,
    /// The revision this view shows (for a Txn with writes so far: the Txn's own revision).
    pub rev: Revision,
    /// Reads below this revision fail with `Compacted`; -1 before any compaction.
    pub compact_rev: Revision,
    pub(crate) overlay: Option<&'a SharedOverlay>,
}

/// What the fetch step should load for each key.
#[derive(Clone, Copy, Debug)]
struct Fetch {
    /// Stop loading after this many keys (0: load all); later keys are only counted.
    limit: usize,
    values: bool,
    count_only: bool,
}

impl<'a> ReadView<'a> {
    /// Reads `[key, range_end)` with etcd's Range semantics.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let rev = if req.revision <= 0 {
            self.rev
        } else {
            req.revision
        };
        if rev > self.rev {
            return Err(MvccError::FutureRevision.into());
        }
        if rev < self.compact_rev {
            return Err(MvccError::Compacted.into());
        }
        let sort_order = effective_sort_order(req.sort_order, req.sort_target);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd decides what to fetch from the order as requested, not as defaulted: with
        // SortOrder::None and a non-key target it fetches `limit + 1` keys in key order and
        // sorts only those.
        let requested_order = !matches!(
            (req.sort_order, req.sort_target),
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key)
        );
        let limit = if requested_order || filtered || req.limit <= 0 {
            0
        } else {
            req.limit as usize + 1
        };
        // `keys_only` drops values after sorting, so a sort by value still needs them.
        let by_value = sort_order != SortOrder::None && req.sort_target == SortTarget::Value;
        let fetch = Fetch {
            limit,
            values: !req.keys_only || by_value,
            count_only: req.count_only,
        };
        let range = KeyRange::new(&req.key, &req.range_end);
        let (mut kvs, count) = if range.is_empty() {
            (Vec::new(), 0)
        } else if rev == self.rev {
            self.fetch_latest(&range, fetch)?
        } else {
            self.fetch_at(&range, rev, fetch)?
        };
        if filtered {
            kvs.retain(|kv| passes_filters(req, kv));
        }
        sort(&mut kvs, sort_order, req.sort_target);
        if req.keys_only && by_value {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        Ok(RangeResponse {
            revision: self.rev,
            kvs,
            more,
            count: count as i64,
        })
    }

    /// The latest version of one key, if it is live.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Error> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(None); // never stored, and longer than the engine can look up
        }
        if let Some(entry) = self.overlay.and_then(|o| o.get(key)) {
            return Ok(entry
                .as_ref()
                .map(|(meta, value)| meta.to_kv(key.to_vec(), value.clone())));
        }
        let Some(raw) = self.snap.get(&self.storage.kv_meta, key)? else {
            return Ok(None);
        };
        let meta: KeyMeta = decode(&raw)?;
        let value = self.event(meta.at())?.value;
        Ok(Some(meta.to_kv(key.to_vec(), value)))
    }

    /// The keys lease `lease` holds, as committed (a view outside apply has no overlay; apply
    /// asks its batch, `ApplyBatch::lease_keys`).
    pub fn lease_keys(&self, lease: i64) -> Result<Vec<Vec<u8>>, Error> {
        Ok(lease_keys_in(&self.snap, self.storage, lease)?)
    }

    /// The metadata of the latest version of one key, if it is live (no value is read).
    pub fn meta(&self, key: &[u8]) -> Result<Option<KeyMeta>, Error> {
        if key.len() > MAX_KEY_BYTES {
            return Ok(None); // never stored, and longer than the engine can look up
        }
        if let Some(entry) = self.overlay.and_then(|o| o.get(key)) {
            return Ok(entry.as_ref().map(|(meta, _)| *meta));
        }
        match self.snap.get(&self.storage.kv_meta, key)? {
            None => Ok(None),
            Some(raw) => Ok(Some(decode(&raw)?)),
        }
    }

    /// Every live key in `range` with its metadata, in key order, without values.
    pub fn metas(&self, range: &KeyRange) -> Result<Vec<(Vec<u8>, KeyMeta)>, Error> {
        let mut out = Vec::new();
        self.scan_latest(range, |key, meta| {
            out.push((key.to_vec(), meta));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Scans live keys in `range` in order, merging the overlay; `visit` returns false to stop.
    fn scan_latest(
        &self,
        range: &KeyRange,
        mut visit: impl FnMut(&[u8], KeyMeta) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        if range.is_empty() {
            return Ok(()); // and BTreeMap::range panics on reversed bounds
        }
        let empty = Overlay::new();
        let overlay: &Overlay = self.overlay.map_or(&empty, |o| o);
        let mut pending = overlay.range::<[u8], _>(range.bounds()).peekable();
        let mut iter = self
            .snap
            .range::<&[u8], _>(&self.storage.kv_meta, range.bounds());
        let mut next_disk = next_meta(&mut iter)?;
        loop {
            // Pick the smaller of the next disk key and the next overlay key.
            let take_overlay = match (&next_disk, pending.peek()) {
                (None, None) => return Ok(()),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((dk, _)), Some((ok, _))) => ok.as_slice() <= dk.as_slice(),
            };
            if take_overlay {
                let (key, entry) = pending.next().expect("peeked");
                if next_disk.as_ref().is_some_and(|(dk, _)| dk == key) {
                    next_disk = next_meta(&mut iter)?; // shadowed by the overlay
                }
                if let Some((meta, _)) = entry
                    && !visit(key, *meta)?
                {
                    return Ok(());
                }
            } else {
                let (key, meta) = next_disk.take().expect("checked above");
                if !visit(&key, meta)? {
                    return Ok(());
                }
                next_disk = next_meta(&mut iter)?;
            }
        }
    }

    /// Fetches at the current revision: metadata streams from `kv_meta`; values are loaded
    /// from history only for keys that are returned.
    fn fetch_latest(
        &self,
        range: &KeyRange,
        fetch: Fetch,
    ) -> Result<(Vec<KeyValue>, usize), Error> {
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut at = Vec::new();
        let mut count = 0usize;
        self.scan_latest(range, |key, meta| {
            count += 1;
            if !fetch.count_only && (fetch.limit == 0 || kvs.len() < fetch.limit) {
                kvs.push(meta.to_kv(key.to_vec(), Vec::new()));
                at.push(meta.at());
            }
            Ok(true)
        })?;
        if fetch.values {
            self.load_values(&mut kvs, &at)?;
        }
        Ok((kvs, count))
    }

    /// Fills in values for `kvs` from the overlay, or from the history entries `at` point to.
    fn load_values(&self, kvs: &mut [KeyValue], at: &[Rev]) -> Result<(), Error> {
        for (kv, at) in kvs.iter_mut().zip(at) {
            kv.value = match self.overlay.and_then(|o| o.get(&kv.key)) {
                Some(Some((_, value))) => value.clone(),
                _ => self.event(*at)?.value,
            };
        }
        Ok(())
    }

    /// Fetches as of a past revision from the history keyspaces.
    fn fetch_at(
        &self,
        range: &KeyRange,
        rev: Revision,
        fetch: Fetch,
    ) -> Result<(Vec<KeyValue>, usize), Error> {
        let mut kvs = Vec::new();
        let mut count = 0usize;
        self.scan_history(range, rev, |key, at| {
            count += 1;
            if !fetch.count_only && (fetch.limit == 0 || kvs.len() < fetch.limit) {
                let event = self.event(at)?;
                let mut kv = event.to_kv(at);
                debug_assert_eq!(kv.key, key);
                if !fetch.values {
                    kv.value.clear();
                }
                kvs.push(kv);
            }
            Ok(())
        })?;
        Ok((kvs, count))
    }

    /// Visits each key in `range` that is live at `rev`, with the revision of its version.
    pub(crate) fn scan_history(
        &self,
        range: &KeyRange,
        rev: Revision,
        mut visit: impl FnMut(&[u8], Rev) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (start, end) = index_bounds(range);
        let iter = self.snap.range(&self.storage.kv_index, (start, end));
        // The latest version at or below `rev` of the key being scanned, and whether it is live.
        let mut current: Option<(Vec<u8>, Rev, bool)> = None;
        for guard in iter {
            let (raw, kind) = guard.into_inner()?;
            let (key, at) = encoding::decode_index_key(&raw)
                .ok_or_else(|| corrupt(format!("bad index key {raw:?}")))?;
            if current.as_ref().is_some_and(|(k, _, _)| *k != key) {
                let (k, at, live) = current.take().expect("checked");
                if live {
                    visit(&k, at)?;
                }
            }
            if at.main <= rev {
                current = Some((key, at, kind.first() == Some(&INDEX_PUT)));
            }
        }
        if let Some((k, at, true)) = current {
            visit(&k, at)?;
        }
        Ok(())
    }

    /// The history entry at `at`.
    pub(crate) fn event(&self, at: Rev) -> Result<StoredEvent, Error> {
        let raw = self
            .snap
            .get(&self.storage.kv_revs, at.encode())?
            .ok_or_else(|| corrupt(format!("history entry {at:?} missing")))?;
        decode(&raw)
    }
}

fn next_meta(iter: &mut fjall::Iter) -> Result<Option<(Vec<u8>, KeyMeta)>, Error> {
    match iter.next() {
        None => Ok(None),
        Some(guard) => {
            let (k, v) = guard.into_inner()?;
            Ok(Some((k.to_vec(), decode(&v)?)))
        }
    }
}

/// `kv_index` bounds covering every revision of every key in `range`.
fn index_bounds(range: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    match range {
        KeyRange::Single(k) => (
            Bound::Included(encoding::index_key_start(k)),
            Bound::Included(encoding::index_key(
                k,
                Rev {
                    main: i64::MAX,
                    sub: i64::MAX,
                },
            )),
        ),
        KeyRange::Interval { start, end } => (
            Bound::Included(encoding::index_key_start(start)),
            end.as_ref().map_or(Bound::Unbounded, |e| {
                Bound::Excluded(encoding::index_key_start(e))
            }),
        ),
    }
}

/// etcd sorts ascending by default for non-key targets and never re-sorts key-ascending.
fn effective_sort_order(order: SortOrder, target: SortTarget) -> SortOrder {
    match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => SortOrder::None,
        (order, _) => order,
    }
}

fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    // Stable sorts: ties keep key order, as etcd's sort does for the result sizes it sees
    // in practice (Go's insertion sort below 12 elements is stable).
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(cmp),
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
}

pub(crate) fn decode<'b, T: serde::Deserialize<'b>>(raw: &'b [u8]) -> Result<T, Error> {
    encoding::decode(raw).map_err(|e| corrupt(e.0))
}

/// A stored MVCC record that does not decode (`msg` says which).
pub(crate) fn corrupt(msg: String) -> Error {
    Error::Fault(super::error::Fault::Corrupt {
        what: "store record",
        detail: msg,
    })
}

/// The keys `lease` holds in `snap`, in key order (the `kv_lease` index; see
/// `encoding::lease_key`).
pub(super) fn lease_keys_in(
    snap: &Snapshot,
    storage: &Storage,
    lease: i64,
) -> Result<Vec<Vec<u8>>, fjall::Error> {
    let mut keys = Vec::new();
    for guard in snap.prefix(&storage.kv_lease, (lease as u64).to_be_bytes()) {
        let raw = guard.key()?;
        keys.push(raw[8..].to_vec());
    }
    Ok(keys)
}
