//! etcd's key-range rules, shared by Range, DeleteRange, Compare, Watch and permissions.
//!
//! - empty `range_end`: the single key `key`;
//! - `range_end == "\0"`: every key `>= key` (so `key == range_end == "\0"` is every key);
//! - otherwise the half-open interval `[key, range_end)`, empty when `range_end <= key`.

use std::ops::Bound;

/// The longest key Cairn stores. Escaped for `kv_index` (every zero byte doubled, a two-byte
/// terminator, a 16-byte revision), a key of this length plus the one byte [`storable`] adds
/// stays under the engine's 65,535-byte key limit: 2 × 32,001 + 18 = 64,020.
pub const MAX_KEY_BYTES: usize = 32_000;

/// `key` as a bound over stored keys. A key longer than [`MAX_KEY_BYTES`] becomes its first
/// `MAX_KEY_BYTES` bytes followed by a zero byte: no stored key lies between the two (a stored
/// key is either decided against both within that prefix, or is a prefix of both and so
/// below both), so a range bounded by either selects the same stored keys.
pub fn storable(key: &[u8]) -> Vec<u8> {
    if key.len() <= MAX_KEY_BYTES {
        return key.to_vec();
    }
    let mut out = Vec::with_capacity(MAX_KEY_BYTES + 1);
    out.extend_from_slice(&key[..MAX_KEY_BYTES]);
    out.push(0);
    out
}

/// A set of keys named by etcd's `(key, range_end)` pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly one key.
    Single(Vec<u8>),
    /// `[start, end)`; `end == None` means unbounded.
    Interval {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// The range etcd names by `(key, range_end)`, with over-long keys shortened by
    /// [`storable`] (the same stored keys, bounds the engine can hold).
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(storable(key)),
            [0] => KeyRange::Interval {
                start: storable(key),
                end: None,
            },
            end => KeyRange::Interval {
                start: storable(key),
                end: Some(storable(end)),
            },
        }
    }

    /// Every key (what a watch hub or a whole-store scan reads).
    pub fn all() -> Self {
        KeyRange::Interval {
            start: Vec::new(),
            end: None,
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => key == k,
            KeyRange::Interval { start, end } => {
                k >= start.as_slice() && end.as_deref().is_none_or(|e| k < e)
            }
        }
    }

    /// True when no key can be in the range.
    pub fn is_empty(&self) -> bool {
        match self {
            KeyRange::Single(_) => false,
            KeyRange::Interval { start, end } => {
                end.as_deref().is_some_and(|e| e <= start.as_slice())
            }
        }
    }

    /// The range as bounds over raw user keys.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            KeyRange::Single(k) => (Bound::Included(k), Bound::Included(k)),
            KeyRange::Interval { start, end } => (
                Bound::Included(start),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            ),
        }
    }

    /// True when the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        spans_overlap(self.span(), other.span())
    }

    /// Whether the ranges named by `(key, range_end)` pairs `a` and `b` share a key, as
    /// [`KeyRange::overlaps`] of the two, without building either (the guard hook asks this
    /// for every write and binding).
    pub fn pairs_overlap(a: (&[u8], &[u8]), b: (&[u8], &[u8])) -> bool {
        match (raw_span(a), raw_span(b)) {
            (Some(a), Some(b)) => spans_overlap(a, b),
            _ => false,
        }
    }

    /// Whether etcd calls the range `(key, range_end)` empty (`range_end <= key`), judged on
    /// the pair as given: a range between two over-long keys selects no stored key, but is
    /// not empty in etcd's words.
    pub fn pair_is_empty(key: &[u8], range_end: &[u8]) -> bool {
        raw_span((key, range_end)).is_none()
    }

    /// The first key and the upper end of the range (`None` when unbounded).
    fn span(&self) -> Span<'_> {
        match self {
            KeyRange::Single(k) => (k, Some(EndBound::Inclusive(k))),
            KeyRange::Interval { start, end } => (start, end.as_deref().map(EndBound::Exclusive)),
        }
    }
}

/// A range's first key and upper end, as [`KeyRange::span`] gives them.
type Span<'a> = (&'a [u8], Option<EndBound<'a>>);

/// Whether two non-empty ranges share a key: neither ends before the other starts.
fn spans_overlap((a_start, a_end): Span<'_>, (b_start, b_end): Span<'_>) -> bool {
    let a_before_b = a_end.is_some_and(|e| e.lt(b_start));
    let b_before_a = b_end.is_some_and(|e| e.lt(a_start));
    !a_before_b && !b_before_a
}

/// [`KeyRange::span`] of `KeyRange::new(key, range_end)`, or `None` when that range is empty.
fn raw_span<'a>((key, range_end): (&'a [u8], &'a [u8])) -> Option<Span<'a>> {
    match range_end {
        [] => Some((key, Some(EndBound::Inclusive(key)))),
        [0] => Some((key, None)),
        end if end <= key => None,
        end => Some((key, Some(EndBound::Exclusive(end)))),
    }
}

/// The upper end of a range, for overlap tests.
#[derive(Clone, Copy, Debug)]
enum EndBound<'a> {
    Inclusive(&'a [u8]),
    Exclusive(&'a [u8]),
}

impl EndBound<'_> {
    /// True when every key of the range is below `start`.
    fn lt(self, start: &[u8]) -> bool {
        match self {
            EndBound::Inclusive(e) => e < start,
            EndBound::Exclusive(e) => e <= start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_prefix_and_from_key() {
        // Proves the three range forms etcd clients rely on.
        let single = KeyRange::new(b"foo", b"");
        assert!(single.contains(b"foo") && !single.contains(b"foo1"));
        let prefix = KeyRange::new(b"foo", b"fop");
        assert!(
            prefix.contains(b"foo") && prefix.contains(b"foo\xff\xff") && !prefix.contains(b"fop")
        );
        let from = KeyRange::new(b"b", b"\0");
        assert!(from.contains(b"b") && from.contains(b"\xff\xff") && !from.contains(b"a"));
        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"zzz"));
        assert!(KeyRange::new(b"b", b"a").is_empty());
    }

    #[test]
    fn pairs_overlap_agrees_with_overlaps() {
        // Proves the allocation-free overlap test the guard hook uses answers as KeyRange's,
        // for every pair of ranges over a small alphabet (single keys, intervals, open ends,
        // empty intervals).
        let keys: [&[u8]; 6] = [b"", b"\0", b"a", b"ab", b"b", b"c"];
        let ends: [&[u8]; 6] = [b"", b"\0", b"a", b"ab", b"b", b"c"];
        let mut pairs = Vec::new();
        for k in keys {
            for e in ends {
                pairs.push((k, e));
            }
        }
        for &a in &pairs {
            for &b in &pairs {
                let expected = KeyRange::new(a.0, a.1).overlaps(&KeyRange::new(b.0, b.1));
                assert_eq!(KeyRange::pairs_overlap(a, b), expected, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn over_long_bounds_select_the_same_stored_keys() {
        // Proves that shortening a key longer than MAX_KEY_BYTES keeps every range's answer
        // for every key that can be stored: keys around the cut, prefixes of it, and keys
        // that differ before, at and after it.
        let long = |fill: u8, len: usize| vec![fill; len];
        let cut = MAX_KEY_BYTES;
        let mut stored: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            long(b'a', cut),
            long(b'a', cut - 1),
            long(b'b', cut),
            long(0, cut),
            long(0xff, cut),
        ];
        let mut bumped = long(b'a', cut);
        bumped[cut - 1] = b'b';
        stored.push(bumped);
        let mut below = long(b'a', cut);
        below[cut - 1] = b'`';
        stored.push(below);
        let bounds: Vec<Vec<u8>> = vec![
            long(b'a', cut + 1),
            long(b'a', cut + 100),
            long(b'b', cut + 1),
            long(0, cut + 5),
            long(0xff, cut + 5),
            b"a".to_vec(),
            long(b'a', cut),
        ];
        for key in &bounds {
            for end in bounds
                .iter()
                .map(Vec::as_slice)
                .chain([&b""[..], &b"\0"[..]])
            {
                let range = KeyRange::new(key, end);
                for k in &stored {
                    // etcd's rule on the raw pair.
                    let expected = match end {
                        [] => k == key,
                        [0] => k >= key,
                        end => k >= key && k.as_slice() < end,
                    };
                    assert_eq!(
                        range.contains(k),
                        expected,
                        "key {} end {} stored {}",
                        key.len(),
                        end.len(),
                        k.len()
                    );
                }
                let (start, _) = range.bounds();
                if let std::ops::Bound::Included(s) = start {
                    assert!(s.len() <= MAX_KEY_BYTES + 1);
                }
            }
        }
    }

    #[test]
    fn overlap_rules() {
        // Proves overlap detection used by the duplicate-key rule of Txn.
        let r = |k: &[u8], e: &[u8]| KeyRange::new(k, e);
        assert!(r(b"a", b"").overlaps(&r(b"a", b"")));
        assert!(!r(b"a", b"").overlaps(&r(b"b", b"")));
        assert!(r(b"a", b"c").overlaps(&r(b"b", b"")));
        assert!(!r(b"a", b"b").overlaps(&r(b"b", b"")));
        assert!(r(b"a", b"\0").overlaps(&r(b"zz", b"")));
        assert!(!r(b"c", b"d").overlaps(&r(b"a", b"c")));
        assert!(r(b"c", b"e").overlaps(&r(b"a", b"d")));
    }
}
