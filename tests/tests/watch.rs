//! Watch guarantees, checked against the KV history during concurrent writes: ordered, unique,
//! reliable (no gaps), atomic per revision, bookmarkable (progress), resumable, with correct
//! prev_kv and filters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_tests::{CairnNode, with_timeout};
use etcd_client::{
    Client, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: usize = 12;

/// One observed event: (revision, key, is_put, value, prev value if any).
type Seen = (i64, String, bool, Vec<u8>, Option<Vec<u8>>);

/// Random puts, deletes and multi-key txns on `w/0..w/11` for `count` requests.
async fn write_load(endpoint: String, seed: u64, count: usize) {
    let mut client = Client::connect([endpoint], None)
        .await
        .expect("connect writer");
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..count {
        let key = format!("w/{}", rng.random_range(0..KEYS));
        match rng.random_range(0..10) {
            0..=5 => {
                client
                    .put(key, format!("{seed}-{i}"), None)
                    .await
                    .expect("put");
            }
            6..=7 => {
                client.delete(key, None).await.expect("delete");
            }
            _ => {
                let other = format!("w/{}", rng.random_range(0..KEYS));
                let mut ops = vec![TxnOp::put(key.clone(), format!("t{seed}-{i}"), None)];
                if other != key {
                    ops.push(TxnOp::put(
                        other,
                        format!("u{seed}-{i}"),
                        Some(PutOptions::new()),
                    ));
                }
                client.txn(Txn::new().and_then(ops)).await.expect("txn");
            }
        }
    }
}

/// The history of `w/` as events, rebuilt from reads at every revision in `2..=last`.
async fn history(client: &mut Client, last: i64) -> Vec<Seen> {
    let mut before: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut out = Vec::new();
    for rev in 2..=last {
        let resp = client
            .get(
                "w/",
                Some(GetOptions::new().with_prefix().with_revision(rev)),
            )
            .await
            .expect("history read");
        let now: BTreeMap<String, Vec<u8>> = resp
            .kvs()
            .iter()
            .filter(|kv| kv.mod_revision() <= rev)
            .map(|kv| (kv.key_str().expect("utf8").to_string(), kv.value().to_vec()))
            .collect();
        let changed: BTreeMap<String, i64> = resp
            .kvs()
            .iter()
            .filter(|kv| kv.mod_revision() == rev)
            .map(|kv| (kv.key_str().expect("utf8").to_string(), rev))
            .collect();
        for key in before.keys().chain(now.keys()).collect::<BTreeSet<_>>() {
            let (was, is) = (before.get(key), now.get(key));
            if changed.contains_key(key) {
                out.push((
                    rev,
                    key.clone(),
                    true,
                    is.cloned().unwrap_or_default(),
                    was.cloned(),
                ));
            } else if was.is_some() && is.is_none() {
                out.push((rev, key.clone(), false, Vec::new(), was.cloned()));
            }
        }
        before = now;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_guarantees_hold_under_concurrent_writes() {
    // Proves the six etcd watch guarantees plus prev_kv and filters on a live store.
    let node = CairnNode::start(&[]);
    with_timeout(Duration::from_secs(180), "watch guarantees", async {
        let mut client = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        // A few writes before the watch starts, so the watch begins with history.
        write_load(node.endpoint(), 99, 30).await;
        let mut stream = client
            .watch(
                "w/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(1)
                        .with_prev_key(),
                ),
            )
            .await
            .expect("watch all");
        stream
            .watch(
                "w/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_filters([WatchFilterType::NoPut]),
                ),
            )
            .await
            .expect("watch deletes");
        let writers: Vec<_> = (0..3)
            .map(|s| tokio::spawn(write_load(node.endpoint(), s, 150)))
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        stream.request_progress().await.expect("progress request");

        let mut all: Vec<Seen> = Vec::new();
        let mut deletes_only: Vec<Seen> = Vec::new();
        let mut revisions_by_response: Vec<BTreeSet<i64>> = Vec::new();
        let mut ids = BTreeSet::new();
        let bookmark = loop {
            let resp = stream
                .message()
                .await
                .expect("watch stream")
                .expect("stream open");
            if resp.created() {
                ids.insert(resp.watch_id());
                continue;
            }
            if resp.watch_id() == -1 {
                break resp.header().expect("header").revision();
            }
            assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
            let mut revs = BTreeSet::new();
            for e in resp.events() {
                let kv = e.kv().expect("event kv");
                let seen = (
                    kv.mod_revision(),
                    kv.key_str().expect("utf8").to_string(),
                    e.event_type() == EventType::Put,
                    kv.value().to_vec(),
                    e.prev_kv().map(|p| p.value().to_vec()),
                );
                revs.insert(seen.0);
                if resp.watch_id() == 0 {
                    all.push(seen)
                } else {
                    deletes_only.push(seen)
                }
            }
            if resp.watch_id() == 0 {
                revisions_by_response.push(revs);
            }
        };
        assert_eq!(ids.len(), 2, "two watchers, two distinct ids");

        // Ordered and unique.
        assert!(
            all.windows(2).all(|w| w[0].0 <= w[1].0),
            "events out of revision order"
        );
        let unique: BTreeSet<_> = all.iter().map(|s| (s.0, s.1.clone())).collect();
        assert_eq!(unique.len(), all.len(), "an event was delivered twice");
        // Atomic: no revision is split across responses.
        let mut seen_revs = BTreeSet::new();
        for revs in &revisions_by_response {
            for r in revs {
                assert!(seen_revs.insert(*r), "revision {r} split across responses");
            }
        }
        // Reliable and bookmarkable: exactly the history up to the progress mark, prev_kv included.
        let expected = history(&mut client, bookmark).await;
        assert!(!expected.is_empty());
        let mut got = all.clone();
        got.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(
            got, want,
            "watch events differ from the KV history up to the bookmark {bookmark}"
        );
        // The NOPUT watcher saw every delete after it was created, and nothing else.
        assert!(deletes_only.iter().all(|s| !s.2), "NOPUT watcher got a put");
        let first = deletes_only.first().map_or(i64::MAX, |s| s.0);
        let want_deletes: Vec<_> = expected
            .iter()
            .filter(|s| !s.2 && s.0 >= first)
            .cloned()
            .collect();
        let got_deletes: Vec<Seen> = deletes_only
            .iter()
            .map(|s| (s.0, s.1.clone(), s.2, s.3.clone(), None))
            .collect();
        let want_deletes: Vec<Seen> = want_deletes
            .into_iter()
            .map(|s| (s.0, s.1, s.2, s.3, None))
            .collect();
        assert_eq!(
            got_deletes, want_deletes,
            "NOPUT watcher missed or invented a delete"
        );

        // Resumable: a new watch from the last revision + 1 continues with nothing lost.
        let last = all.last().expect("events").0;
        let mut client2 = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        let mut resumed = client2
            .watch(
                "w/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(last + 1),
                ),
            )
            .await
            .expect("resume");
        client.put("w/0", "after", None).await.expect("put after");
        let mut next = None;
        while next.is_none() {
            let resp = resumed
                .message()
                .await
                .expect("resumed stream")
                .expect("open");
            next = resp
                .events()
                .first()
                .map(|e| e.kv().expect("kv").mod_revision());
        }
        let put_rev = client.get("w/0", None).await.expect("get").kvs()[0].mod_revision();
        assert_eq!(
            next,
            Some(put_rev),
            "resumed watch did not start right after the last seen revision"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_marks_quiet_periods() {
    // Proves a progress_notify watcher gets empty responses at the current revision when
    // nothing happens, at --watch-progress-notify-interval.
    let node = CairnNode::start(&["--watch-progress-notify-interval=300ms"]);
    with_timeout(Duration::from_secs(30), "progress notify", async {
        let mut client = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        client.put("p", "1", None).await.expect("put");
        let mut stream = client
            .watch("p", Some(WatchOptions::new().with_progress_notify()))
            .await
            .expect("watch");
        let created = stream.message().await.expect("stream").expect("open");
        assert!(created.created());
        let quiet = stream.message().await.expect("stream").expect("open");
        assert!(quiet.events().is_empty() && quiet.watch_id() == created.watch_id());
        assert_eq!(quiet.header().expect("header").revision(), 2);
        client.put("p", "2", None).await.expect("put");
        let event = stream.message().await.expect("stream").expect("open");
        assert_eq!(event.events().len(), 1);
        let quiet = stream.message().await.expect("stream").expect("open");
        assert!(quiet.events().is_empty());
        assert_eq!(quiet.header().expect("header").revision(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_delays_no_one_and_misses_nothing() {
    // Proves a client that stops reading does not hold up 1,000 other watchers, and gets every
    // event once it reads again.
    const STREAMS: usize = 20;
    const PER_STREAM: usize = 50;
    const PUTS: usize = 80;
    let node = CairnNode::start(&[]);
    with_timeout(Duration::from_secs(120), "stalled watcher", async {
        let mut client = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        // The stalled stream: created, then never read until the end.
        let mut stalled = client
            .watch("s/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        let mut readers = Vec::new();
        for s in 0..STREAMS {
            let mut c = Client::connect([node.endpoint()], None)
                .await
                .expect("connect");
            let mut stream = c
                .watch("s/", Some(WatchOptions::new().with_prefix()))
                .await
                .expect("watch");
            for _ in 1..PER_STREAM {
                stream
                    .watch("s/", Some(WatchOptions::new().with_prefix()))
                    .await
                    .expect("more watchers");
            }
            readers.push(tokio::spawn(async move {
                let _keep = c;
                let mut seen: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
                while seen.values().map(Vec::len).sum::<usize>() < PER_STREAM * PUTS {
                    let resp = stream.message().await.expect("stream").expect("open");
                    for e in resp.events() {
                        seen.entry(resp.watch_id())
                            .or_default()
                            .push(e.kv().expect("kv").mod_revision());
                    }
                }
                (s, seen)
            }));
        }
        // Values big enough that the stalled stream's buffers fill long before the end.
        let value = vec![b'x'; 16 * 1024];
        for i in 0..PUTS {
            client
                .put(format!("s/{}", i % 7), value.clone(), None)
                .await
                .expect("put");
        }
        let first = client
            .get("s/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        let last_rev = first.header().expect("header").revision();
        // Everyone but the stalled stream gets every event, while it still reads nothing.
        for r in readers {
            let (s, seen) = tokio::time::timeout(Duration::from_secs(60), r)
                .await
                .expect("readers delayed")
                .expect("reader");
            assert_eq!(seen.len(), PER_STREAM, "stream {s}: every watcher heard");
            for (id, revs) in seen {
                let want: Vec<i64> = (last_rev - PUTS as i64 + 1..=last_rev).collect();
                assert_eq!(revs, want, "stream {s} watcher {id}: all events, in order");
            }
        }
        let mut got = Vec::new();
        while got.len() < PUTS {
            let resp = stalled
                .message()
                .await
                .expect("stalled stream")
                .expect("open");
            got.extend(
                resp.events()
                    .iter()
                    .map(|e| e.kv().expect("kv").mod_revision()),
            );
        }
        let want: Vec<i64> = (last_rev - PUTS as i64 + 1..=last_rev).collect();
        assert_eq!(
            got, want,
            "the stalled watcher, reading again, gets every event in order"
        );
    })
    .await;
}
