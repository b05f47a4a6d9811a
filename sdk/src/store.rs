//! Read-only access to the store a hook runs against, and etcd's key-range rules.
//!
//! In a plugin the [`Store`] is the host's (`cairn:plugin/store`); in unit tests it is
//! [`crate::testing::MemStore`]. This module knows nothing of either.

use crate::types::KeyValue;

/// Read-only access to the store, at the revision the hook runs at.
///
/// In a guard this is the store before the write being checked. Ranges follow etcd's rules:
/// an empty `range_end` means just `key`, `"\0"` means every key from `key` on. On the host
/// every call costs fuel, so prefer [`Store::count`] to a [`Store::range`] you only count.
pub trait Store {
    /// The revision the hook sees.
    fn revision(&self) -> i64;

    /// One key, if it exists.
    fn get(&self, key: &[u8]) -> Option<KeyValue>;

    /// The keys in `[key, range_end)` in key order, at most `limit` of them (0: the host's
    /// cap, 1,000).
    fn range(&self, key: &[u8], range_end: &[u8], limit: u32) -> Vec<KeyValue>;

    /// How many keys are in `[key, range_end)`.
    fn count(&self, key: &[u8], range_end: &[u8]) -> u64;

    /// The keys that start with `prefix`, at most `limit` of them (0: the host's cap).
    fn range_prefix(&self, prefix: &[u8], limit: u32) -> Vec<KeyValue> {
        self.range(prefix, &prefix_end(prefix), limit)
    }

    /// How many keys start with `prefix`.
    fn count_prefix(&self, prefix: &[u8]) -> u64 {
        self.count(prefix, &prefix_end(prefix))
    }
}

/// The range end that selects every key starting with `prefix`, as etcd's
/// `clientv3.GetPrefixRangeEnd`: the prefix with its last byte below `0xff` incremented and
/// what follows dropped, or `"\0"` (every key) when there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&byte| byte < 0xff) {
        Some(last) => {
            let mut end = prefix[..=last].to_vec();
            end[last] += 1;
            end
        }
        None => vec![0],
    }
}

/// Whether `key` falls in the range `[start, range_end)` with etcd's rules: an empty
/// `range_end` selects just `start`, `"\0"` every key from `start` on.
pub fn range_contains(start: &[u8], range_end: &[u8], key: &[u8]) -> bool {
    match range_end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// prefix_end matches etcd's GetPrefixRangeEnd, including the all-0xff and empty cases.
    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/jobs/"), b"/jobs0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    /// range_contains treats an empty end as one key and "\0" as open-ended.
    #[test]
    fn range_contains_follows_etcd() {
        assert!(range_contains(b"a", b"", b"a"));
        assert!(!range_contains(b"a", b"", b"ab"));
        assert!(range_contains(b"a", b"\0", b"zzz"));
        assert!(!range_contains(b"b", b"\0", b"a"));
        assert!(range_contains(b"a", b"c", b"b"));
        assert!(!range_contains(b"a", b"c", b"c"));
    }
}
