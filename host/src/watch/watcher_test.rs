//! Watcher delivery without a transport: a real store in a temporary directory, a real hub,
//! and `Watchers` driven round by round as a stream drives it.

use std::time::Duration;

use tempfile::TempDir;
use tokio::sync::watch;

use super::*;
use crate::mvcc::{
    ApplyBatch, CompactRequest, DeleteRangeRequest, NoLeases, PutRequest, WriteRequest,
};

/// A store, the hub following it, and the channels that drive the hub.
struct Fixture {
    _dir: TempDir,
    storage: Storage,
    hub: EventHub,
    revisions: watch::Sender<Revisions>,
    _stopping: watch::Sender<bool>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open storage");
        let revs = Mvcc::revisions(&storage).expect("revisions");
        let (revisions, revisions_rx) = watch::channel(revs);
        let (stopping, stopping_rx) = watch::channel(false);
        let hub = EventHub::start(storage.clone(), revisions_rx, stopping_rx);
        Fixture {
            _dir: dir,
            storage,
            hub,
            revisions,
            _stopping: stopping,
        }
    }

    fn watchers(&self) -> Watchers {
        Watchers::new(self.hub.clone(), self.storage.clone())
    }

    /// Applies `req` as one log entry; returns the store's revisions after it. The hub is not
    /// told (see [`Fixture::publish`]).
    fn apply(&self, req: WriteRequest) -> Revisions {
        let revs = Mvcc::revisions(&self.storage).expect("revisions");
        let mut batch = ApplyBatch::new(&self.storage, revs);
        batch
            .apply(&req, &NoLeases)
            .expect("no storage error")
            .expect("the write succeeds");
        batch.set_position(&[]);
        batch.commit().expect("commit")
    }

    fn put(&self, key: &str, value: &str) -> Revisions {
        self.apply(WriteRequest::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
    }

    fn delete(&self, key: &str) -> Revisions {
        self.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }))
    }

    fn store(&self) -> Revisions {
        Mvcc::revisions(&self.storage).expect("revisions")
    }

    /// Tells the hub about the store's revisions and waits until it holds them.
    async fn publish(&self) -> Revisions {
        let target = self.store();
        let mut published = self.hub.subscribe();
        self.revisions.send_replace(target);
        tokio::time::timeout(
            Duration::from_secs(30),
            published.wait_for(|p| p.current >= target.current),
        )
        .await
        .expect("the hub catches up within 30 s")
        .expect("the hub runs");
        *published.borrow()
    }
}

fn spec(key: &str, range_end: &str, start_revision: Revision) -> Spec {
    Spec {
        id: 0,
        key: key.into(),
        range_end: range_end.into(),
        start_revision,
        no_put: false,
        no_delete: false,
        prev_kv: false,
        progress_notify: false,
        fragment: false,
    }
}

/// Creates a watcher that must be accepted; its id.
fn create(watchers: &mut Watchers, spec: Spec, current: Revision) -> i64 {
    watchers.create(spec, current).expect("created")
}

/// The deliveries of one round that must have something due.
async fn due(watchers: &mut Watchers, hub: Revisions, store: Revision) -> Vec<Delivery> {
    watchers
        .round(hub, store)
        .await
        .expect("history reads")
        .expect("something is due")
}

/// Asserts the [`summary`] of what one round, which must have something due, delivers to
/// `id`.
async fn expect_events(
    watchers: &mut Watchers,
    hub: Revisions,
    store: Revision,
    id: i64,
    expected: Vec<(String, EventKind, Revision, bool)>,
) {
    assert_eq!(summary(&due(watchers, hub, store).await, id), expected);
}

impl Spec {
    /// This spec changed by `set`, so a test's watcher reads as one line.
    fn with(mut self, set: impl FnOnce(&mut Spec)) -> Spec {
        set(&mut self);
        self
    }
}

/// (key, kind, mod revision, has prev_kv) of each event a round delivered to `id`.
fn summary(deliveries: &[Delivery], want: i64) -> Vec<(String, EventKind, Revision, bool)> {
    deliveries
        .iter()
        .flat_map(|d| match d {
            Delivery::Events { id, events, .. } if *id == want => {
                events.iter().map(|e| e.to_event()).collect()
            }
            _ => Vec::new(),
        })
        .map(|e| {
            (
                String::from_utf8(e.kv.key).expect("utf-8"),
                e.kind,
                e.kv.mod_revision,
                e.prev_kv.is_some(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_watcher_from_the_past_reads_history_then_is_synced() {
    // Proves a watcher that starts in the past gets every event in its range in revision
    // order in one round, and has nothing more due until the store moves.
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("b", "1"); // 3
    f.put("a", "2"); // 4
    let now = f.delete("a"); // 5
    let mut watchers = f.watchers();
    let id = create(&mut watchers, spec("a", "", 2), now.current);
    let hub = f.publish().await;
    let round = due(&mut watchers, hub, now.current).await;
    use EventKind::{Delete, Put};
    assert_eq!(
        summary(&round, id),
        vec![
            ("a".into(), Put, 2, false),
            ("a".into(), Put, 4, false),
            ("a".into(), Delete, 5, false),
        ]
    );
    assert!(matches!(round[0], Delivery::Events { to: 5, .. }));
    assert_eq!(watchers.round(hub, now.current).await.expect("read"), None);
}

#[tokio::test]
async fn filters_choose_and_shape_events() {
    // Proves NOPUT, NODELETE and prev_kv apply to history reads, both a lone watcher's and a
    // scan shared by watchers of the same window.
    let f = Fixture::new();
    f.put("k1", "a"); // 2
    f.put("k1", "b"); // 3
    let now = f.delete("k1"); // 4
    let mut watchers = f.watchers();
    let no_put = create(
        &mut watchers,
        spec("k", "l", 2).with(|s| s.no_put = true),
        now.current,
    );
    let with_prev = create(
        &mut watchers,
        spec("k", "l", 2)
            .with(|s| s.no_delete = true)
            .with(|s| s.prev_kv = true),
        now.current,
    );
    let round = due(&mut watchers, now, now.current).await;
    assert_eq!(
        summary(&round, no_put),
        vec![("k1".into(), EventKind::Delete, 4, false)]
    );
    assert_eq!(
        summary(&round, with_prev),
        vec![
            ("k1".into(), EventKind::Put, 2, false),
            ("k1".into(), EventKind::Put, 3, true),
        ]
    );
    // Alone in its window: the same filter on its own read.
    let mut alone = f.watchers();
    let deletes = spec("k", "l", 2).with(|s| s.no_put = true);
    let id = create(&mut alone, deletes, now.current);
    expect_events(
        &mut alone,
        now,
        now.current,
        id,
        vec![("k1".into(), EventKind::Delete, 4, false)],
    )
    .await;
}

#[tokio::test]
async fn a_caught_up_watcher_follows_new_commits() {
    // Proves a watcher created at the current revision is sent each later commit once the hub
    // holds it, with prev_kv when asked, and nothing twice.
    let f = Fixture::new();
    let start = f.put("x", "0");
    let mut watchers = f.watchers();
    let with_prev = spec("x", "", 0).with(|s| s.prev_kv = true);
    let id = create(&mut watchers, with_prev, start.current);
    f.put("x", "1");
    f.put("y", "1");
    let now = f.put("x", "2");
    let hub = f.publish().await;
    let round = due(&mut watchers, hub, now.current).await;
    assert_eq!(
        summary(&round, id),
        vec![
            ("x".into(), EventKind::Put, 3, true),
            ("x".into(), EventKind::Put, 5, true),
        ]
    );
    assert_eq!(watchers.round(hub, now.current).await.expect("read"), None);
    let now = f.put("x", "3");
    let hub = f.publish().await;
    let round = due(&mut watchers, hub, now.current).await;
    let events = summary(&round, id);
    assert_eq!(events, vec![("x".into(), EventKind::Put, 6, true)]);
    assert!(matches!(round[..], [Delivery::Events { to: 6, .. }]));
}

#[tokio::test]
async fn a_compacted_start_cancels_the_watcher() {
    // Proves a watcher whose next revision is below the compact revision is canceled with
    // that revision, and is gone afterwards.
    let f = Fixture::new();
    f.put("a", "1");
    f.put("a", "2");
    let now = f.apply(WriteRequest::Compact(CompactRequest {
        revision: 3,
        physical: false,
    }));
    let mut watchers = f.watchers();
    let id = create(&mut watchers, spec("a", "", 2), now.current);
    let round = due(&mut watchers, now, now.current).await;
    assert_eq!(
        round,
        vec![Delivery::Compacted {
            id,
            compact_revision: 3
        }]
    );
    assert!(!watchers.cancel(id), "the watcher is gone");
}

#[tokio::test]
async fn a_far_behind_watcher_catches_up_in_bounded_rounds() {
    // Proves a watcher more than MAX_REVS_PER_RESPONSE revisions behind gets them over several
    // rounds, each ending at a whole revision, together gap-free.
    let f = Fixture::new();
    let n = MAX_REVS_PER_RESPONSE + 200;
    let mut now = f.store();
    for i in 0..n {
        now = f.put("k", &i.to_string());
    }
    let mut watchers = f.watchers();
    let id = create(&mut watchers, spec("k", "", 2), now.current);
    let mut revisions = Vec::new();
    let mut rounds = 0;
    while let Some(round) = watchers.round(now, now.current).await.expect("read") {
        rounds += 1;
        revisions.extend(summary(&round, id).into_iter().map(|(_, _, rev, _)| rev));
    }
    assert_eq!(rounds, 2);
    assert_eq!(revisions, (2..=now.current).collect::<Vec<_>>());
}

#[tokio::test]
async fn ids_and_refusals_follow_etcd() {
    // Proves stream-chosen ids skip ids in use, a reused client id and an empty range are
    // refused with etcd's reasons, and cancel answers only for a watch that exists.
    let f = Fixture::new();
    let mut watchers = f.watchers();
    let chosen = create(&mut watchers, spec("a", "", 0).with(|s| s.id = 1), 1);
    assert_eq!(chosen, 1);
    assert_eq!(watchers.create(spec("a", "", 0), 1), Ok(0));
    assert_eq!(watchers.create(spec("a", "", 0), 1), Ok(2));
    let duplicate = watchers.create(spec("a", "", 0).with(|s| s.id = 1), 1);
    assert_eq!(duplicate, Err((1, Refusal::DuplicateId)));
    let empty = watchers.create(spec("b", "a", 0), 1);
    assert_eq!(empty, Err((3, Refusal::EmptyRange)));
    assert_eq!(
        Refusal::EmptyRange.to_string(),
        "mvcc: watcher range is empty"
    );
    assert!(watchers.cancel(2));
    assert!(!watchers.cancel(2));
}

#[tokio::test]
async fn progress_is_due_once_per_quiet_tick() {
    // Proves a progress_notify watcher that is caught up and was sent nothing is due at each
    // tick, and one that is behind (or asked for no progress) is not.
    let f = Fixture::new();
    let mut watchers = f.watchers();
    let notify = spec("a", "", 0).with(|s| s.progress_notify = true);
    let caught_up = create(&mut watchers, notify.clone(), 5);
    create(
        &mut watchers,
        notify.clone().with(|s| s.start_revision = 3),
        5,
    );
    create(&mut watchers, spec("a", "", 0), 5);
    assert_eq!(watchers.progress_due(5), vec![caught_up]);
    assert_eq!(watchers.progress_due(5), vec![caught_up]);
}

#[tokio::test]
async fn watchers_alike_share_one_ring_read_and_others_get_their_own() {
    // Proves watchers with the same filter and cursor get the same events (the very same
    // shared events), while a watcher with another range, another option or another cursor
    // gets exactly its own.
    let f = Fixture::new();
    let mut watchers = f.watchers();
    let start = f.put("a/0", "x");
    let current = start.current;
    let prefix = |id| Spec {
        id,
        ..spec("a/", "a0", 0)
    };
    let (a, b) = (
        create(&mut watchers, prefix(1), current),
        create(&mut watchers, prefix(2), current),
    );
    let single = create(&mut watchers, spec("a/2", "", 0), current);
    let deletes_only = create(
        &mut watchers,
        Spec {
            no_put: true,
            ..prefix(4)
        },
        current,
    );
    f.put("a/1", "x");
    let later = create(&mut watchers, prefix(5), f.store().current);
    f.put("a/2", "y");
    f.delete("a/1");
    let hub = f.publish().await;
    let round = due(&mut watchers, hub, hub.current).await;
    let rev = |n: i64| current + n;
    let put = |k: &str, n| (k.to_string(), EventKind::Put, rev(n), false);
    let del = |k: &str, n| (k.to_string(), EventKind::Delete, rev(n), false);
    let all = vec![put("a/1", 1), put("a/2", 2), del("a/1", 3)];
    assert_eq!(summary(&round, a), all);
    assert_eq!(summary(&round, b), all);
    assert_eq!(summary(&round, single), vec![put("a/2", 2)]);
    assert_eq!(summary(&round, deletes_only), vec![del("a/1", 3)]);
    assert_eq!(summary(&round, later), all[1..].to_vec());
    let events_of = |want| {
        round.iter().find_map(|d| match d {
            Delivery::Events { id, events, .. } if *id == want => Some(events),
            _ => None,
        })
    };
    let (of_a, of_b) = (
        events_of(a).expect("a's events"),
        events_of(b).expect("b's events"),
    );
    for (x, y) in of_a.iter().zip(of_b) {
        assert!(std::ptr::eq(x.event(), y.event()), "one shared event");
    }
}
