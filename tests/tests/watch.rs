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
async fn a_progress_mark_covers_every_acknowledged_write() {
    // Proves a progress response asked for after a write was acknowledged carries that write's
    // revision or a later one, with the write's event sent before it (etcd's bookmark).
    // Kubernetes waits on exactly this mark for reads served from its watch cache.
    const ROUNDS: usize = 300;
    let node = CairnNode::start(&[]);
    with_timeout(Duration::from_secs(120), "progress mark", async {
        let mut client = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        let mut stream = client
            .watch("m/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        assert!(
            stream
                .message()
                .await
                .expect("stream")
                .expect("open")
                .created()
        );
        for i in 0..ROUNDS {
            let put = client
                .put(format!("m/{}", i % 5), format!("{i}"), None)
                .await
                .expect("put");
            let rev = put.header().expect("header").revision();
            stream.request_progress().await.expect("progress request");
            let mut seen = 0;
            let mark = loop {
                let resp = stream.message().await.expect("stream").expect("open");
                if resp.watch_id() == -1 {
                    break resp.header().expect("header").revision();
                }
                seen = resp
                    .events()
                    .iter()
                    .map(|e| e.kv().expect("kv").mod_revision())
                    .fold(seen, i64::max);
            };
            assert!(
                mark >= rev,
                "round {i}: progress mark {mark} is older than the acknowledged write {rev}"
            );
            assert_eq!(seen, rev, "round {i}: the write's event did not come first");
        }
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
            // Sending a create does not wait for it: every watcher must exist before the
            // first put, or one created late (on a busy machine) misses the first events.
            for _ in 1..PER_STREAM {
                let resp = stream.message().await.expect("stream").expect("open");
                assert!(resp.created() && resp.events().is_empty(), "{resp:?}");
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

/// Txns of two fresh keys (`w/<writer>/<n>a` and `...b`, one revision) against `endpoints`,
/// moving to the next endpoint when one fails, until `stop`.
async fn pair_writer(
    writer: usize,
    endpoints: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> u64 {
    let mut target = writer % endpoints.len();
    let mut done = 0;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(mut client) = cairn_tests::cluster::try_connect(&endpoints[target]).await else {
            target = (target + 1) % endpoints.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let (a, b) = (format!("w/{writer}/{n}a"), format!("w/{writer}/{n}b"));
            let txn = Txn::new().and_then([TxnOp::put(a, "x", None), TxnOp::put(b, "y", None)]);
            if client.txn(txn).await.is_err() {
                target = (target + 1) % endpoints.len();
                break;
            }
            done += 1;
            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    done
}

/// Waits (up to 60 s) until the writers have acknowledged `count` txns in all.
async fn wait_for_acked(acked: &std::sync::atomic::AtomicU64, count: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < count {
        assert!(
            std::time::Instant::now() < deadline,
            "the writers acknowledged {} of {count} txns in 60 s",
            acked.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one watcher saw: events as (revision, key), and the revisions of each response.
#[derive(Default)]
struct Watched {
    events: Vec<(i64, String)>,
    responses: Vec<BTreeSet<i64>>,
    resumed: usize,
}

/// Watches `w/` from `from` on `endpoints[first]`; when its member dies, resumes on the next
/// endpoint from the last revision seen + 1. Stops after `stop` is set and a progress
/// notification covers `until` (or later); returns what it saw and that bookmark.
async fn resilient_watcher(
    endpoints: Vec<String>,
    first: usize,
    from: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Watched, i64) {
    let mut seen = Watched::default();
    let mut target = first;
    let mut next = from;
    loop {
        let Ok(mut client) = cairn_tests::cluster::try_connect(&endpoints[target]).await else {
            target = (target + 1) % endpoints.len();
            seen.resumed += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(next);
        let Ok(mut stream) = client.watch("w/", Some(options)).await else {
            target = (target + 1) % endpoints.len();
            seen.resumed += 1;
            continue;
        };
        let mut asked = false;
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) && !asked {
                asked = stream.request_progress().await.is_ok();
            }
            let msg = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
            let resp = match msg {
                Ok(Ok(Some(resp))) => resp,
                // A silent stream is re-checked (and asked for progress once stopping).
                Err(_) => continue,
                // The member went away: resume elsewhere from the next revision.
                Ok(_) => {
                    target = (target + 1) % endpoints.len();
                    seen.resumed += 1;
                    break;
                }
            };
            if resp.watch_id() == -1 || (asked && resp.events().is_empty() && !resp.created()) {
                return (seen, resp.header().expect("header").revision());
            }
            assert!(!resp.canceled(), "watch canceled: {}", resp.cancel_reason());
            let mut revs = BTreeSet::new();
            for e in resp.events() {
                let kv = e.kv().expect("event kv");
                revs.insert(kv.mod_revision());
                seen.events
                    .push((kv.mod_revision(), kv.key_str().expect("utf8").to_string()));
                next = kv.mod_revision() + 1;
            }
            if !revs.is_empty() {
                seen.responses.push(revs);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_guarantees_hold_across_a_leader_kill() {
    // Proves, on a 3-member cluster whose leader is killed mid-stream, that a watcher on every
    // member (resuming on another member from last revision + 1 when its own dies) sees every
    // event exactly once, in order, never split, and complete up to its progress bookmark.
    use cairn_tests::{Cluster, Flavor};
    with_timeout(
        Duration::from_secs(180),
        "watch across a leader kill",
        async {
            let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
            let endpoints = cluster.endpoints();
            let mut client = Client::connect([endpoints[(leader + 1) % 3].as_str()], None)
                .await
                .expect("connect");
            let from = client
                .get("w/", None)
                .await
                .expect("get")
                .header()
                .expect("h")
                .revision()
                + 1;
            let stop_writes = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop_watch = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let watchers: Vec<_> = (0..3)
                .map(|i| {
                    tokio::spawn(resilient_watcher(
                        endpoints.clone(),
                        i,
                        from,
                        stop_watch.clone(),
                    ))
                })
                .collect();
            let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let writers: Vec<_> = (0..3)
                .map(|w| {
                    let (stop, acked) = (stop_writes.clone(), acked.clone());
                    tokio::spawn(pair_writer(w, endpoints.clone(), stop, acked))
                })
                .collect();
            // Writes before the kill, and as many again under the new leader.
            wait_for_acked(&acked, 100).await;
            cluster.members[leader].kill9();
            cluster.wait_for_leader(Duration::from_secs(30)).await;
            let before = acked.load(std::sync::atomic::Ordering::Relaxed);
            wait_for_acked(&acked, before + 100).await;
            stop_writes.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut written = 0;
            for w in writers {
                written += w.await.expect("writer");
            }
            assert!(written > 20, "only {written} txns were acknowledged");
            stop_watch.store(true, std::sync::atomic::Ordering::Relaxed);
            let survivor = cluster.endpoints()[0].clone();
            let mut reader = Client::connect([survivor], None).await.expect("connect");
            for (i, w) in watchers.into_iter().enumerate() {
                let (seen, bookmark) = w.await.expect("watcher");
                if i == leader {
                    assert!(
                        seen.resumed > 0,
                        "the watcher on the killed leader never resumed"
                    );
                }
                assert!(
                    seen.events.windows(2).all(|p| p[0].0 <= p[1].0),
                    "watcher {i}: events out of order"
                );
                let unique: BTreeSet<_> = seen.events.iter().cloned().collect();
                assert_eq!(
                    unique.len(),
                    seen.events.len(),
                    "watcher {i}: a duplicate event"
                );
                let mut split = BTreeSet::new();
                for revs in &seen.responses {
                    for r in revs {
                        assert!(
                            split.insert(*r),
                            "watcher {i}: revision {r} split across responses"
                        );
                    }
                }
                // Complete: the keys under w/ created in (from, bookmark], read at the bookmark.
                let state = reader
                    .get(
                        "w/",
                        Some(GetOptions::new().with_prefix().with_revision(bookmark)),
                    )
                    .await
                    .expect("read at the bookmark");
                let want: BTreeSet<(i64, String)> = state
                    .kvs()
                    .iter()
                    .filter(|kv| kv.mod_revision() >= from)
                    .map(|kv| (kv.mod_revision(), kv.key_str().expect("utf8").to_string()))
                    .collect();
                let got: BTreeSet<(i64, String)> =
                    unique.into_iter().filter(|(r, _)| *r <= bookmark).collect();
                assert_eq!(
                    got.len(),
                    want.len(),
                    "watcher {i}: {} events up to bookmark {bookmark}, history has {}",
                    got.len(),
                    want.len()
                );
                assert_eq!(got, want, "watcher {i}: events differ from the history");
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_keep_working() {
    // Proves one member serves 10,000 watchers, each on its own key, plus 100 sharing a
    // prefix: every watcher gets exactly the events of its keys.
    const STREAMS: usize = 20;
    const PER_STREAM: usize = 500;
    const SHARED: usize = 100;
    const WRITES: usize = 200;
    let node = CairnNode::start(&[]);
    with_timeout(Duration::from_secs(300), "10,000 watchers", async {
        let client = Client::connect([node.endpoint()], None)
            .await
            .expect("connect");
        let mut streams = Vec::new();
        for s in 0..STREAMS {
            let mut c = client.clone();
            let first = format!("fan/{}", s * PER_STREAM);
            let mut stream = c.watch(first, None).await.expect("watch");
            for w in 1..PER_STREAM {
                let key = format!("fan/{}", s * PER_STREAM + w);
                stream.watch(key, None).await.expect("add watcher");
            }
            streams.push(stream);
        }
        let mut shared = client
            .clone()
            .watch("fan/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch prefix");
        for _ in 1..SHARED {
            shared
                .watch("fan/", Some(WatchOptions::new().with_prefix()))
                .await
                .expect("add prefix watcher");
        }
        // Every watcher is created before the writes start.
        let mut created = 0;
        for stream in streams.iter_mut().chain(std::iter::once(&mut shared)) {
            let mut here = 0;
            let want = if created < STREAMS * PER_STREAM {
                PER_STREAM
            } else {
                SHARED
            };
            while here < want {
                let resp = stream.message().await.expect("stream").expect("open");
                assert!(resp.created() && !resp.canceled(), "unexpected {resp:?}");
                here += 1;
            }
            created += here;
        }
        assert_eq!(created, STREAMS * PER_STREAM + SHARED);

        let mut rng = StdRng::seed_from_u64(10_000);
        let mut writer = client.clone();
        let mut written: BTreeMap<usize, usize> = BTreeMap::new();
        for _ in 0..WRITES {
            let key = rng.random_range(0..STREAMS * PER_STREAM);
            writer
                .put(format!("fan/{key}"), "v", None)
                .await
                .expect("put");
            *written.entry(key).or_default() += 1;
        }
        for (s, stream) in streams.iter_mut().enumerate() {
            let keys = s * PER_STREAM..(s + 1) * PER_STREAM;
            let want: usize = written
                .iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(_, n)| n)
                .sum();
            let mut got = 0;
            while got < want {
                let resp = stream.message().await.expect("stream").expect("open");
                for e in resp.events() {
                    let key = e.kv().expect("kv").key_str().expect("utf8");
                    let n: usize = key["fan/".len()..].parse().expect("key number");
                    assert!(keys.contains(&n), "stream {s} got an event for {key}");
                    got += 1;
                }
            }
        }
        let mut per_watcher: BTreeMap<i64, usize> = BTreeMap::new();
        while per_watcher.values().sum::<usize>() < WRITES * SHARED {
            let resp = shared.message().await.expect("stream").expect("open");
            *per_watcher.entry(resp.watch_id()).or_default() += resp.events().len();
        }
        assert_eq!(per_watcher.len(), SHARED);
        assert!(
            per_watcher.values().all(|n| *n == WRITES),
            "{per_watcher:?}"
        );
    })
    .await;
}

/// The peak resident memory (VmHWM) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib * 1024
}

/// `readers` watchers that stop reading while `total` bytes of 100 KiB values are written,
/// then read again: returns the member's peak RSS, after checking that every reader got
/// every write, in order.
async fn stalled_readers(readers: usize, total: usize) -> u64 {
    use cairn_proto::etcdserverpb::WatchCreateRequest;

    const VALUE: usize = 100 << 10;
    let node = CairnNode::start(&[]);
    let endpoint = node.endpoint();
    let mut streams = Vec::new();
    for _ in 0..readers {
        // A connection each: a reader that stops reading stalls only its own flow control.
        let create = WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        };
        let (mut stream, tx) = cairn_tests::raw_watch(&endpoint, create).await;
        let created = stream.message().await.expect("created").expect("open");
        assert!(created.created);
        // From here on nobody reads `stream` until every write is in.
        streams.push((stream, tx));
    }
    let writes = total / VALUE;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut client = Client::connect([endpoint], None).await.expect("connect");
                for i in (w..writes).step_by(4) {
                    client
                        .put(format!("big/{i:06}"), vec![b'v'; VALUE], None)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let peak_while_stalled = peak_rss(node.pid().expect("running"));
    eprintln!(
        "{readers} readers, {} MiB written: peak RSS {} MiB while they stalled",
        total >> 20,
        peak_while_stalled >> 20
    );
    // Every reader resumes and must see every write, once, in revision order.
    let reads: Vec<_> = streams
        .into_iter()
        .map(|(mut stream, tx)| {
            tokio::spawn(async move {
                let mut seen = 0usize;
                let mut last_rev = 0;
                while seen < writes {
                    let resp = stream.message().await.expect("stream").expect("open");
                    for e in resp.events {
                        let kv = e.kv.expect("kv");
                        assert!(kv.mod_revision > last_rev, "out of order");
                        assert_eq!(kv.value.len(), VALUE);
                        last_rev = kv.mod_revision;
                        seen += 1;
                    }
                }
                drop(tx);
                seen
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.expect("reader"), writes);
    }
    peak_while_stalled.max(peak_rss(node.pid().expect("running")))
}

/// What the member may hold, however many readers stall (documented in docs/operations.md).
const RSS_BOUND: u64 = 512 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_cost_bounded_memory() {
    // Proves 10 watch readers that stop reading while 300 MiB is written keep the member's
    // RSS under the bound, and every reader gets every event, in order, once it reads again.
    with_timeout(Duration::from_secs(300), "stalled readers", async {
        let peak = stalled_readers(10, 300 << 20).await;
        assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak >> 20);
        eprintln!(
            "10 stalled readers over 300 MiB: peak RSS {} MiB",
            peak >> 20
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_stalled_readers_cost_bounded_memory() {
    // Proves the bound holds for 50 stalled readers over 300 MiB of writes (15 GB to catch
    // up on once they read again).
    with_timeout(Duration::from_secs(300), "fifty stalled readers", async {
        let peak = stalled_readers(50, 300 << 20).await;
        assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak >> 20);
        eprintln!(
            "50 stalled readers over 300 MiB: peak RSS {} MiB",
            peak >> 20
        );
    })
    .await;
}
