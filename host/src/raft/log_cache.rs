//! The newest Raft log entries, kept decoded in memory beside the log on disk.
//!
//! Almost every log read is of entries appended moments ago: the leader replicates what it
//! just appended, and every member applies what it just committed. Without this cache each
//! such read is a fjall range scan plus a decode per entry, and apply's long ranges also take
//! a trip to the blocking pool. The cache holds a window of consecutive entries ending at the
//! last one appended, bounded by bytes; a read that falls inside the window is a clone, any
//! other read goes to disk as before.
//!
//! The window mirrors the log exactly: [`LogCache::append`] follows every append,
//! [`LogCache::truncate_from`] every truncation and [`LogCache::purge_to`] every purge. Entries
//! are visible here as soon as they are in the log (before they are synced), as they are in
//! fjall's memtable; durability is still the sync thread's business.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::types::Entry;

/// What an entry costs beyond its encoded bytes (the decoded structs and allocations).
const ENTRY_OVERHEAD: usize = 64;

/// Recent entries, `entries[i]` at log index `first + i`.
pub struct LogCache {
    inner: Mutex<Window>,
    capacity: usize,
}

#[derive(Default)]
struct Window {
    entries: VecDeque<(Entry, usize)>,
    first: u64,
    bytes: usize,
}

impl Window {
    fn last(&self) -> Option<u64> {
        (!self.entries.is_empty()).then(|| self.first + self.entries.len() as u64 - 1)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn pop_front(&mut self) {
        if let Some((_, cost)) = self.entries.pop_front() {
            self.bytes -= cost;
            self.first += 1;
        }
    }
}

impl LogCache {
    /// A cache holding at most about `capacity` bytes of entries.
    pub fn new(capacity: usize) -> LogCache {
        LogCache {
            inner: Mutex::new(Window::default()),
            capacity,
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding the lock leaves a window that is still consecutive (every
        // change is a push or pop), so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an appended entry whose encoding is `encoded_len` bytes. An entry that does not
    /// follow the window's last one starts a new window.
    pub fn append(&self, entry: Entry, encoded_len: usize) {
        let mut w = self.window();
        let index = entry.log_id.index;
        if w.last().is_none_or(|last| last + 1 != index) {
            w.clear();
            w.first = index;
        }
        let cost = encoded_len + ENTRY_OVERHEAD;
        w.entries.push_back((entry, cost));
        w.bytes += cost;
        while w.bytes > self.capacity && w.entries.len() > 1 {
            w.pop_front();
        }
    }

    /// Forgets the entries from `index` on (the log was truncated there).
    pub fn truncate_from(&self, index: u64) {
        let mut w = self.window();
        while w.last().is_some_and(|last| last >= index) {
            if let Some((_, cost)) = w.entries.pop_back() {
                w.bytes -= cost;
            }
        }
    }

    /// Forgets the entries up to and including `index` (the log was purged there).
    pub fn purge_to(&self, index: u64) {
        let mut w = self.window();
        while !w.entries.is_empty() && w.first <= index {
            w.pop_front();
        }
    }

    /// The entries `start..end`, if the window holds all of them.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let w = self.window();
        let last = w.last()?;
        if start < w.first || end > last + 1 || start > end {
            return None;
        }
        let from = (start - w.first) as usize;
        let to = (end - w.first) as usize;
        Some(w.entries.range(from..to).map(|(e, _)| e.clone()).collect())
    }

    /// The entries from `start` on, before `end`, while they add up to at most `budget` bytes
    /// (the first one whatever its size), if the window holds at least the first.
    pub fn get_within(&self, start: u64, end: u64, budget: usize) -> Option<Vec<Entry>> {
        let w = self.window();
        let last = w.last()?;
        if start < w.first || start > last || start >= end {
            return None;
        }
        let from = (start - w.first) as usize;
        let to = (end.min(last + 1) - w.first) as usize;
        let mut spent = 0;
        Some(
            w.entries
                .range(from..to)
                .take_while(|(_, cost)| {
                    let first = spent == 0;
                    spent += cost;
                    first || spent <= budget
                })
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{blank_ent, log_id};

    use super::*;
    use crate::raft::types::TypeConfig;

    fn entry(index: u64) -> Entry {
        blank_ent::<TypeConfig>(1, 0, index)
    }

    /// A roomy cache holding `indexes`, 10 bytes each.
    fn filled(indexes: std::ops::RangeInclusive<u64>) -> LogCache {
        let cache = LogCache::new(1 << 20);
        for i in indexes {
            cache.append(entry(i), 10);
        }
        cache
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_inside_the_window() {
        let cache = filled(5..=9);
        assert_eq!(indexes(cache.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(cache.get(7, 8)), Some(vec![7]));
        assert_eq!(indexes(cache.get(7, 7)), Some(vec![]));
        assert_eq!(cache.get(4, 8), None, "starts before the window");
        assert_eq!(cache.get(8, 11), None, "ends after the last entry");
    }

    #[test]
    fn follows_truncation_and_purge() {
        let cache = filled(1..=10);
        cache.truncate_from(8);
        assert_eq!(cache.get(7, 9), None, "8 is gone");
        let mut replacement = entry(8);
        replacement.log_id = log_id::<TypeConfig>(2, 0, 8);
        cache.append(replacement, 10);
        assert_eq!(
            cache.get(8, 9).expect("in the window")[0]
                .log_id
                .leader_id
                .term,
            2
        );
        cache.purge_to(3);
        assert_eq!(cache.get(3, 5), None, "3 is purged");
        assert_eq!(indexes(cache.get(4, 9)), Some(vec![4, 5, 6, 7, 8]));
        cache.purge_to(100);
        assert_eq!(cache.get(8, 9), None, "everything is purged");
    }

    #[test]
    fn a_gap_starts_a_new_window() {
        let cache = filled(1..=3);
        // After a snapshot install the log continues past entries this member never had.
        cache.append(entry(50), 10);
        assert_eq!(cache.get(1, 2), None);
        assert_eq!(indexes(cache.get(50, 51)), Some(vec![50]));
    }

    #[test]
    fn a_limited_read_stops_at_its_budget_or_the_window() {
        let cache = LogCache::new(1 << 20);
        for index in 1..=10 {
            // Each costs 100 bytes with the overhead.
            cache.append(entry(index), 100 - ENTRY_OVERHEAD);
        }
        let read = |start, end, budget| indexes(cache.get_within(start, end, budget));
        assert_eq!(read(3, 11, 1000), Some((3..=10).collect()));
        assert_eq!(read(3, 11, 300), Some(vec![3, 4, 5]));
        assert_eq!(read(3, 5, 300), Some(vec![3, 4]));
        // The first entry comes whatever the budget.
        assert_eq!(read(3, 11, 10), Some(vec![3]));
        // Past the window's end: what the window has.
        assert_eq!(read(9, 20, 1000), Some(vec![9, 10]));
        // Not starting inside the window, or an empty range: disk's business.
        assert_eq!(read(11, 20, 1000), None);
        assert_eq!(read(0, 5, 1000), None);
        assert_eq!(read(4, 4, 1000), None);
    }

    #[test]
    fn keeps_within_its_capacity() {
        let cost = 100 + ENTRY_OVERHEAD;
        let cache = LogCache::new(3 * cost);
        for i in 1..=10 {
            cache.append(entry(i), 100);
        }
        assert_eq!(indexes(cache.get(8, 11)), Some(vec![8, 9, 10]));
        assert_eq!(cache.get(7, 11), None, "7 was evicted");
        // An entry over the whole capacity still stays, alone: the newest entry is always
        // the one replication reads next.
        cache.append(entry(11), 10 * cost);
        assert_eq!(indexes(cache.get(11, 12)), Some(vec![11]));
    }
}
