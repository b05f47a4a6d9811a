//! Nothing a client or a restart does takes a cluster down or makes a member lie: requests
//! with keys longer than the store holds, restarts from the data dir alone, a member started
//! without a quorum, flags that contradict the data dir, and membership changes that would
//! cost the quorum. Where etcd shows comparable behaviour, the test runs it against etcd too.

use std::time::{Duration, Instant};

use cairn_tests::cluster::connect;
use cairn_tests::converge::wait_converged;
use cairn_tests::{Cluster, Flavor, grpc_message, with_timeout};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, MemberAddOptions, Txn, TxnOp,
    WatchOptions,
};

/// Multi-member tests load two cores with several servers each; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longer than any key the store holds (and than the storage engine's 64 KiB key limit).
const LONG: usize = 70_000;
/// The longest key Cairn stores (`cairn::mvcc::MAX_KEY_BYTES`).
const MAX_KEY: usize = cairn::mvcc::MAX_KEY_BYTES;

/// Puts `key` through `client` until it succeeds or `limit` passes.
async fn put_eventually(client: &mut Client, key: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        match client.put(key, "v", None).await {
            Ok(_) => return,
            Err(e) => assert!(
                start.elapsed() < limit,
                "put {key} still fails after {limit:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys_never_stop_a_cluster() {
    // Proves every request kind with a key or range end over the storage limit is answered
    // (a put refused before proposing, everything else served as etcd serves it) and the
    // three members keep serving and agree, where one such put used to stop them all.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(180), "long keys", async {
        let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let follower = (leader + 1) % 3;
        let mut client = connect(&cluster.members[follower].endpoint()).await;
        let long = vec![b'k'; LONG];
        let long_end = vec![b'l'; LONG];
        let zeros = vec![0u8; LONG];

        // Puts over the limit are refused up front, with the limit named.
        for key in [&long, &zeros] {
            let err = client.put(key.clone(), "v", None).await.unwrap_err();
            let text = grpc_message(&err);
            assert!(
                text.starts_with("InvalidArgument: cairn: key is too long: 70000 bytes"),
                "{text}"
            );
        }
        let txn = Txn::new().and_then([TxnOp::put(long.clone(), "v", None)]);
        let text = grpc_message(&client.txn(txn).await.unwrap_err());
        assert!(text.contains("key is too long"), "{text}");

        // The longest storable key works end to end, including all zero bytes (the worst
        // case for the index's escaping).
        let at_limit = vec![b'k'; MAX_KEY];
        let zero_limit = vec![0u8; MAX_KEY];
        client
            .put(at_limit.clone(), "a", None)
            .await
            .expect("put at the limit");
        client
            .put(zero_limit.clone(), "z", None)
            .await
            .expect("zeros at the limit");
        let got = client
            .get(at_limit.clone(), None)
            .await
            .expect("get at the limit");
        assert_eq!(got.kvs()[0].value(), b"a");

        // Reads, deletes, compares and watches with over-long keys name no stored key.
        let got = client
            .get(long.clone(), None)
            .await
            .expect("get of a long key");
        assert_eq!(got.count(), 0);
        let opts = GetOptions::new().with_range(long_end.clone());
        let got = client
            .get(long.clone(), Some(opts))
            .await
            .expect("range to a long end");
        assert_eq!(got.count(), 0, "[k*70000, l*70000) holds no stored key");
        let opts = GetOptions::new().with_range(long_end.clone());
        let got = client
            .get("k", Some(opts))
            .await
            .expect("range from short to long");
        assert_eq!(got.count(), 1, "[k, l*70000) holds k*32000");
        let opts = GetOptions::new()
            .with_range(long_end.clone())
            .with_revision(2);
        client
            .get("a", Some(opts))
            .await
            .expect("a past range to a long end");
        let del = client
            .delete(long.clone(), None)
            .await
            .expect("delete of a long key");
        assert_eq!(del.deleted(), 0);
        let opts = DeleteOptions::new().with_range(zeros.clone());
        client
            .delete(long.clone(), Some(opts))
            .await
            .expect("empty long range");
        let txn = Txn::new()
            .when([Compare::version(long.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::get(long.clone(), None),
                TxnOp::put("after-txn", "v", None),
                TxnOp::delete(long_end.clone(), None),
            ]);
        let resp = client.txn(txn).await.expect("txn reading a long key");
        assert!(resp.succeeded());
        // A compare over a reversed range (range_end below key) used to stop apply too: the
        // range names no key, so a version compare with 0 holds, as in etcd.
        let txn = Txn::new()
            .when([Compare::version("b", CompareOp::Equal, 0).with_range("a")])
            .and_then([TxnOp::put("after-reversed-compare", "v", None)]);
        let resp = client
            .txn(txn)
            .await
            .expect("txn comparing over a reversed range");
        assert!(resp.succeeded());
        let mut stream = client
            .watch(long.clone(), Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch of a long key");
        let created = stream
            .message()
            .await
            .expect("watch response")
            .expect("created");
        assert!(created.created() && !created.canceled(), "{created:?}");
        // A delete over a range that ends in a long key removes what it covers.
        let opts = DeleteOptions::new().with_range(long_end.clone());
        let del = client
            .delete("k", Some(opts))
            .await
            .expect("delete to a long end");
        assert_eq!(del.deleted(), 1);

        // Every member is still up, serves writes and holds the same state.
        for m in &cluster.members {
            let mut c = connect(&m.endpoint()).await;
            c.put(format!("alive-{}", m.name), "yes", None)
                .await
                .unwrap_or_else(|e| panic!("{} stopped serving writes: {e}", m.name));
        }
        wait_converged(&cluster, Duration::from_secs(30)).await;
    })
    .await;
}

/// Every member's (ID, name, is_learner), sorted, as `member` sees them.
async fn member_list(endpoint: &str) -> Vec<(u64, String, bool)> {
    let mut client = connect(endpoint).await;
    let resp = client.member_list().await.expect("member list");
    let mut out: Vec<_> = resp
        .members()
        .iter()
        .map(|m| (m.id(), m.name().to_string(), m.is_learner()))
        .collect();
    out.sort();
    out
}

/// SIGTERM, and a bounded wait for a clean exit (etcd, a Go program, ends by the signal);
/// returns how long the member took to exit.
async fn stop(member: &mut cairn_tests::cluster::Member) -> Duration {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    member.terminate();
    let status = member.wait_for_exit(Duration::from_secs(30)).await;
    assert!(
        status.success() || status.signal() == Some(15),
        "{} exited with {status}",
        member.name
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_restart_from_their_data_dir() {
    // Proves each member of a 3-member cluster restarted with only --name, --data-dir and its
    // listen URLs keeps its ID and voter status and takes writes, on Cairn as on etcd; and a
    // --name that contradicts the data dir is refused with the data dir left untouched.
    let _serial = SERIAL.lock().await;
    for flavor in [Flavor::Cairn, Flavor::Etcd] {
        with_timeout(Duration::from_secs(240), "restart from data dir", async {
            let mut cluster = Cluster::start(flavor, 3, &[]).await;
            let before = member_list(&cluster.members[0].endpoint()).await;
            assert!(
                before
                    .iter()
                    .all(|(_, name, learner)| !name.is_empty() && !learner)
            );
            for i in 0..3 {
                let took = stop(&mut cluster.members[i]).await;
                if flavor == Flavor::Cairn {
                    // Idle peers hold streams open to it: it still stops well within the
                    // 5 s grace it gives requests in flight.
                    assert!(took < Duration::from_secs(3), "m{i} took {took:?} to stop");
                }
                cluster.members[i].restart_from_data_dir(&[]);
                let mut client = connect(&cluster.members[i].endpoint()).await;
                put_eventually(&mut client, &format!("after-{i}"), Duration::from_secs(30)).await;
                let after = member_list(&cluster.members[i].endpoint()).await;
                assert_eq!(
                    after, before,
                    "{flavor:?}: membership after restarting m{i}"
                );
                let mut client = connect(&cluster.members[i].endpoint()).await;
                let status = client.status().await.expect("status");
                let header = status.header().expect("header");
                assert_eq!(header.member_id(), before_id(&before, i));
            }
            if flavor == Flavor::Cairn {
                // A contradicting --name: refused before anything is written.
                let m = &mut cluster.members[2];
                stop(m).await;
                let listing = dir_listing(&m.data_dir);
                let mut args: Vec<String> = m.args().to_vec();
                for a in args.iter_mut() {
                    if a.starts_with("--name=") {
                        *a = "--name=someone-else".to_string();
                    }
                }
                let (ok, log) = m.run_to_exit(&args, Duration::from_secs(30)).await;
                assert!(!ok, "a contradicting --name was accepted");
                assert!(
                    log.contains("it belongs to member \"m2\""),
                    "no clear error in the log:\n{log}"
                );
                assert_eq!(dir_listing(&m.data_dir), listing, "the data dir changed");
                m.restart_from_data_dir(&[]);
                let mut client = connect(&m.endpoint()).await;
                put_eventually(&mut client, "after-refusal", Duration::from_secs(30)).await;
            }
        })
        .await;
    }
}

/// The ID of the member named `m{i}` in a member list.
fn before_id(list: &[(u64, String, bool)], i: usize) -> u64 {
    let name = format!("m{i}");
    list.iter()
        .find(|(_, n, _)| *n == name)
        .map(|(id, _, _)| *id)
        .unwrap_or_else(|| panic!("{name} is not in {list:?}"))
}

/// Every file under `dir` with its length: enough to see that nothing was written.
fn dir_listing(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read data dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with("LOCK") {
                let len = entry.metadata().map_or(0, |m| m.len());
                out.push((path.display().to_string(), len));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_alone_serves_what_it_had() {
    // Proves a member restarted while the rest of its cluster is down answers serializable
    // reads with the data it had applied, at the revision it had (never an empty store), and
    // that writes resume once a second member is back.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(180), "alone after a full stop", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let mut client = connect(&cluster.members[0].endpoint()).await;
        let mut last = 0;
        for i in 0..50 {
            let resp = client
                .put(format!("config/{i:02}"), format!("value-{i}"), None)
                .await
                .expect("put");
            last = resp.header().expect("header").revision();
        }
        for m in cluster.members.iter_mut() {
            stop(m).await;
        }
        let lone = &mut cluster.members[1];
        lone.restart_from_data_dir(&[]);
        let mut client = connect(&lone.endpoint()).await;
        let opts = GetOptions::new().with_prefix().with_serializable();
        let got = client
            .get("config/", Some(opts))
            .await
            .expect("serializable get");
        assert_eq!(got.count(), 50, "the lone member lost keys");
        assert_eq!(got.header().expect("header").revision(), last);
        assert_eq!(got.kvs()[49].value(), b"value-49");
        let status = client.status().await.expect("status");
        assert!(status.raft_index() > 0, "Status says nothing was applied");
        // Linearizable reads need a leader; they fail rather than answer stale data.
        let linear = tokio::time::timeout(Duration::from_secs(20), client.get("config/00", None))
            .await
            .expect("a linearizable read without a quorum is bounded");
        assert!(
            linear.is_err(),
            "a linearizable read was served without a quorum"
        );
        // A second member brings the quorum back.
        cluster.members[2].restart_from_data_dir(&[]);
        put_eventually(&mut client, "config/after", Duration::from_secs(30)).await;
    })
    .await;
}

/// `member add` of a voter whose process never starts, on `flavor`: the outcome, as text.
async fn add_unstarted(client: &mut Client, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}");
    match tokio::time::timeout(
        Duration::from_secs(30),
        client.member_add([url], Some(MemberAddOptions::new())),
    )
    .await
    {
        Err(_) => "hung".to_string(),
        Ok(Ok(_)) => "added".to_string(),
        Ok(Err(e)) => grpc_message(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguration_keeps_a_started_quorum() {
    // Proves etcd's --strict-reconfig-check on Cairn and etcd alike: on a one-member cluster
    // a voter that never starts is added (etcd's exception), a second is refused with "not
    // enough started members", no membership request hangs, and removing a live member while
    // another is down is refused as an unhealthy cluster.
    let _serial = SERIAL.lock().await;
    let mut outcomes = Vec::new();
    for flavor in [Flavor::Cairn, Flavor::Etcd] {
        let outcome = with_timeout(Duration::from_secs(180), "reconfiguration", async {
            let mut seen = Vec::new();
            {
                let cluster = Cluster::start(flavor, 1, &[]).await;
                let mut client = connect(&cluster.members[0].endpoint()).await;
                let free = [cairn_tests::free_port(), cairn_tests::free_port()];
                seen.push(add_unstarted(&mut client, free[0]).await);
                seen.push(add_unstarted(&mut client, free[1]).await);
            }
            {
                let mut cluster = Cluster::start(flavor, 3, &[]).await;
                let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
                let down = (leader + 1) % 3;
                let live = (leader + 2) % 3;
                let live_id = cluster.members[live].id().await;
                // Both count a peer as down once it has not answered for a bounded time
                // (etcd: its connection broke; Cairn: no heartbeat answer for two election
                // timeouts), and both say so in etcd_network_active_peers.
                cluster.kill_and_wait_down(down, leader).await;
                let mut client = connect(&cluster.members[leader].endpoint()).await;
                let refused = match client.member_remove(live_id).await {
                    Ok(_) => "removed".to_string(),
                    Err(e) => grpc_message(&e),
                };
                seen.push(refused);
                let members = member_list(&cluster.members[leader].endpoint()).await;
                seen.push(format!("{} members", members.len()));
            }
            seen
        })
        .await;
        outcomes.push(outcome);
    }
    let expected = vec![
        "added".to_string(),
        "Unknown: etcdserver: re-configuration failed due to not enough started members"
            .to_string(),
        "Unavailable: etcdserver: unhealthy cluster".to_string(),
        "3 members".to_string(),
    ];
    assert_eq!(outcomes[0], expected, "Cairn");
    assert_eq!(outcomes[1], expected, "etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_recovers_the_last_survivor() {
    // Proves --force-new-cluster turns the last survivor of a cluster that lost its quorum
    // for good into a one-member cluster that keeps every acknowledged write and takes new
    // ones, then restarts normally without the flag; on Cairn as on etcd.
    let _serial = SERIAL.lock().await;
    for flavor in [Flavor::Cairn, Flavor::Etcd] {
        with_timeout(Duration::from_secs(180), "force new cluster", async {
            let mut cluster = Cluster::start(flavor, 3, &[]).await;
            let mut client = connect(&cluster.members[0].endpoint()).await;
            for i in 0..30 {
                client
                    .put(format!("acked/{i:02}"), "v", None)
                    .await
                    .expect("put");
            }
            cluster.members[1].kill9();
            cluster.members[2].kill9();
            stop(&mut cluster.members[0]).await;
            let survivor = &mut cluster.members[0];
            survivor.restart_from_data_dir(&["--force-new-cluster"]);
            let mut client = connect(&survivor.endpoint()).await;
            put_eventually(&mut client, "after-recovery", Duration::from_secs(30)).await;
            let got = client
                .get("acked/", Some(GetOptions::new().with_prefix()))
                .await
                .expect("linearizable get");
            assert_eq!(got.count(), 30, "{flavor:?}: acknowledged writes lost");
            let members = member_list(&survivor.endpoint()).await;
            assert_eq!(members.len(), 1, "{flavor:?}: {members:?}");
            assert_eq!(members[0].1, "m0");
            // Back to a normal start: the one-member cluster stays.
            stop(survivor).await;
            survivor.restart_from_data_dir(&[]);
            let mut client = connect(&survivor.endpoint()).await;
            put_eventually(&mut client, "after-normal-restart", Duration::from_secs(30)).await;
            assert_eq!(member_list(&survivor.endpoint()).await.len(), 1);
        })
        .await;
    }
}
