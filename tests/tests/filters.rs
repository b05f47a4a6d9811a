//! Watch filters end to end: the example filters through `cairnctl watch` on 3 members (a
//! secret-redacting filter bound to a prefix, a JSON-field filter a watcher names), the watch
//! guarantees with a filter that drops half the events, and hostile filters that cancel only
//! their own watcher while a thousand others keep receiving.
//!
//! The plugins are built by `scripts/build-plugins.sh`, which the test command runs first.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::mvccpb;
use cairn_tests::{CairnNode, Cluster, Etcdctl, Flavor, binary_path, cairnctl_ok, install_plugin};
use tokio::sync::mpsc;

/// Multi-member tests load two cores; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `cairnctl watch` until its output is `expected` (bounded), then stops it; returns
/// what it printed.
fn cairnctl_watch_until(endpoint: &str, args: &[&str], expected: &str) -> String {
    let mut child = Command::new(binary_path().with_file_name("cairnctl"))
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairnctl watch");
    let printed = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let sink = printed.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("output lock")
                .extend_from_slice(&buf[..n]);
        }
    });
    let start = Instant::now();
    let text = loop {
        let text = String::from_utf8_lossy(&printed.lock().expect("output lock")).into_owned();
        let exited = child.try_wait().expect("cairnctl status").is_some();
        if text.len() >= expected.len() || exited || start.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let out = child.wait_with_output().expect("cairnctl output");
    let _ = reader.join();
    assert_eq!(
        text,
        expected,
        "cairnctl {args:?} printed this (stderr: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_filters_through_cairnctl_on_three_members() {
    // Proves the secret-redacting filter (bound to /secrets/, so every watcher of it runs it)
    // and the JSON-field filter (named by the watcher, with an argument) through `cairnctl
    // watch` on every member: a user without the reader role sees redacted values, one with
    // it the real ones, and a watcher naming the JSON filter only the matching jobs.
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let e0 = cluster.members[0].endpoint();
    install_plugin(&e0, "redact", "redact-filter");
    install_plugin(&e0, "json-field", "json-field-filter");
    cairnctl_ok(
        &e0,
        &[
            "plugin",
            "bind",
            "secrets",
            "--plugin",
            "redact",
            "--kind",
            "watch-filter",
            "--key",
            "/secrets/",
            "--prefix",
            "--config",
            r#"{"prefix": "/secrets/", "reader_roles": ["secrets"]}"#,
        ],
    );
    cairnctl_ok(
        &e0,
        &[
            "plugin",
            "bind",
            "by-field",
            "--plugin",
            "json-field",
            "--kind",
            "watch-filter",
        ],
    );
    for line in [
        "user add root:rootpw",
        "user grant-role root root",
        "role add app",
        "role grant-permission app read / --prefix=true",
        "role add secrets",
        "user add app:apppw",
        "user grant-role app app",
        "user add ops:opspw",
        "user grant-role ops app",
        "user grant-role ops secrets",
        "auth enable",
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        cairnctl_ok(&e0, &args);
    }
    let etcdctl = Etcdctl::new(&e0);
    for (key, value) in [
        ("/secrets/db", "hunter2"),
        ("/jobs/1", r#"{"state": "failed"}"#),
        ("/jobs/2", r#"{"state": "done"}"#),
        ("/jobs/3", r#"{"state": "failed"}"#),
    ] {
        let out = etcdctl.run(&["--user=root:rootpw", "put", key, value], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for m in &cluster.members {
        let e = m.endpoint();
        let watch = |user: &str| vec![format!("--user={user}"), "watch".into()];
        let args = |user: &str, rest: &[&str]| {
            let mut all = watch(user);
            all.extend(rest.iter().map(|s| s.to_string()));
            all
        };
        let redacted = args("app:apppw", &["/secrets/", "--prefix", "--rev=1"]);
        let redacted: Vec<&str> = redacted.iter().map(String::as_str).collect();
        cairnctl_watch_until(&e, &redacted, "PUT\n/secrets/db\n[redacted]\n");
        let reader = args("ops:opspw", &["/secrets/", "--prefix", "--rev=1"]);
        let reader: Vec<&str> = reader.iter().map(String::as_str).collect();
        cairnctl_watch_until(&e, &reader, "PUT\n/secrets/db\nhunter2\n");
        let failed = args(
            "app:apppw",
            &[
                "/jobs/",
                "--prefix",
                "--rev=1",
                "--filter=by-field",
                "--filter-arg=state=failed",
            ],
        );
        let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
        cairnctl_watch_until(
            &e,
            &failed,
            "PUT\n/jobs/1\n{\"state\": \"failed\"}\nPUT\n/jobs/3\n{\"state\": \"failed\"}\n",
        );
    }
    // A watcher naming a filter that does not exist, or with an argument the filter refuses,
    // is canceled with the reason.
    let out = Etcdctl::cairnctl(&e0).run(
        &[
            "--user=app:apppw",
            "watch",
            "/jobs/",
            "--prefix",
            "--filter=nope",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "watch was canceled (rpc error: code = FailedPrecondition desc = cairn: no watch filter binding named \"nope\")\n\
         Error: watch is canceled by the server"
    );
    let out = Etcdctl::cairnctl(&e0).run(
        &[
            "--user=app:apppw",
            "watch",
            "/jobs/",
            "--prefix",
            "--filter=by-field",
            "--filter-arg=state",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cairn: watch filter by-field refused: json-field-filter: the argument must be <field>=<value>"),
        "{stderr}"
    );
}

/// A watch stream: its requests' sender and its responses.
struct Stream {
    requests: mpsc::UnboundedSender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(endpoint: &str) -> Stream {
        let mut client = WatchClient::connect(format!("http://{endpoint}"))
            .await
            .expect("watch client");
        let (requests, rx) = mpsc::unbounded_channel();
        let responses = client
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("watch stream")
            .into_inner();
        Stream {
            requests,
            responses,
        }
    }

    /// Creates a watcher; returns the created response.
    async fn create(&mut self, create: pb::WatchCreateRequest) -> pb::WatchResponse {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            })
            .expect("stream open");
        let resp = self.next().await;
        assert!(resp.created, "{resp:?}");
        resp
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(Duration::from_secs(20), self.responses.message())
            .await
            .expect("a watch response in time")
            .expect("watch message")
            .expect("stream open")
    }
}

fn filtered(key: &str, argument: &str, start_revision: i64) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: prefix_end(key),
        start_revision,
        progress_notify: true,
        cairn_filter: Some(pb::CairnWatchFilter {
            binding: "by-field".into(),
            argument: argument.as_bytes().to_vec(),
        }),
        ..Default::default()
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// (type, key, value, mod revision) of an event.
type Seen = (i32, Vec<u8>, Vec<u8>, i64);

fn seen(event: &mvccpb::Event) -> Seen {
    let kv = event.kv.clone().unwrap_or_default();
    (event.r#type, kv.key, kv.value, kv.mod_revision)
}

/// Collects watcher `id`'s events until one at `last` (or later) arrived, checking that each
/// response's events are in revision order after the previous ones.
async fn collect(stream: &mut Stream, id: i64, last: i64) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    while out.last().is_none_or(|e| e.3 < last) {
        let resp = stream.next().await;
        assert!(!resp.canceled, "{resp:?}");
        assert_eq!(resp.watch_id, id);
        for event in &resp.events {
            let s = seen(event);
            if let Some(prev) = out.last() {
                assert!(
                    (prev.3, &prev.1) < (s.3, &s.1),
                    "ordered, no duplicates: {prev:?} then {s:?}"
                );
            }
            out.push(s);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_guarantees_hold_with_a_filter_dropping_half_the_events() {
    // Proves that with a filter dropping half of them, what a watcher is sent is exactly the
    // events the filter keeps, in revision order, each once, with their revisions, whether it
    // reads history or follows live writes; that progress notifications still come, at a
    // revision past the dropped tail; and that a watcher starting in compacted history is
    // canceled with the compaction revision.
    let _serial = SERIAL.lock().await;
    let node = CairnNode::start(&["--watch-progress-notify-interval=200ms"]);
    let e = node.endpoint();
    install_plugin(&e, "json-field", "json-field-filter");
    cairnctl_ok(
        &e,
        &[
            "plugin",
            "bind",
            "by-field",
            "--plugin",
            "json-field",
            "--kind",
            "watch-filter",
        ],
    );
    let mut live = Stream::open(&e).await;
    let live_id = live.create(filtered("/w/", "keep=yes", 0)).await.watch_id;

    // 200 writes: half kept, half dropped, a delete every 25 (deletes pass); then a tail of
    // dropped ones.
    let mut client = cairn_tests::cluster::connect(&e).await;
    let mut expected: Vec<Seen> = Vec::new();
    let mut last = 0;
    for i in 0..200 {
        let key = format!("/w/{}", i % 10);
        if i % 25 == 24 {
            let resp = client.delete(key.as_str(), None).await.expect("delete");
            last = resp.header().expect("header").revision();
            if resp.deleted() > 0 {
                expected.push((1, key.into_bytes(), Vec::new(), last));
            }
            continue;
        }
        let keep = if i % 2 == 0 { "yes" } else { "no" };
        let value = format!(r#"{{"keep": "{keep}", "i": {i}}}"#);
        let resp = client
            .put(key.as_str(), value.as_str(), None)
            .await
            .expect("put");
        last = resp.header().expect("header").revision();
        if keep == "yes" {
            expected.push((0, key.into_bytes(), value.into_bytes(), last));
        }
    }
    // A dropped tail.
    for n in 0..3 {
        let resp = client
            .put(format!("/w/tail{n}"), r#"{"keep": "no"}"#, None)
            .await
            .expect("put");
        last = resp.header().expect("header").revision();
    }
    let last_kept = expected.last().expect("some kept").3;
    assert!(last_kept < last, "the tail is dropped");

    let got_live = collect(&mut live, live_id, last_kept).await;
    assert_eq!(got_live, expected, "live watcher");
    let mut history = Stream::open(&e).await;
    let history_id = history
        .create(filtered("/w/", "keep=yes", 1))
        .await
        .watch_id;
    let got_history = collect(&mut history, history_id, last_kept).await;
    assert_eq!(got_history, expected, "history watcher");

    // Nothing more is sent for the dropped tail, but progress notifications come, at a
    // revision past it.
    let start = Instant::now();
    loop {
        let resp = live.next().await;
        assert!(resp.events.is_empty() && !resp.canceled, "{resp:?}");
        let revision = resp.header.map_or(0, |h| h.revision);
        if revision >= last {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no progress past {last}"
        );
    }

    // Compacted history: the watcher is canceled with the compaction revision, filter or not.
    client.compact(last - 50, None).await.expect("compact");
    let mut old = Stream::open(&e).await;
    old.requests
        .send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(filtered(
                "/w/", "keep=yes", 1,
            ))),
        })
        .expect("stream open");
    let mut canceled = None;
    for _ in 0..3 {
        let resp = old.next().await;
        if resp.canceled {
            canceled = Some(resp);
            break;
        }
    }
    let canceled = canceled.expect("a compacted watcher is canceled");
    assert_eq!(canceled.compact_revision, last - 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_filter_cancels_only_its_watcher() {
    // Proves that a filter that loops, one that traps, one that hoards memory and one that
    // rewrites values to 8 MiB each cancel only their own watcher, with the reason, while
    // 1,000 other watchers on the same member, one of them in the same stream, keep
    // receiving every event.
    let _serial = SERIAL.lock().await;
    let node = CairnNode::start(&[]);
    let e = node.endpoint();
    // (binding, crate, memory limit, what its cancel reason says). The bomb gets a small
    // memory, so it reaches the limit well within its deadline on a busy machine; the huge
    // output gets room for its 16 MiB.
    let hostile = [
        ("loop", "loop-guard", "8MiB", "past its 50 ms deadline"),
        ("trap", "trap-guard", "8MiB", "trap: unreachable"),
        ("bomb", "memory-bomb-guard", "8MiB", "trap: unreachable"),
        // Making and copying 16 MiB may pass the deadline first; either way it fails.
        (
            "huge",
            "huge-output-guard",
            "32MiB",
            "over the 1572864-byte limit|past its 50 ms deadline",
        ),
    ];
    for (name, crate_name, memory, _) in hostile {
        install_plugin(&e, name, crate_name);
        cairnctl_ok(
            &e,
            &[
                "plugin",
                "bind",
                name,
                "--plugin",
                name,
                "--kind",
                "watch-filter",
                "--memory",
                memory,
                "--fuel",
                "1000000000",
            ],
        );
    }
    let plain = || pb::WatchCreateRequest {
        key: b"/f/".to_vec(),
        range_end: prefix_end("/f/"),
        ..Default::default()
    };
    // 1,000 plain watchers over 10 streams.
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut stream = Stream::open(&e).await;
        for _ in 0..100 {
            stream.create(plain()).await;
        }
        streams.push(stream);
    }
    // The hostile watchers, and one plain watcher beside them, in one stream.
    let mut mixed = Stream::open(&e).await;
    let mut hostile_ids = Vec::new();
    for (name, _, _, _) in hostile {
        let create = pb::WatchCreateRequest {
            cairn_filter: Some(pb::CairnWatchFilter {
                binding: name.into(),
                argument: Vec::new(),
            }),
            ..plain()
        };
        hostile_ids.push(mixed.create(create).await.watch_id);
    }
    let neighbour = mixed.create(plain()).await.watch_id;

    let mut client = cairn_tests::cluster::connect(&e).await;
    for round in 0..2 {
        let key = format!("/f/{round}");
        let revision = client
            .put(key.as_str(), "v", None)
            .await
            .expect("put")
            .header()
            .expect("header")
            .revision();
        for stream in &mut streams {
            let mut got = 0;
            while got < 100 {
                let resp = stream.next().await;
                assert_eq!(resp.events.len(), 1, "{resp:?}");
                assert_eq!(
                    resp.events[0].kv.as_ref().map(|kv| kv.mod_revision),
                    Some(revision)
                );
                got += 1;
            }
        }
        // In the mixed stream: each hostile watcher canceled once (first round), the
        // neighbour gets the event every round.
        let mut neighbour_got = false;
        let mut canceled = Vec::new();
        while !neighbour_got || (round == 0 && canceled.len() < hostile.len()) {
            let resp = mixed.next().await;
            if resp.canceled {
                canceled.push((resp.watch_id, resp.cancel_reason));
            } else {
                assert_eq!(resp.watch_id, neighbour, "{resp:?}");
                assert_eq!(resp.events.len(), 1);
                neighbour_got = true;
            }
        }
        if round == 0 {
            canceled.sort();
            for ((id, reason), (&want_id, (name, _, _, why))) in
                canceled.iter().zip(hostile_ids.iter().zip(hostile))
            {
                assert_eq!(*id, want_id);
                assert!(
                    reason.starts_with(&format!("cairn: watch filter {name} failed: "))
                        && why.split('|').any(|w| reason.contains(w)),
                    "{name}: {reason}"
                );
            }
        }
    }
}
