//! Faults on multi-member Cairn clusters that need real processes: a killed leader, a member
//! that falls behind the retained log, a restarted leader. (A partitioned minority and the
//! seeded schedules of partitions, drops and delays run in-process: `schedules.rs`.) Every test runs a write load and ends by checking that
//! no acknowledged write was lost and that every member has the same HashKV.

use std::time::{Duration, Instant};

use cairn_tests::cluster::connect;
use cairn_tests::converge::stop_and_verify;
use cairn_tests::workload::{Writers, put_concurrently};
use cairn_tests::{Cluster, Flavor, with_timeout};

/// Fault tests load two cores with several servers each; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn leader_kill_under_load(size: usize) {
    leader_kill_under_load_with(size, None).await;
}

async fn leader_kill_under_load_with(size: usize, peer_tls: Option<&cairn_tests::inproc::PeerTls>) {
    let mut cluster = Cluster::start_with(Flavor::Cairn, size, &[], peer_tls).await;
    if let Some(tls) = peer_tls {
        // The peer port speaks TLS only, to holders of a certificate the CA signed.
        let peer = cluster.members[0].peer_url();
        let curl = |with_cert: bool| {
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-s", "-o", "/dev/null", "--max-time", "5", "--cacert"])
                .arg(&tls.ca);
            if with_cert {
                cmd.arg("--cert").arg(&tls.pair.cert);
                cmd.arg("--key").arg(&tls.pair.key);
            }
            cmd.arg(&peer).status().expect("curl runs").success()
        };
        assert!(curl(true), "a member's certificate is not let in at {peer}");
        assert!(!curl(false), "no client certificate was let in at {peer}");
    }
    let writers = Writers::start(cluster.endpoints(), 8, "w/");
    writers
        .wait_for_progress(100, Duration::from_secs(30))
        .await;

    let old = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let killed = Instant::now();
    cluster.members[old].kill9();
    let new = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let failover = killed.elapsed();
    assert_ne!(new, old, "a killed member cannot lead");
    // Election timeout 1 s, randomized up to 2 s, plus pre-vote and this test's polling.
    assert!(
        failover < Duration::from_secs(8),
        "new leader after {failover:?}"
    );
    println!("{size} members: new leader {failover:?} after the kill");
    writers
        .wait_for_progress(100, Duration::from_secs(30))
        .await;

    // The old leader rejoins from its data dir and catches up.
    cluster.members[old].restart();
    writers
        .wait_for_progress(100, Duration::from_secs(30))
        .await;
    stop_and_verify(&cluster, writers, "w/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_three_members() {
    // Proves a 3-member cluster elects a new leader soon after kill -9 of its leader, keeps
    // taking writes, loses none, and takes the old leader back.
    let _serial = SERIAL.lock().await;
    with_timeout(
        Duration::from_secs(240),
        "leader kill (3)",
        leader_kill_under_load(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_three_members_over_peer_tls() {
    // Proves the same with the members talking over TLS (https:// peer URLs, certificates
    // verified both ways): the killed leader's peers reconnect to the new one and to the
    // restarted member over fresh TLS connections.
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = cairn_tests::pki::Ca::new(dir.path(), "peer-ca");
    let tls = cairn_tests::inproc::PeerTls {
        pair: ca.issue("member", "member"),
        ca: ca.cert.clone(),
    };
    with_timeout(
        Duration::from_secs(240),
        "leader kill over peer TLS",
        leader_kill_under_load_with(3, Some(&tls)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_five_members() {
    // Proves the same on 5 members.
    let _serial = SERIAL.lock().await;
    with_timeout(
        Duration::from_secs(240),
        "leader kill (5)",
        leader_kill_under_load(5),
    )
    .await;
}

/// Kills a follower of `leader` and waits until the leader's metrics count it down; lets
/// eight writers acknowledge `while_down` writes and waits until the leader has purged its
/// log past what the follower had applied (so it can only come back by snapshot); restarts
/// it, lets the writers acknowledge `after` more (within `after_within`), then stops them and
/// checks that nothing acknowledged is lost and the members converge. Returns the number of
/// snapshots the follower installed. Every wait is on state the members report, none on time.
async fn down_then_back_under_load(
    cluster: &mut Cluster,
    leader: usize,
    while_down: u64,
    after: u64,
    after_within: Duration,
) -> f64 {
    let lagging = (leader + 1) % 3;
    let had = cluster.kill_and_wait_down(lagging, leader).await;
    let writers = Writers::start(cluster.endpoints(), 8, "w/");
    writers
        .wait_for_progress(while_down, Duration::from_secs(60))
        .await;
    cluster
        .wait_purged_past(leader, had, Duration::from_secs(60))
        .await;
    cluster.members[lagging].restart();
    writers.wait_for_progress(after, after_within).await;
    stop_and_verify(cluster, writers, "w/").await;
    cluster.members[lagging]
        .metric("etcd_network_snapshot_receive_success", &[])
        .await
        .expect("the follower answers /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_by_snapshot() {
    // Proves a member that was down while the log moved past what the leader keeps is brought
    // back by a streamed snapshot, ending with the same HashKV as the others.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "snapshot catch-up", async {
        let flags = [
            "--snapshot-count=200",
            "--experimental-snapshot-catchup-entries=50",
        ];
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &flags).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let installs =
            down_then_back_under_load(&mut cluster, leader, 1500, 200, Duration::from_secs(30))
                .await;
        assert_eq!(installs, 1.0, "snapshots installed by the lagging member");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_back_under_load_needs_one_snapshot() {
    // Proves a member that comes back while writes go on catches up with one snapshot, not
    // one after another: the leader keeps the entries after a snapshot while it sends it, and
    // keeps what a live follower still needs (host/src/raft/purge.rs). Before, with a store
    // big enough that a snapshot takes a while, the leader purged past the snapshot being
    // installed, so the member needed another, and never caught up while the load lasted.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "catch-up under load", async {
        let flags = [
            "--snapshot-count=1000",
            "--experimental-snapshot-catchup-entries=50",
        ];
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &flags).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        // About 40 MB of state, so a snapshot takes a while to send and install.
        let big = "x".repeat(16 << 10);
        put_concurrently(&cluster.members[leader].endpoint(), 8, 300, "big/", &big).await;
        // 4,000 writes while it is down: four snapshot intervals; it comes back once the
        // leader has purged past it, while the writers go on.
        let installs =
            down_then_back_under_load(&mut cluster, leader, 4000, 6000, Duration::from_secs(120))
                .await;
        assert_eq!(
            installs, 1.0,
            "the member came back with {installs} snapshots, not one"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_leader_serves_no_stale_linearizable_read() {
    // Proves a leader killed right after acknowledging writes and restarted at once (before
    // the others elect anyone) does not answer linearizable reads from the state it recovered
    // to: every read, on every member, sees the last acknowledged write. (openraft would let
    // such a leader resume without an election and answer ReadIndex from its recovered
    // commit index, which lags what the cluster acknowledged.)
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "restarted leader", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        for round in 0..4 {
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
            let endpoint = cluster.members[leader].endpoint();
            // A burst of concurrent writes leaves applied state the leader has not synced.
            put_concurrently(&endpoint, 8, 40, "burst/", "x").await;
            let mut c = connect(&endpoint).await;
            let acked = c
                .put("last", format!("round-{round}"), None)
                .await
                .expect("last put")
                .header()
                .expect("put header")
                .revision();
            cluster.members[leader].kill9();
            cluster.members[leader].restart();
            // Every member, the restarted one first, answers with the last write (after an
            // election if it has to wait for one).
            let order = std::iter::once(leader).chain((0..3).filter(|&i| i != leader));
            for i in order {
                let deadline = Instant::now() + Duration::from_secs(20);
                let resp = loop {
                    let read = async {
                        let mut c = connect(&cluster.members[i].endpoint()).await;
                        c.get("last", None).await
                    };
                    match tokio::time::timeout(Duration::from_secs(5), read).await {
                        Ok(Ok(resp)) => break resp,
                        _ if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        other => panic!("round {round}: no read from m{i} in 20 s: {other:?}"),
                    }
                };
                let seen = resp.kvs().first().map(|kv| {
                    (
                        String::from_utf8_lossy(kv.value()).into_owned(),
                        kv.mod_revision(),
                    )
                });
                assert_eq!(
                    seen,
                    Some((format!("round-{round}"), acked)),
                    "round {round}: m{i} (leader before the kill: m{leader}) served a stale \
                     linearizable read"
                );
                let revision = resp.header().expect("get header").revision();
                assert!(
                    revision >= acked,
                    "round {round}: m{i} answered at revision {revision}, before the \
                     acknowledged {acked}"
                );
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_leader_follows_the_new_one_under_client_load() {
    // Proves a leader frozen (SIGSTOP) past its lease, while the others elect a new leader
    // and its own clients keep sending it writes, follows the new leader within seconds of
    // being resumed and forwards its clients' writes to it. (It once spun its workers on the
    // writes it held, in the forwarding loop, and answered neither clients nor peers for as
    // long as the load lasted.) No acknowledged write is lost.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "resumed leader", async {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

        let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let old = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let endpoint = cluster.members[old].endpoint();
        // More writers than any machine has cores: each write the frozen member holds is a
        // task of its own once it runs again.
        const CLIENTS: usize = 32;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(connect(&endpoint).await);
        }
        cluster.members[old].pause();
        let paused = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let resumed_at: Arc<std::sync::OnceLock<Instant>> = Arc::default();
        let acked_after_resume = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (w, mut c) in clients.into_iter().enumerate() {
            let (stop, resumed_at, after) =
                (stop.clone(), resumed_at.clone(), acked_after_resume.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("frozen/{w}/{n}");
                    n += 1;
                    let sent = Instant::now();
                    let put = c.put(key.as_str(), "v", None);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), put).await {
                        acked.push(key);
                        if resumed_at.get().is_some_and(|r| sent > *r) {
                            after.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        // A refused put fails at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                acked
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let new = loop {
            if let Some(found) = cluster.leader_except(Some(old)).await {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "no new leader while m{old} is frozen"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let new_id = cluster.members[new].id().await;
        // Frozen well past its leader lease (two election timeouts: 2 s), so that once it
        // runs it knows it has lost its quorum.
        let frozen_for = Duration::from_secs(4);
        if let Some(rest) = frozen_for.checked_sub(paused.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        cluster.members[old].resume();
        let resumed = Instant::now();
        resumed_at.set(resumed).expect("set once");

        // Within 4 s: it names the new leader, and writes sent to it after the resume are
        // acknowledged. (It takes 0.1-1.1 s, on a busy machine too. The spinning writes
        // held their workers for at least the forwarding patience, 3 s, and usually for as
        // long as the load lasted.)
        let limit = Duration::from_secs(4);
        let follows = loop {
            let status = async {
                let mut c = cairn_tests::cluster::try_connect(&endpoint).await.ok()?;
                c.status().await.ok()
            };
            let leader = tokio::time::timeout(Duration::from_secs(1), status)
                .await
                .ok()
                .flatten()
                .map(|s| s.leader());
            if leader == Some(new_id) && acked_after_resume.load(Ordering::Relaxed) > 0 {
                break resumed.elapsed();
            }
            assert!(
                resumed.elapsed() < limit,
                "m{old} resumed {limit:?} ago: it names leader {leader:?} (the new one is \
                 m{new}, {new_id:x}) and acknowledged {} writes sent since",
                acked_after_resume.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!("m{old} follows m{new} and takes writes {follows:?} after its resume");
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        for t in tasks {
            acked.extend(t.await.expect("writer task"));
        }
        cairn_tests::converge::wait_converged(&cluster, Duration::from_secs(60)).await;
        cairn_tests::converge::assert_all_present(&cluster, "frozen/", &acked).await;
    })
    .await;
}
