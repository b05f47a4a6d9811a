//! The watch hub: recent events of this member, in memory, shared by every watch stream.
//!
//! ```text
//!  state machine ──revisions (watch channel, never blocks apply)──▶ hub task
//!                                                                    │ one history read per
//!                                                                    │ commit, all keys
//!                                                                    ▼
//!                                   ring of recent revisions' events (bounded)
//!                                                                    │ published revision
//!                                          watch streams ◀───────────┘ (filter in memory)
//! ```
//!
//! History (`kv_revs`) stays the source of truth: the hub reads each new commit's events from
//! it once, so a thousand watchers cost one read, not a thousand. A watcher whose next
//! revision has left the ring (it fell behind, or it started in the past) reads history
//! itself, as before, and comes back to the ring once it has caught up. Nothing here ever
//! waits on a watcher, and apply never waits on the hub.

pub mod watcher;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::mvcc::{Event, KeyRange, Mvcc, Revision, Revisions};
use crate::storage::Storage;
pub use watcher::{Delivery, Filter, ReadFailed, Refusal, Shaped, SharedEvent, Spec, Watchers};

/// Most revisions the ring holds.
const RING_REVISIONS: usize = 10_000;
/// Most bytes of keys and values the ring holds (an estimate; events are shared, not copied).
const RING_BYTES: usize = 64 << 20;
/// Most revisions read from history in one step when the hub catches up.
const READ_CHUNK: i64 = 1_000;
/// Bytes of events the hub reads from history at a time (it stops at a whole revision).
const READ_BYTES: usize = 4 << 20;

/// One revision's events.
struct Slot {
    rev: Revision,
    events: Vec<SharedEvent>,
    /// Whether the events carry `prev_kv` (read while a watcher wanted it).
    with_prev: bool,
    bytes: usize,
}

/// Events for every revision in `(base, last]` that has any.
struct Ring {
    base: Revision,
    last: Revision,
    slots: VecDeque<Slot>,
    bytes: usize,
}

impl Ring {
    fn reset(&mut self, at: Revision) {
        self.base = at;
        self.last = at;
        self.slots.clear();
        self.bytes = 0;
    }

    fn push(&mut self, slot: Slot) {
        self.bytes += slot.bytes;
        self.slots.push_back(slot);
        while self.slots.len() > RING_REVISIONS || self.bytes > RING_BYTES {
            let Some(old) = self.slots.pop_front() else {
                break;
            };
            self.bytes -= old.bytes;
            self.base = old.rev;
        }
    }
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    ring: Arc<RwLock<Ring>>,
    published: watch::Sender<Revisions>,
    prev_watchers: Arc<AtomicUsize>,
    /// Live watchers on this member: with none, the hub reads nothing.
    watchers: Arc<AtomicUsize>,
}

/// Registration of a live watcher (see [`EventHub::watching`]).
pub struct WatcherInterest(Arc<AtomicUsize>);

impl Drop for WatcherInterest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registration of a watcher that wants `prev_kv`: while one exists, the hub reads previous
/// values too.
pub struct PrevKvInterest(Arc<AtomicUsize>);

impl Drop for PrevKvInterest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EventHub {
    /// Starts the hub task, which follows `revisions` until `stopping` turns true.
    pub fn start(
        storage: Storage,
        revisions: watch::Receiver<Revisions>,
        stopping: watch::Receiver<bool>,
    ) -> EventHub {
        let start = *revisions.borrow();
        let hub = EventHub {
            ring: Arc::new(RwLock::new(Ring {
                base: start.current,
                last: start.current,
                slots: VecDeque::new(),
                bytes: 0,
            })),
            published: watch::Sender::new(start),
            prev_watchers: Arc::default(),
            watchers: Arc::default(),
        };
        tokio::spawn(hub.clone().run(storage, revisions, stopping));
        hub
    }

    /// Follows the revisions whose events the hub holds (or has given up holding: a watcher
    /// that finds nothing in the ring reads history).
    pub fn subscribe(&self) -> watch::Receiver<Revisions> {
        self.published.subscribe()
    }

    /// Registers a watcher for as long as the returned value lives. While no watcher is
    /// registered the hub skips reading history: a member nobody watches pays nothing.
    pub fn watching(&self) -> WatcherInterest {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherInterest(self.watchers.clone())
    }

    pub fn want_prev_kv(&self) -> PrevKvInterest {
        self.prev_watchers.fetch_add(1, Ordering::Relaxed);
        PrevKvInterest(self.prev_watchers.clone())
    }

    /// The events of revisions `from..=to` that `filter` admits, shaped by it, if the ring
    /// holds all of them (with previous values when the filter wants them); `None` sends the
    /// caller to history. Stops at a revision boundary once the events hold `max_bytes`, and
    /// says which revision the events cover up to (as [`crate::mvcc::ReadView::events`]).
    pub fn events(
        &self,
        from: Revision,
        to: Revision,
        filter: &Filter,
        max_bytes: usize,
    ) -> Option<(Vec<Shaped>, Revision)> {
        let ring = self.ring.read().expect("watch ring lock poisoned");
        if from <= ring.base || to > ring.last {
            return None;
        }
        let start = ring.slots.partition_point(|s| s.rev < from);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for slot in ring.slots.range(start..).take_while(|s| s.rev <= to) {
            if filter.prev_kv && !slot.with_prev {
                return None;
            }
            if bytes >= max_bytes && slot.rev > from {
                return Some((out, slot.rev - 1));
            }
            for e in slot.events.iter().filter(|e| filter.admits(e.event())) {
                let e = filter.shape(e);
                bytes += e.size();
                out.push(e);
            }
        }
        Some((out, to))
    }

    async fn run(
        self,
        storage: Storage,
        mut revisions: watch::Receiver<Revisions>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            let target = *revisions.borrow_and_update();
            self.catch_up(&storage, target).await;
            self.published.send_replace(Revisions {
                current: self.ring.read().expect("watch ring lock poisoned").last,
                ..target
            });
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Reads the events of revisions after the ring's last, up to `target.current`.
    async fn catch_up(&self, storage: &Storage, target: Revisions) {
        if self.watchers.load(Ordering::Relaxed) == 0 {
            // Nobody to serve: move on without reading (a watcher arriving later that needs
            // these revisions reads them from history).
            self.ring
                .write()
                .expect("watch ring lock poisoned")
                .reset(target.current);
            return;
        }
        let last = self.ring.read().expect("watch ring lock poisoned").last;
        let mut from = last + 1;
        if target.current - last > RING_REVISIONS as i64 {
            // Far behind (a snapshot was installed, or the hub was starved): keep only what
            // the ring can hold; older revisions come from history.
            from = target.current - RING_REVISIONS as i64 + 1;
            self.ring
                .write()
                .expect("watch ring lock poisoned")
                .reset(from - 1);
        }
        while from <= target.current {
            let to = target.current.min(from + READ_CHUNK - 1);
            let with_prev = self.prev_watchers.load(Ordering::Relaxed) > 0;
            let storage = storage.clone();
            let read = tokio::task::spawn_blocking(move || {
                let view = Mvcc::read_view(&storage)?;
                view.events(from, to, &KeyRange::all(), with_prev, READ_BYTES)
            })
            .await;
            let (events, to) = match read {
                Ok(Ok(read)) => read,
                failed => {
                    // Leave these revisions to history reads, which report the error.
                    tracing::error!(?failed, "watch hub could not read history");
                    self.ring
                        .write()
                        .expect("watch ring lock poisoned")
                        .reset(target.current);
                    return;
                }
            };
            let mut ring = self.ring.write().expect("watch ring lock poisoned");
            let mut slot_events: Vec<Event> = Vec::new();
            let mut slot_rev = from;
            for e in events {
                if e.kv.mod_revision != slot_rev && !slot_events.is_empty() {
                    push_slot(
                        &mut ring,
                        slot_rev,
                        std::mem::take(&mut slot_events),
                        with_prev,
                    );
                }
                slot_rev = e.kv.mod_revision;
                slot_events.push(e);
            }
            if !slot_events.is_empty() {
                push_slot(&mut ring, slot_rev, slot_events, with_prev);
            }
            ring.last = to;
            from = to + 1;
        }
    }
}

fn push_slot(ring: &mut Ring, rev: Revision, events: Vec<Event>, with_prev: bool) {
    let bytes = events.iter().map(Event::size).sum::<usize>() + 64;
    ring.push(Slot {
        rev,
        events: events.into_iter().map(SharedEvent::new).collect(),
        with_prev,
        bytes,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{EventKind, KeyValue};

    fn put(key: &str, rev: Revision, prev: bool) -> Event {
        let kv = |value: &str| KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: 1,
            value: value.as_bytes().to_vec(),
            lease: 0,
        };
        Event {
            kind: EventKind::Put,
            kv: kv("new"),
            prev_kv: prev.then(|| kv("old")),
        }
    }

    fn only(key: &[u8], prev_kv: bool) -> Filter {
        Filter {
            range: KeyRange::new(key, b""),
            no_put: false,
            no_delete: false,
            prev_kv,
        }
    }

    fn all(prev_kv: bool) -> Filter {
        Filter {
            range: KeyRange::all(),
            ..only(b"", prev_kv)
        }
    }

    fn hub(base: Revision) -> EventHub {
        EventHub {
            ring: Arc::new(RwLock::new(Ring {
                base,
                last: base,
                slots: VecDeque::new(),
                bytes: 0,
            })),
            published: watch::Sender::new(Revisions {
                current: base,
                compact: -1,
            }),
            prev_watchers: Arc::default(),
            watchers: Arc::default(),
        }
    }

    #[test]
    fn ring_serves_only_what_it_holds_whole() {
        // Proves the ring answers a window only when it holds every revision of it (with
        // prev_kv if asked), filters by key range, and sends everything else to history.
        let hub = hub(1);
        {
            let mut ring = hub.ring.write().expect("lock");
            push_slot(
                &mut ring,
                2,
                vec![put("a", 2, false), put("b", 2, false)],
                false,
            );
            push_slot(&mut ring, 3, vec![put("a", 3, true)], true);
            ring.last = 4; // revision 4 changed nothing the ring needs (none in history)
        }
        let got = hub
            .events(2, 4, &only(b"a", false), usize::MAX)
            .expect("held")
            .0;
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|e| e.event().kv.key == b"a" && e.prev_kv().is_none())
        );
        assert_eq!(
            hub.events(2, 3, &all(false), usize::MAX)
                .expect("held")
                .0
                .len(),
            3
        );
        assert!(
            hub.events(1, 3, &all(false), usize::MAX).is_none(),
            "revision 1 is before the ring"
        );
        assert!(
            hub.events(2, 5, &all(false), usize::MAX).is_none(),
            "revision 5 is not read yet"
        );
        assert!(
            hub.events(2, 3, &all(true), usize::MAX).is_none(),
            "revision 2 was read without prev_kv"
        );
        let with_prev = hub
            .events(3, 3, &all(true), usize::MAX)
            .expect("held with prev")
            .0;
        assert!(with_prev[0].prev_kv().is_some());
    }

    #[test]
    fn ring_forgets_the_oldest_revisions_first() {
        // Proves the ring stays within its revision bound and moves its base accordingly.
        let hub = hub(0);
        let mut ring = hub.ring.write().expect("lock");
        let n = RING_REVISIONS as i64 + 10;
        for rev in 1..=n {
            push_slot(&mut ring, rev, vec![put("k", rev, false)], false);
        }
        ring.last = n;
        assert_eq!(ring.slots.len(), RING_REVISIONS);
        assert_eq!(ring.base, 10);
        drop(ring);
        assert!(hub.events(10, n, &only(b"k", false), usize::MAX).is_none());
        assert_eq!(
            hub.events(11, n, &only(b"k", false), usize::MAX)
                .expect("held")
                .0
                .len(),
            RING_REVISIONS
        );
        // A byte bound stops at a whole revision and says where.
        let (events, covered) = hub.events(11, n, &only(b"k", false), 1).expect("held");
        assert_eq!((events.len(), covered), (1, 11));
    }
}
