//! The watchers of one watch stream, and what each is due.
//!
//! A watcher is a [`Filter`] and a cursor: the first revision it has not been sent. A delivery
//! [`Watchers::round`] reads, for every watcher behind the latest commit, the events after its
//! cursor: from the hub's in-memory ring when the watcher is caught up, from history when it
//! is behind (it started in the past, or fell behind while its client did not read). Delivery
//! is therefore ordered, gap-free and whole per revision by construction, and a watcher that
//! falls behind simply reads more history. This is etcd's synced/unsynced split: a watcher
//! that starts in the past is unsynced until it has read history up to the store's revision,
//! in rounds of at most [`MAX_REVS_PER_RESPONSE`] revisions and about [`RESPONSE_BYTES`].
//!
//! The stream's protocol (gRPC or the HTTP gateway, budgets, fragmenting) is `api/watch.rs`;
//! this module knows MVCC events only, so it is tested without a transport.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{EventHub, PrevKvInterest, WatcherInterest};
use crate::metrics::{GaugeGuard, METRICS};
use crate::mvcc::{self, Event, EventKind, KeyRange, Mvcc, Revision, Revisions};
use crate::storage::Storage;

/// Most revisions in one delivery while catching up (etcd's watchBatchMaxRevs).
pub const MAX_REVS_PER_RESPONSE: i64 = 1000;
/// Bytes of keys and values read into one delivery (it ends at a whole revision).
pub const RESPONSE_BYTES: usize = 256 << 10;
/// History reads (catching-up watchers) that run at once on a member, whatever the number of
/// streams: each holds a snapshot and a delivery's worth of events while it runs, so many
/// readers catching up at once cost memory and blocking threads in proportion to this, not
/// to their number.
static HISTORY_READS: Semaphore = Semaphore::const_new(4);

/// Which events a watcher is sent, and in what shape: etcd's key range, its NOPUT and
/// NODELETE filters, and `prev_kv`. The one filter every read path applies (the hub's ring,
/// shared history scans, a lone watcher's history read).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl Filter {
    /// Whether the watcher is sent `event`.
    pub fn admits(&self, event: &Event) -> bool {
        self.range.contains(&event.kv.key)
            && match event.kind {
                EventKind::Put => !self.no_put,
                EventKind::Delete => !self.no_delete,
            }
    }

    /// `event` as the watcher is sent it (without the previous version unless it asked).
    pub fn shape(&self, event: &SharedEvent) -> Shaped {
        Shaped {
            event: event.clone(),
            prev_kv: self.prev_kv,
        }
    }
}

/// One event as the hub's ring and shared history scans hold it: read once, shared by every
/// watcher it goes to, never copied per watcher. Its wire encoding is made once too, by the
/// first stream that sends it (one with the previous version and one without), and every
/// other stream sends those bytes.
#[derive(Clone, Debug)]
pub struct SharedEvent(Arc<SharedInner>);

#[derive(Debug)]
struct SharedInner {
    event: Event,
    /// The encodings without and with the previous version, once made.
    wire: [OnceLock<Bytes>; 2],
}

impl SharedEvent {
    pub fn new(event: Event) -> Self {
        SharedEvent(Arc::new(SharedInner {
            event,
            wire: [OnceLock::new(), OnceLock::new()],
        }))
    }

    pub fn event(&self) -> &Event {
        &self.0.event
    }
}

/// An event as one watcher is sent it: a shared event, and whether its previous version
/// goes with it.
#[derive(Clone, Debug)]
pub struct Shaped {
    event: SharedEvent,
    prev_kv: bool,
}

impl Shaped {
    /// An event of this watcher's own (one a watch filter rewrote), sent as it is.
    pub fn owned(event: Event) -> Self {
        Shaped {
            event: SharedEvent::new(event),
            prev_kv: true,
        }
    }

    /// The event, previous version included whether or not this watcher is sent it.
    pub fn event(&self) -> &Event {
        self.event.event()
    }

    /// The previous version, if this watcher is sent it.
    pub fn prev_kv(&self) -> Option<&crate::mvcc::KeyValue> {
        self.prev_kv
            .then(|| self.event().prev_kv.as_ref())
            .flatten()
    }

    /// A copy of the event as this watcher is sent it.
    pub fn to_event(&self) -> Event {
        Event {
            kind: self.event().kind,
            kv: self.event().kv.clone(),
            prev_kv: self.prev_kv().cloned(),
        }
    }

    /// Bytes of keys and values this watcher is sent (see [`Event::size`]).
    pub fn size(&self) -> usize {
        self.event().kv.size() + self.prev_kv().map_or(0, crate::mvcc::KeyValue::size)
    }

    /// The event's wire encoding as this watcher is sent it: `encode(self)` makes it on the
    /// first call for the shared event and this shape (with or without the previous
    /// version), and later calls, from any stream, return the same bytes.
    pub fn wire(&self, encode: impl FnOnce(&Shaped) -> Bytes) -> &Bytes {
        let with_prev = self.prev_kv().is_some();
        self.event.0.wire[usize::from(with_prev)].get_or_init(|| encode(self))
    }
}

impl PartialEq for Shaped {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.event(), other.event());
        a.kind == b.kind && a.kv == b.kv && self.prev_kv() == other.prev_kv()
    }
}

/// What a client asks to watch.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The client's chosen id, or 0 to let the stream choose.
    pub id: i64,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// The first revision to send, or 0 for "after the current one".
    pub start_revision: Revision,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    /// Send an empty response every progress interval in which nothing was sent.
    pub progress_notify: bool,
    /// Split responses larger than the request size limit (etcd's `fragment`).
    pub fragment: bool,
}

/// Why a watch was not created; the text is etcd's cancel reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
}

/// What a round has for one watcher.
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// Events (at least one) of revisions up to and including `to`.
    Events {
        id: i64,
        to: Revision,
        events: Vec<Shaped>,
        /// The watcher asked for large responses to be split.
        fragment: bool,
    },
    /// The watcher's next revision was compacted away: it is canceled, as etcd does.
    Compacted { id: i64, compact_revision: Revision },
}

/// History could not be read; the stream ends with this.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailed {
    #[error(transparent)]
    Storage(#[from] mvcc::Error),
    #[error("watch read failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One watch: a filter and the first revision not yet sent.
struct Watcher {
    filter: Filter,
    next_rev: Revision,
    progress_notify: bool,
    /// Whether an event went out since the last progress tick.
    sent_since_tick: bool,
    fragment: bool,
    /// False until a watcher that started in the past has read history up to the store's
    /// revision (as etcd's unsynced watchers do); then it follows the hub.
    synced: bool,
    /// Keeps the hub reading while this watcher lives.
    _interest: WatcherInterest,
    /// Keeps the hub reading previous values while this watcher wants them.
    _prev_interest: Option<PrevKvInterest>,
    /// Counts this watcher in `etcd_debugging_mvcc_watcher_total`.
    _counted: GaugeGuard,
    /// Counts it in `etcd_debugging_mvcc_slow_watcher_total` while it is not synced.
    slow: Option<GaugeGuard>,
}

impl Watcher {
    fn set_synced(&mut self) {
        self.synced = true;
        self.slow = None;
    }
}

/// The watchers of one stream.
pub struct Watchers {
    hub: EventHub,
    storage: Storage,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
}

impl Watchers {
    pub fn new(hub: EventHub, storage: Storage) -> Self {
        Watchers {
            hub,
            storage,
            watchers: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Adds a watcher; `current` is the store's revision. Returns its id, or the id it would
    /// have had and why it was refused.
    pub fn create(&mut self, spec: Spec, current: Revision) -> Result<i64, (i64, Refusal)> {
        let refusal = if KeyRange::pair_is_empty(&spec.key, &spec.range_end) {
            Some(Refusal::EmptyRange)
        } else if spec.id != 0 && self.watchers.contains_key(&spec.id) {
            Some(Refusal::DuplicateId)
        } else {
            None
        };
        let id = if spec.id != 0 {
            spec.id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if let Some(refusal) = refusal {
            return Err((id, refusal));
        }
        let synced = spec.start_revision == 0 || spec.start_revision > current;
        self.watchers.insert(
            id,
            Watcher {
                filter: Filter {
                    range: KeyRange::new(&spec.key, &spec.range_end),
                    no_put: spec.no_put,
                    no_delete: spec.no_delete,
                    prev_kv: spec.prev_kv,
                },
                next_rev: if spec.start_revision == 0 {
                    current + 1
                } else {
                    spec.start_revision
                },
                progress_notify: spec.progress_notify,
                sent_since_tick: false,
                fragment: spec.fragment,
                synced,
                _interest: self.hub.watching(),
                _prev_interest: spec.prev_kv.then(|| self.hub.want_prev_kv()),
                _counted: GaugeGuard::new(&METRICS.watchers),
                slow: (!synced).then(|| GaugeGuard::new(&METRICS.slow_watchers)),
            },
        );
        Ok(id)
    }

    /// Whether watcher `id` exists (it was not canceled).
    pub fn contains(&self, id: i64) -> bool {
        self.watchers.contains_key(&id)
    }

    /// Counts watcher `id` as sent nothing since the last progress tick (its delivery was
    /// filtered out entirely), so it is due a progress notification like an idle watcher.
    pub fn mark_unsent(&mut self, id: i64) {
        if let Some(w) = self.watchers.get_mut(&id) {
            w.sent_since_tick = false;
        }
    }

    /// Removes watcher `id`; false if there was none.
    pub fn cancel(&mut self, id: i64) -> bool {
        self.watchers.remove(&id).is_some()
    }

    /// etcd's periodic progress notification: the `progress_notify` watchers that are caught
    /// up to `current` and were sent nothing since the last tick. Starts the next tick.
    pub fn progress_due(&mut self, current: Revision) -> Vec<i64> {
        self.watchers
            .iter_mut()
            .filter_map(|(id, w)| {
                let due = w.progress_notify && !w.sent_since_tick && w.next_rev > current;
                w.sent_since_tick = false;
                due.then_some(*id)
            })
            .collect()
    }

    /// One delivery round: what every watcher is due, given the revisions the hub holds
    /// (`hub`) and the store's revision (`store_current`). `None` when no watcher was due;
    /// a watcher more than [`MAX_REVS_PER_RESPONSE`] behind takes several rounds. The
    /// watchers that read history are read from one snapshot in one blocking call.
    pub async fn round(
        &mut self,
        hub: Revisions,
        store_current: Revision,
    ) -> Result<Option<Vec<Delivery>>, ReadFailed> {
        let mut out = self.cancel_compacted(hub.compact);
        let (mut batches, plan) = self.plan(hub, store_current);
        if batches.is_empty() && plan.is_empty() {
            return Ok((!out.is_empty()).then_some(out));
        }
        if !plan.is_empty() {
            let storage = self.storage.clone();
            // Never closed, so the permit always comes.
            let _reading = HISTORY_READS.acquire().await;
            batches.extend(tokio::task::spawn_blocking(move || read_plan(&storage, plan)).await??);
        }
        self.settle(batches, store_current, &mut out);
        Ok(Some(out))
    }

    /// Cancels, as etcd does, every watcher whose next revision was compacted away.
    fn cancel_compacted(&mut self, compact: Revision) -> Vec<Delivery> {
        let compacted: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.next_rev < compact)
            .map(|(id, _)| *id)
            .collect();
        for id in &compacted {
            self.watchers.remove(id);
        }
        compacted
            .into_iter()
            .map(|id| Delivery::Compacted {
                id,
                compact_revision: compact,
            })
            .collect()
    }

    /// What each watcher is due: events the hub's ring holds for the caught-up ones, and the
    /// history reads the others need. A watcher that started in the past is synced once its
    /// cursor passes the store's revision.
    fn plan(&mut self, hub: Revisions, store_current: Revision) -> (Vec<Batch>, Vec<Read>) {
        let mut batches: Vec<Batch> = Vec::new();
        let mut plan: Vec<Read> = Vec::new();
        // Watchers alike (the same filter, due the same revisions) share one read of the
        // ring: a stream's watchers often are.
        type Window<'a> = (Revision, Revision, &'a Filter);
        let mut alike: HashMap<Window<'_>, Option<(Vec<Shaped>, Revision)>> = HashMap::new();
        for (id, w) in &mut self.watchers {
            if !w.synced {
                if w.next_rev > store_current {
                    w.set_synced();
                } else {
                    plan.push(Read {
                        id: *id,
                        from: w.next_rev,
                        to: store_current.min(w.next_rev + MAX_REVS_PER_RESPONSE - 1),
                        filter: w.filter.clone(),
                    });
                    continue;
                }
            }
            let w: &Watcher = w;
            if w.next_rev > hub.current {
                continue;
            }
            let to = hub.current.min(w.next_rev + MAX_REVS_PER_RESPONSE - 1);
            let held = alike
                .entry((w.next_rev, to, &w.filter))
                .or_insert_with(|| self.hub.events(w.next_rev, to, &w.filter, RESPONSE_BYTES));
            match held {
                Some((events, to)) => batches.push((*id, *to, Ok(events.clone()))),
                None => plan.push(Read {
                    id: *id,
                    from: w.next_rev,
                    to,
                    filter: w.filter.clone(),
                }),
            }
        }
        (batches, plan)
    }

    /// Moves each watcher's cursor past what was read for it, and adds its deliveries.
    fn settle(&mut self, batches: Vec<Batch>, store_current: Revision, out: &mut Vec<Delivery>) {
        for (id, to, outcome) in batches {
            let events = match outcome {
                Ok(events) => events,
                Err(compact_revision) => {
                    self.watchers.remove(&id);
                    out.push(Delivery::Compacted {
                        id,
                        compact_revision,
                    });
                    continue;
                }
            };
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            w.next_rev = to + 1;
            if to >= store_current {
                w.set_synced();
            }
            if events.is_empty() {
                continue;
            }
            w.sent_since_tick = true;
            out.push(Delivery::Events {
                id,
                to,
                events,
                fragment: w.fragment,
            });
        }
    }
}

/// Events read for one watcher in a round: its id, the last revision covered, and the events
/// (or the compact revision that took them away).
type Batch = (i64, Revision, Result<Vec<Shaped>, Revision>);

/// What one watcher needs read from history in a round.
struct Read {
    id: i64,
    from: Revision,
    to: Revision,
    filter: Filter,
}

/// Reads a round's plan from one snapshot. Watchers that need the same revision window (the
/// common case: every caught-up watcher needs the latest commits) share one scan of history,
/// each taking the events its filter admits; a lone watcher scans only its own range.
fn read_plan(storage: &Storage, plan: Vec<Read>) -> Result<Vec<Batch>, mvcc::Error> {
    let view = Mvcc::read_view(storage)?;
    let mut windows: BTreeMap<(Revision, Revision), Vec<Read>> = BTreeMap::new();
    for r in plan {
        windows.entry((r.from, r.to)).or_default().push(r);
    }
    let mut out = Vec::new();
    for ((from, to), reads) in windows {
        if from < view.compact_rev {
            // Compacted after the plan was made: cancel with the new mark.
            out.extend(reads.iter().map(|r| (r.id, to, Err(view.compact_rev))));
            continue;
        }
        let shared = if reads.len() > 1 {
            let any_prev = reads.iter().any(|r| r.filter.prev_kv);
            let budget = RESPONSE_BYTES.saturating_mul(reads.len());
            let (all, covered) = view.events(from, to, &KeyRange::all(), any_prev, budget)?;
            let all: Vec<SharedEvent> = all.into_iter().map(SharedEvent::new).collect();
            Some((all, covered))
        } else {
            None
        };
        for r in reads {
            let (events, to) = match &shared {
                Some((all, covered)) => (
                    all.iter()
                        .filter(|e| r.filter.admits(e.event()))
                        .map(|e| r.filter.shape(e))
                        .collect(),
                    *covered,
                ),
                None => {
                    let (events, to) =
                        view.events(from, to, &r.filter.range, r.filter.prev_kv, RESPONSE_BYTES)?;
                    let admitted = events
                        .into_iter()
                        .filter(|e| r.filter.admits(e))
                        .map(|e| r.filter.shape(&SharedEvent::new(e)))
                        .collect();
                    (admitted, to)
                }
            };
            out.push((r.id, to, Ok(events)));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "watcher_test.rs"]
mod tests;
