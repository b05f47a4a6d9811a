//! The `cairn` process as an operator meets it: health, status, clean shutdown, and clear
//! failures on bad flags, a busy port or an unusable data directory.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::inproc::InProcCluster;
use cairn_tests::{CairnNode, Etcdctl, binary_path, free_port};
use futures::StreamExt;

/// Runs `cairn` with `args` until it exits (bounded), returning (exit code, stderr).
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(binary_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for cairn") {
            let out = child.wait_with_output().expect("collect stderr");
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("cairn {args:?} did not exit within 20s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_flags_exit_with_a_message() {
    // Proves a typo in a flag stops cairn at once with clap's message, not a crash.
    let (code, err) = run_to_exit(&["--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "stderr: {err}"
    );
    // An etcd flag Cairn does not take says so, and where the flags are listed.
    let (code, err) = run_to_exit(&["--wal-dir=/tmp/wal"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--wal-dir is an etcd flag Cairn does not take; docs/compatibility.md"),
        "stderr: {err}"
    );
    let (code, err) = run_to_exit(&["--max-txn-ops=zero"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--max-txn-ops"), "stderr: {err}");
    // etcd's rule: chosen client addresses need advertised ones (etcd's words).
    let (code, err) = run_to_exit(&["--listen-client-urls=http://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        ),
        "stderr: {err}"
    );
}

#[test]
fn busy_port_and_unusable_data_dir_fail_clearly() {
    // Proves the three start-up failures an operator hits most give one clear line and exit 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = format!(
        "http://127.0.0.1:{}",
        taken.local_addr().expect("addr").port()
    );
    let data = dir.path().join("a");
    let (code, err) = run_to_exit(&[
        &format!("--data-dir={}", data.display()),
        &format!("--listen-client-urls={busy}"),
        &format!("--advertise-client-urls={busy}"),
    ]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        err.contains(&format!("cannot listen on {busy}")),
        "stderr: {err}"
    );
    assert!(
        !data.exists(),
        "the data dir was created before the listeners failed"
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").expect("write file");
    let free_url = format!("http://127.0.0.1:{}", free_port());
    let free = format!("--listen-client-urls={free_url}");
    let advertise = format!("--advertise-client-urls={free_url}");
    let (code, err) = run_to_exit(&[&format!("--data-dir={}", file.display()), &free, &advertise]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(err.contains("is not a directory"), "stderr: {err}");

    let node = CairnNode::start(&[]);
    let (code, err) = run_to_exit(&[
        &format!("--data-dir={}", node.data_dir.display()),
        &free,
        &advertise,
    ]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(err.contains("in use by another process"), "stderr: {err}");
}

#[test]
fn sigterm_stops_cleanly_and_data_survives() {
    // Proves SIGTERM drains and exits 0, and a restart over the same data dir serves the data.
    let mut node = CairnNode::start(&[]);
    let ctl = Etcdctl::new(&node.endpoint());
    assert!(ctl.run(&["put", "k", "v"], None).status.success());
    let pid = node.pid().expect("running");
    cairn_tests::process::signal(pid, rustix::process::Signal::TERM);
    let status = node.wait_for_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(node.log().contains("stopped"), "log: {}", node.log());
    node.restart();
    let out = ctl.run(&["get", "k", "--print-value-only"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
}

#[test]
fn the_member_runs_without_transparent_huge_pages() {
    // Proves cairn turns transparent huge pages off for its own process, whatever the
    // system's setting (docs/operations.md, "Transparent huge pages").
    let node = CairnNode::start(&[]);
    let pid = node.pid().expect("running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line (Linux 5.0 or later) in:\n{status}"));
    assert_eq!(thp.trim(), "0", "THP_enabled in /proc/{pid}/status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status_report_the_member() {
    // Proves grpc.health.v1 says SERVING and Maintenance.Status describes this member.
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let node = CairnNode::start(&[]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.endpoint()))
        .expect("endpoint url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    assert_eq!(resp.into_inner().status, ServingStatus::Serving as i32);

    let ctl = Etcdctl::new(&node.endpoint());
    assert!(ctl.run(&["put", "a", "1"], None).status.success());
    let out = ctl.run(&["endpoint", "status", "-w", "json"], None);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let s = &status[0]["Status"];
    assert_eq!(
        s["header"]["member_id"], s["leader"],
        "a single member leads itself: {status}"
    );
    assert_eq!(s["version"], "3.6.0");
    assert!(
        s["raftIndex"].as_u64().expect("raftIndex")
            >= s["raftAppliedIndex"].as_u64().expect("applied")
    );
    assert!(
        s["raftAppliedIndex"].as_u64().expect("applied") >= 2,
        "{status}"
    );
    assert!(s["dbSize"].as_i64().expect("dbSize") > 0);
    assert_eq!(s["header"]["revision"], 2);
}

#[test]
fn hashkv_agrees_exactly_when_histories_agree() {
    // Proves HashKV and Hash are functions of the applied history: equal on two members that
    // applied the same writes, different once one diverges, with etcd's revision errors.
    let (a, b) = (CairnNode::start(&[]), CairnNode::start(&[]));
    let (ca, cb) = (Etcdctl::new(&a.endpoint()), Etcdctl::new(&b.endpoint()));
    for line in [
        vec!["put", "x", "1"],
        vec!["put", "y", "2"],
        vec!["del", "x"],
        vec!["put", "z", "3"],
        vec!["compaction", "3"],
        vec!["put", "y", "4"],
    ] {
        assert!(ca.run(&line, None).status.success() && cb.run(&line, None).status.success());
    }
    let hash = |ctl: &Etcdctl, args: &[&str]| -> serde_json::Value {
        let out = ctl.run(args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v[0].get("HashKV")
            .or_else(|| v[0].get("Status"))
            .cloned()
            .unwrap_or(v)
    };
    let latest = ["endpoint", "hashkv", "-w", "json"];
    let (ha, hb) = (hash(&ca, &latest), hash(&cb, &latest));
    assert_eq!(ha["hash"], hb["hash"], "same history, same hash");
    assert_eq!(ha["compact_revision"], 3);
    let past = ["endpoint", "hashkv", "--rev=4", "-w", "json"];
    assert_eq!(hash(&ca, &past)["hash"], hash(&cb, &past)["hash"]);
    assert_ne!(
        hash(&ca, &past)["hash"],
        ha["hash"],
        "a past revision hashes less history"
    );
    let compacted = ca.run(&["endpoint", "hashkv", "--rev=2"], None);
    assert!(
        String::from_utf8_lossy(&compacted.stderr).contains("required revision has been compacted")
    );

    assert!(cb.run(&["put", "w", "5"], None).status.success());
    assert_ne!(
        hash(&ca, &latest)["hash"],
        hash(&cb, &latest)["hash"],
        "diverged history, different hash"
    );
}

/// Connects to `port`, writes `hello`, then reads (and discards) until the server closes the
/// connection; returns how long that took, or fails after `limit`.
fn time_until_closed(port: u16, hello: &[u8], limit: Duration) -> Duration {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(hello).expect("write");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return start.elapsed(), // reset by the server
        }
        assert!(
            start.elapsed() < limit,
            "the server kept the connection open for {limit:?}"
        );
    }
}

#[test]
fn silent_and_unresponsive_connections_are_closed() {
    // Proves a client that connects and says nothing is disconnected after the handshake
    // timeout (20 s), and one that sends the HTTP/2 preface (and maybe its SETTINGS) but never
    // answers a keepalive ping is disconnected after the keepalive interval and timeout.
    let node = CairnNode::start(&[
        "--grpc-keepalive-interval=1s",
        "--grpc-keepalive-timeout=1s",
    ]);
    let port = node.port;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    let mut greeted = PREFACE.to_vec();
    greeted.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let limit = Duration::from_secs(60);
    let waits: Vec<_> = [Vec::new(), PREFACE.to_vec(), greeted]
        .into_iter()
        .map(|hello| std::thread::spawn(move || time_until_closed(port, &hello, limit)))
        .collect();
    let waited: Vec<Duration> = waits.into_iter().map(|w| w.join().expect("wait")).collect();
    assert!(
        waited[0] >= Duration::from_secs(19),
        "closed early: {waited:?}"
    );
    // The preface-only one goes at the handshake timeout or the first unanswered ping,
    // whichever comes first (here the ping).
    assert!(waited[1] < Duration::from_secs(25), "{waited:?}");
    assert!(
        waited[2] < Duration::from_secs(15),
        "an unanswered ping did not close the connection: {waited:?}"
    );
}

#[test]
fn a_config_file_sets_what_flags_and_variables_do_not() {
    // Proves `--config-file` reads etcd's YAML keys, that a flag wins over the file, that
    // the file's TLS section maps to the TLS flags, and that etcd keys Cairn lacks are only
    // warned about: the member starts, with the file's limits and JSON logs.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &file,
        "log-format: json\nmax-txn-ops: 2\nmax-request-bytes: 4096\nwal-dir:\n\
         enable-v2: true\nclient-transport-security:\n  client-cert-auth: false\n",
    )
    .expect("write the config file");
    let config = format!("--config-file={}", file.display());
    let node = CairnNode::start(&[&config, "--max-request-bytes=1048576"]);
    let ctl = Etcdctl::new(&node.endpoint());
    // The file's 2 operations per txn: a txn of three is refused.
    let txn = ctl.run(&["txn"], Some("\n\nput a 1\nput b 2\nput c 3\n\n\n"));
    assert!(
        String::from_utf8_lossy(&txn.stderr).contains("too many operations in txn request"),
        "{txn:?}"
    );
    // The flag's 1 MiB, not the file's 4 KiB: a 5 KB value is taken.
    let big = "x".repeat(5000);
    let put = ctl.run(&["put", "big", &big], None);
    assert!(put.status.success(), "{put:?}");
    let log = node.log();
    let first: serde_json::Value =
        serde_json::from_str(log.lines().next().expect("a log line")).expect("JSON logs");
    assert_eq!(first["level"], "warn", "{log}");
    assert_eq!(first["keys"], "enable-v2", "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_bounds_one_connection() {
    // Proves `--max-concurrent-streams` caps the streams of one client connection, as etcd's
    // flag does: with a cap of 2 and two watches open, a third RPC on the same connection
    // waits, while another connection is served at once.
    use cairn_proto::etcdserverpb::kv_client::KvClient;
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use cairn_proto::etcdserverpb::{
        RangeRequest, WatchCreateRequest, WatchRequest, watch_request::RequestUnion,
    };
    let node = CairnNode::start(&["--max-concurrent-streams=2"]);
    let url = format!("http://{}", node.endpoint());
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut watches = Vec::new();
    for key in ["a", "b"] {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.as_bytes().to_vec(),
                ..WatchCreateRequest::default()
            })),
        };
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let mut stream = WatchClient::new(channel.clone())
            .watch(requests)
            .await
            .expect("watch")
            .into_inner();
        // Created: the stream is open on the server.
        stream
            .message()
            .await
            .expect("created")
            .expect("a response");
        watches.push(stream);
    }
    let range = || RangeRequest {
        key: b"a".to_vec(),
        ..RangeRequest::default()
    };
    let third = tokio::time::timeout(
        Duration::from_millis(1500),
        KvClient::new(channel.clone()).range(range()),
    )
    .await;
    assert!(third.is_err(), "a third stream was served: {third:?}");
    let other = tonic::transport::Endpoint::from_shared(url)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    tokio::time::timeout(Duration::from_secs(10), KvClient::new(other).range(range()))
        .await
        .expect("another connection is served")
        .expect("range");
    drop(watches);
}

#[test]
fn thousands_of_small_requests_queued_on_one_connection_are_served() {
    // Proves a member whose runtime was too busy to read a client connection for a while
    // answers every small request queued on it meanwhile. h2 budgets the small DATA frames
    // that wait unread on a connection (half its flow-control window) and closes the
    // connection with GOAWAY ENHANCE_YOUR_CALM ("too_many_data_frames") past it; with hyper's
    // 1 MiB default window, about 2,000 queued unary requests were enough (a writer beside
    // 10,000 watchers lost its connection that way in the fan-out benchmark). The member runs
    // in this process on a runtime with one worker, and the test holds that worker while the
    // requests queue, so the member then reads them all before any is decoded.
    use cairn_proto::etcdserverpb::RangeRequest;
    use cairn_proto::etcdserverpb::kv_client::KvClient;
    const REQUESTS: usize = 8000;
    let member_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("member runtime");
    // One member: the seed of its (unused) network filter does not matter.
    let cluster = member_rt.block_on(InProcCluster::start(1, 1));
    let endpoint = cluster.members[0].endpoint();
    let port = cluster.members[0].client_port();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    let channel = client_rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        // One answered request first: by then the client knows the member's SETTINGS, without
        // which it keeps to 100 streams.
        KvClient::new(channel.clone())
            .range(RangeRequest {
                key: b"k".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .expect("first range");
        channel
    });
    // Hold the member's only worker (a plain blocking wait inside one of its tasks).
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    member_rt.spawn(async move {
        let _ = held_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
    });
    held_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the member's worker is held");
    let answered = client_rt.block_on(async {
        let mut ranges = futures::stream::FuturesUnordered::new();
        for i in 0..REQUESTS {
            let mut kv = KvClient::new(channel.clone());
            ranges.push(async move {
                kv.range(RangeRequest {
                    key: format!("k{i}").into_bytes(),
                    ..RangeRequest::default()
                })
                .await
            });
        }
        // Each request is about 63 bytes on the wire; wait (driving the requests) until at
        // least 50 apiece are queued in the kernel, then let the member go.
        {
            let mut first = std::pin::pin!(ranges.next());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = tokio::time::timeout(Duration::from_millis(20), &mut first).await {
                    panic!("a held member answered: {r:?}");
                }
                let queued = queued_bytes(port);
                if queued >= REQUESTS * 50 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "only {queued} bytes of {REQUESTS} requests reached the socket"
                );
            }
        }
        release_tx.send(()).expect("release the member");
        tokio::time::timeout(Duration::from_secs(60), async {
            let mut ok = 0;
            while let Some(r) = ranges.next().await {
                r.expect("every queued request is answered");
                ok += 1;
            }
            ok
        })
        .await
        .expect("answers within 60 s")
    });
    assert_eq!(answered, REQUESTS);
    drop(channel);
    drop(client_rt);
    member_rt.block_on(cluster.shutdown());
}

/// The bytes the kernel holds on loopback TCP connections to `port`: what the server side
/// received and has not read, plus what the client side has not sent yet (/proc/net/tcp,
/// whose addresses and queue sizes are hexadecimal).
fn queued_bytes(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port = format!(":{port:04X}");
    let hex = |v: &str| usize::from_str_radix(v, 16).unwrap_or(0);
    let mut total = 0;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some((tx, rx))) = (
            fields.get(1),
            fields.get(2),
            fields.get(4).and_then(|q| q.split_once(':')),
        ) else {
            continue;
        };
        if local.ends_with(&port) {
            total += hex(rx);
        } else if remote.ends_with(&port) {
            total += hex(tx);
        }
    }
    total
}
