//! Key ranges as plain half-open intervals, for intersecting and merging the ranges a
//! request deletes; etcd's special range ends are translated at the edges only.

use cairn_sdk::{Store, prefix_end};

/// A key range `[start, end)`; `end` `None` is unbounded. Unlike etcd's ranges it has no
/// special cases, which makes intersecting and merging plain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: Vec<u8>,
    pub(crate) end: Option<Vec<u8>>,
}

impl Span {
    /// The keys that start with `prefix`.
    pub(crate) fn prefix(prefix: &[u8]) -> Self {
        Self::from_range(prefix, &prefix_end(prefix))
    }

    /// An etcd range: empty `range_end` for one key, `"\0"` for every key from `key` on.
    pub(crate) fn from_range(key: &[u8], range_end: &[u8]) -> Self {
        let end = match range_end {
            [] => Some(successor(key)),
            [0] => None,
            end => Some(end.to_vec()),
        };
        Self {
            start: key.to_vec(),
            end,
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|end| key < end.as_slice())
    }

    /// Whether a span starting at `start` overlaps or touches this one.
    pub(crate) fn reaches(&self, start: &[u8]) -> bool {
        self.end.as_ref().is_none_or(|end| start <= end.as_slice())
    }

    pub(crate) fn extend_to(&mut self, end: Option<Vec<u8>>) {
        self.end = match (self.end.take(), end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }

    pub(crate) fn intersect(&self, other: &Self) -> Option<Self> {
        let start = self.start.clone().max(other.start.clone());
        let end = match (&self.end, &other.end) {
            (Some(a), Some(b)) => Some(a.clone().min(b.clone())),
            (Some(end), None) | (None, Some(end)) => Some(end.clone()),
            (None, None) => None,
        };
        match &end {
            Some(end) if *end <= start => None,
            _ => Some(Self { start, end }),
        }
    }

    /// The range end to hand the store, with etcd's rules.
    pub(crate) fn end_for_store(&self) -> Vec<u8> {
        match &self.end {
            None => vec![0],
            // [k, k\0) is the one key k, which etcd spells with an empty end; spelled
            // "\0" (when k is empty) it would mean every key.
            Some(end) if *end == successor(&self.start) => Vec::new(),
            Some(end) => end.clone(),
        }
    }

    pub(crate) fn count_in(&self, store: &dyn Store) -> u64 {
        store.count(&self.start, &self.end_for_store())
    }
}

/// The first key after `key`: `key` followed by a zero byte.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}
