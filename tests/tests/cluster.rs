//! Multi-member Cairn: any member serves any request, membership changes while writes run,
//! and etcdctl's cluster commands against Cairn and against a real etcd cluster.

use std::time::{Duration, Instant};

use cairn_tests::cluster::connect;
use cairn_tests::converge::{stop_and_verify, wait_converged};
use cairn_tests::workload::Writers;
use cairn_tests::{Cluster, Etcdctl, Flavor, with_timeout};
use etcd_client::{Compare, CompareOp, GetOptions, MemberAddOptions, Txn, TxnOp};

/// Multi-member tests load two cores with several servers each; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_serves_every_request() {
    // Proves writes on followers are forwarded (a 512 KiB one too), linearizable reads on
    // every member see the latest write, Status and MemberList agree, and HashKV is equal on
    // all members.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(120), "every member serves", async {
        let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        for (i, m) in cluster.members.iter().enumerate() {
            let mut client = connect(&m.endpoint()).await;
            let key = format!("k{i}");
            let put = client.put(key.as_str(), m.name.as_str(), None).await;
            put.unwrap_or_else(|e| panic!("put on {} (leader {leader}): {e}", m.name));
            // Read the write back on every member, linearizably.
            for other in &cluster.members {
                let mut reader = connect(&other.endpoint()).await;
                let got = reader
                    .get(key.as_str(), None)
                    .await
                    .expect("linearizable get");
                assert_eq!(got.kvs().len(), 1, "{} misses {key}", other.name);
                assert_eq!(got.kvs()[0].value(), m.name.as_bytes());
            }
        }
        // A compare-and-swap through a follower.
        let follower = (leader + 1) % 3;
        let mut client = connect(&cluster.members[follower].endpoint()).await;
        let txn = Txn::new()
            .when([Compare::value("k0", CompareOp::Equal, "m0")])
            .and_then([TxnOp::put("k0", "swapped", None)]);
        assert!(client.txn(txn).await.expect("txn").succeeded());
        let serial = client
            .get("k0", Some(GetOptions::new().with_serializable()))
            .await
            .expect("serializable get");
        assert_eq!(serial.kvs()[0].value(), b"swapped");
        // A write too large for the peer call stream travels as a call of its own.
        let big = vec![b'b'; 512 << 10];
        client.put("big", big.clone(), None).await.expect("big put");
        let got = client.get("big", None).await.expect("linearizable get");
        assert_eq!(got.kvs()[0].value(), big.as_slice());

        let mut terms = Vec::new();
        for m in &cluster.members {
            let mut c = connect(&m.endpoint()).await;
            let status = c.status().await.expect("status");
            terms.push((status.raft_term(), status.leader()));
            // Founding members publish their names and client URLs after start.
            let wanted = vec![
                ("m0".to_string(), 1),
                ("m1".to_string(), 1),
                ("m2".to_string(), 1),
            ];
            let start = Instant::now();
            let mut names = Vec::new();
            while start.elapsed() < Duration::from_secs(10) {
                let list = c.member_list().await.expect("member list");
                names = list
                    .members()
                    .iter()
                    .map(|x| (x.name().to_string(), x.client_urls().len()))
                    .collect::<Vec<_>>();
                names.sort();
                if names == wanted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(names, wanted);
        }
        assert!(terms.windows(2).all(|w| w[0] == w[1]), "terms: {terms:?}");
        wait_converged(&cluster, Duration::from_secs(10)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_promote_remove_while_writing() {
    // Proves the membership dance an operator does (add a learner, start it with
    // `existing`, promote it, remove another member) works while writes run, loses no
    // acknowledged write, and ends with equal HashKV on every member.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(180), "membership changes", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let writers = Writers::start(cluster.endpoints(), 4, "w/");
        writers.wait_for_progress(50, Duration::from_secs(20)).await;

        let new = cluster.prepare_member("m3");
        let mut admin = connect(&cluster.members[0].endpoint()).await;
        let added = admin
            .member_add(
                [cluster.members[new].peer_url()],
                Some(MemberAddOptions::new().with_is_learner()),
            )
            .await
            .expect("member add --learner");
        let new_id = added.member().expect("added member").id();
        assert!(added.member().expect("added member").is_learner());
        let initial = cluster.initial_cluster_with(new);
        cluster.start_joining(new, &initial);
        assert_eq!(cluster.members[new].id().await, new_id, "IDs agree");

        // Promotion waits until the learner has caught up, as in etcd.
        let start = Instant::now();
        loop {
            match admin.member_promote(new_id).await {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        e.to_string().contains("in sync with leader"),
                        "unexpected promote error: {e}"
                    );
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "learner never caught up"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        writers.wait_for_progress(50, Duration::from_secs(20)).await;

        // Remove a founding member that is not the one the admin client talks to.
        let removed = 1;
        let removed_id = cluster.members[removed].id().await;
        let left = admin
            .member_remove(removed_id)
            .await
            .expect("member remove");
        assert_eq!(left.members().len(), 3);
        assert!(left.members().iter().all(|m| m.id() != removed_id));
        // The removed member stops by itself, as etcd's does.
        cluster.members[removed]
            .wait_for_exit(Duration::from_secs(20))
            .await;
        writers.wait_for_progress(50, Duration::from_secs(30)).await;
        stop_and_verify(&cluster, writers, "w/").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_of_a_busy_cluster() {
    // Proves SIGTERM stops a member cleanly and promptly while writes run and its peers hold
    // long-lived streams open to it (replication, heartbeats, forwarded requests): the leader
    // first, then a follower. Each exits 0, rejoins on restart, and no acknowledged write is
    // lost.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(180), "SIGTERM in a cluster", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
        let writers = Writers::start(cluster.endpoints(), 4, "w/");
        writers.wait_for_progress(50, Duration::from_secs(20)).await;
        for role in ["leader", "follower"] {
            let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
            let target = if role == "leader" {
                leader
            } else {
                (leader + 1) % cluster.members.len()
            };
            cluster.members[target].terminate();
            let status = cluster.members[target]
                .wait_for_exit(Duration::from_secs(10))
                .await;
            assert!(status.success(), "the {role} exited with {status}");
            assert!(cluster.members[target].log().contains("stopped"));
            cluster.members[target].restart();
            writers.wait_for_progress(50, Duration::from_secs(30)).await;
        }
        stop_and_verify(&cluster, writers, "w/").await;
    })
    .await;
}

/// `etcdctl endpoint status --cluster -w json`, reduced to what must agree: how many members
/// answered, whether they name one leader among them, and whether their terms agree.
async fn cluster_status_shape(cluster: &Cluster, via: usize, client: Client) -> String {
    // Right after a leader change, members may briefly disagree: ask until they settle.
    let mut shape = String::new();
    for _ in 0..20 {
        shape = status_shape_once(cluster, via, client);
        if shape.contains(" 1 leader(s)") && shape.ends_with(" 1 term(s)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shape
}

fn status_shape_once(cluster: &Cluster, via: usize, client: Client) -> String {
    let ctl = client(&cluster.members[via].endpoint());
    let out = ctl.run(&["endpoint", "status", "--cluster", "-w", "json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    let all = all.as_array().expect("a list of endpoints");
    let field = |e: &serde_json::Value, name: &str| e["Status"][name].clone();
    let leaders: std::collections::BTreeSet<String> =
        all.iter().map(|e| field(e, "leader").to_string()).collect();
    let ids: std::collections::BTreeSet<String> = all
        .iter()
        .map(|e| e["Status"]["header"]["member_id"].to_string())
        .collect();
    let terms: std::collections::BTreeSet<String> = all
        .iter()
        .map(|e| field(e, "raft_term").to_string())
        .collect();
    format!(
        "{} endpoints, {} leader(s), leader is a member: {}, {} term(s)",
        all.len(),
        leaders.len(),
        leaders.iter().all(|l| ids.contains(l)),
        terms.len()
    )
}

/// `etcdctl endpoint hashkv --cluster -w json`, reduced to how many members answered and
/// whether their hashes agree.
async fn cluster_hashkv_shape(cluster: &Cluster, via: usize, client: Client) -> String {
    let mut shape = String::new();
    for _ in 0..20 {
        shape = hashkv_shape_once(cluster, via, client);
        if shape.ends_with(" 1 distinct hash(es)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shape
}

fn hashkv_shape_once(cluster: &Cluster, via: usize, client: Client) -> String {
    let ctl = client(&cluster.members[via].endpoint());
    let out = ctl.run(&["endpoint", "hashkv", "--cluster", "-w", "json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("hashkv json");
    let all = all.as_array().expect("a list of endpoints");
    let hashes: std::collections::BTreeSet<String> = all
        .iter()
        .map(|e| e["HashKV"]["hash"].to_string())
        .collect();
    format!(
        "{} endpoints, {} distinct hash(es)",
        all.len(),
        hashes.len()
    )
}

/// Replaces every member ID (16 hex digits or fewer, as etcdctl prints them) with `<id>`.
fn normalize_ids(text: &str, ids: &[u64]) -> String {
    let mut out = text.to_string();
    let mut ids = ids.to_vec();
    // Longest first, so no ID is a prefix match of a longer one.
    ids.sort_by_key(|id| std::cmp::Reverse(format!("{id:x}").len()));
    for id in ids {
        out = out.replace(&format!("{id:x}"), "<id>");
        out = out.replace(&id.to_string(), "<id>");
    }
    out
}

/// What etcdctl printed, with member and cluster IDs and ports made comparable.
async fn run_ctl(
    cluster: &Cluster,
    member: usize,
    args: &[&str],
    client: Client,
) -> (bool, String) {
    let mut ids = Vec::new();
    for m in cluster.members.iter().filter(|m| m.is_running()) {
        ids.push(m.id().await);
    }
    let mut c = connect(&cluster.members[member].endpoint()).await;
    let list = c.member_list().await.expect("member list");
    ids.extend(list.members().iter().map(|m| m.id()));
    if let Some(h) = list.header() {
        ids.push(h.cluster_id());
    }
    let ctl = client(&cluster.members[member].endpoint());
    let out = ctl.run(args, None);
    // Members the command added.
    let list = c.member_list().await.expect("member list");
    ids.extend(list.members().iter().map(|m| m.id()));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    // etcdctl's error line (the last line of stderr) is what a user reads.
    if let Some(line) = String::from_utf8_lossy(&out.stderr).lines().last() {
        text.push_str(line);
    }
    for (i, m) in cluster.members.iter().enumerate() {
        text = text.replace(&m.client_port.to_string(), &format!("<client{i}>"));
        text = text.replace(&m.peer_port.to_string(), &format!("<peer{i}>"));
    }
    (
        out.status.success(),
        comparable(&normalize_ids(&text, &ids)),
    )
}

/// Sorts what etcdctl prints in an order that depends on IDs or on Go's map iteration: the
/// lines of a member table and the members in `ETCD_INITIAL_CLUSTER`.
fn comparable(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| match line.strip_prefix("ETCD_INITIAL_CLUSTER=") {
            Some(list) => {
                let mut parts: Vec<&str> = list.trim_matches('"').split(',').collect();
                parts.sort();
                format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
            }
            // etcdctl pads IDs to 16 columns.
            None => line
                .split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The command-line client a session runs: etcdctl, or cairnctl (which takes its flags).
type Client = fn(&str) -> Etcdctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_commands_match_etcd() {
    // Proves `etcdctl member list/add/promote/remove` and `move-leader` give the same
    // output and errors against Cairn as against a real 3-member etcd cluster.
    member_session(Etcdctl::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairnctl_member_commands_print_what_etcdctl_prints() {
    // Proves cairnctl's member, move-leader and `endpoint --cluster` commands do and print
    // what etcdctl's do: cairnctl against a 3-member Cairn, etcdctl against a 3-member etcd.
    member_session(Etcdctl::cairnctl).await;
}

/// The membership session: etcdctl against etcd, `on_cairn` against Cairn.
async fn member_session(on_cairn: Client) {
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "member commands", async {
        let mut outputs = Vec::new();
        for flavor in [Flavor::Etcd, Flavor::Cairn] {
            let client: Client = match flavor {
                Flavor::Etcd => Etcdctl::new,
                _ => on_cairn,
            };
            let mut cluster = Cluster::start(flavor, 3, &[]).await;
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
            let follower = (leader + 1) % 3;
            let other = (leader + 2) % 3;
            if flavor == Flavor::Etcd {
                // etcd refuses membership changes ("unhealthy cluster") until every member has
                // been connected for 5 s.
                tokio::time::sleep(Duration::from_secs(6)).await;
            }
            let mut steps: Vec<(String, bool, String)> = Vec::new();
            let new = cluster.prepare_member("m3");
            let new_peer = cluster.members[new].peer_url();
            let add_arg = format!("--peer-urls={new_peer}");
            let dup_arg = format!("--peer-urls={}", cluster.members[other].peer_url());
            let other_id = format!("{:x}", cluster.members[other].id().await);
            let script: Vec<(&str, Vec<String>)> = vec![
                ("member list", vec!["member".into(), "list".into()]),
                (
                    "member add --learner",
                    vec![
                        "member".into(),
                        "add".into(),
                        "m3".into(),
                        add_arg,
                        "--learner".into(),
                    ],
                ),
                (
                    "member add <taken peer URL>",
                    vec!["member".into(), "add".into(), "m4".into(), dup_arg],
                ),
                (
                    "member remove <unknown>",
                    vec!["member".into(), "remove".into(), "abcdef12".into()],
                ),
                (
                    "member promote <voter>",
                    vec!["member".into(), "promote".into(), other_id.clone()],
                ),
                (
                    "member update <voter> <its own peer URL>",
                    vec![
                        "member".into(),
                        "update".into(),
                        other_id.clone(),
                        format!("--peer-urls={}", cluster.members[other].peer_url()),
                    ],
                ),
            ];
            for (label, args) in &script {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let (ok, out) = run_ctl(&cluster, follower, &args, client).await;
                steps.push((label.to_string(), ok, out));
            }
            // The learner has not started, so it cannot be in sync with the leader. (The
            // follower lists it once it has applied the addition: wait for that, bounded.)
            let learner = {
                let mut c = connect(&cluster.members[follower].endpoint()).await;
                let started = Instant::now();
                loop {
                    let list = c.member_list().await.expect("member list");
                    if let Some(m) = list.members().iter().find(|m| m.is_learner()) {
                        break format!("{:x}", m.id());
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "the follower never listed the learner"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let (ok, out) =
                run_ctl(&cluster, follower, &["member", "promote", &learner], client).await;
            steps.push(("member promote <unstarted learner>".into(), ok, out));
            let (ok, out) =
                run_ctl(&cluster, follower, &["member", "remove", &learner], client).await;
            steps.push(("member remove <learner>".into(), ok, out));
            // move-leader: etcdctl sends it to the leader endpoint it finds itself.
            let target = format!("{:x}", cluster.members[follower].id().await);
            let (ok, out) = run_ctl(&cluster, leader, &["move-leader", &target], client).await;
            steps.push(("move-leader <follower>".into(), ok, out));
            let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
            assert_eq!(new_leader, follower, "{flavor:?}: leadership moved");
            // `--cluster` commands find every member through MemberList's client URLs; their
            // numbers differ between the two servers, so compare what they say.
            steps.push((
                "endpoint status --cluster".into(),
                true,
                cluster_status_shape(&cluster, follower, client).await,
            ));
            steps.push((
                "endpoint hashkv --cluster".into(),
                true,
                cluster_hashkv_shape(&cluster, follower, client).await,
            ));
            let (ok, out) = run_ctl(&cluster, follower, &["defrag", "--cluster"], client).await;
            steps.push(("defrag --cluster".into(), ok, out));
            outputs.push(steps);
        }
        let (etcd, cairn) = (&outputs[0], &outputs[1]);
        for (e, c) in etcd.iter().zip(cairn) {
            assert_eq!(e, c, "etcdctl {} differs (left etcd, right Cairn)", e.0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_ttl_survives_a_leader_change() {
    // Proves remaining TTLs are checkpointed through Raft: after a forced leader transfer a
    // lease continues its countdown (etcd restarts it from full), expires near its original
    // deadline and never before it, while a lease kept alive across the change survives.
    let _serial = SERIAL.lock().await;
    with_timeout(
        Duration::from_secs(120),
        "lease TTL across a leader change",
        async {
            let flags = ["--experimental-lease-checkpoint-interval=1s"];
            let cluster = Cluster::start(Flavor::Cairn, 3, &flags).await;
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
            let mut client = connect(&cluster.members[leader].endpoint()).await;
            let granted = Instant::now();
            let counting = client.lease_grant(15, None).await.expect("grant").id();
            let kept = client.lease_grant(6, None).await.expect("grant").id();
            let with_lease = |id| Some(etcd_client::PutOptions::new().with_lease(id));
            client
                .put("counting", "v", with_lease(counting))
                .await
                .expect("put");
            client
                .put("kept", "v", with_lease(kept))
                .await
                .expect("put");
            let (mut keeper, mut keepalive) =
                client.lease_keep_alive(kept).await.expect("keepalive");
            let keep = tokio::spawn(async move {
                loop {
                    if keeper.keep_alive().await.is_err() || keepalive.message().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });

            // Lease time is what this test is about: let 5 s of it pass, then wait until the
            // leader has committed a checkpoint made after that. Checkpoints (every 1 s here)
            // and the keepalive's checkpoint clears are the only proposals, and a clear needs a
            // checkpoint before it, so two more committed proposals include one.
            tokio::time::sleep_until((granted + Duration::from_secs(5)).into()).await;
            let committed = "etcd_server_proposals_committed_total";
            let before = cluster.members[leader]
                .metric(committed, &[])
                .await
                .expect("the leader answers /metrics");
            cluster.members[leader]
                .wait_for_metric(committed, &[], Duration::from_secs(30), |c| {
                    c >= before + 2.0
                })
                .await;
            let target = (leader + 1) % 3;
            let target_id = cluster.members[target].id().await;
            client.move_leader(target_id).await.expect("move-leader");
            assert_eq!(
                cluster.wait_for_leader(Duration::from_secs(10)).await,
                target
            );
            let mut on_new = connect(&cluster.members[target].endpoint()).await;
            let ttl = on_new
                .lease_time_to_live(counting, None)
                .await
                .expect("time to live")
                .ttl();
            let elapsed = granted.elapsed().as_secs() as i64;
            assert!(
                ttl <= 15 - elapsed + 2,
                "TTL {ttl} s after {elapsed} s: the countdown restarted on the new leader"
            );
            assert!(ttl >= 15 - elapsed - 2, "TTL {ttl} s after {elapsed} s");

            // It expires near its original deadline, and not before.
            loop {
                let left = on_new.get("counting", None).await.expect("get");
                if left.kvs().is_empty() {
                    break;
                }
                assert!(
                    granted.elapsed() < Duration::from_secs(15 + 5),
                    "the lease outlived its original deadline by more than 5 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let lived = granted.elapsed();
            assert!(
                lived >= Duration::from_secs(14),
                "expired early, after {lived:?}"
            );
            let kept_key = on_new.get("kept", None).await.expect("get");
            assert_eq!(kept_key.kvs().len(), 1, "a lease kept alive expired");
            keep.abort();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_roles_replicate() {
    // Proves a user and role change made on any member is read back on every member, the
    // password hash is the same on all (Hash, which covers the auth store, is equal), and a
    // member restarted from its data dir still has them.
    use etcd_client::{Permission, PermissionType};
    let _serial = SERIAL.lock().await;
    with_timeout(
        Duration::from_secs(120),
        "users and roles replicate",
        async {
            let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
            cluster.wait_for_leader(Duration::from_secs(30)).await;
            let mut first = connect(&cluster.members[0].endpoint()).await;
            first
                .user_add("alice", "secret", None)
                .await
                .expect("user add");
            let mut second = connect(&cluster.members[1].endpoint()).await;
            second.role_add("app").await.expect("role add");
            second
                .role_grant_permission(
                    "app",
                    Permission::new(PermissionType::Readwrite, "app/").with_prefix(),
                )
                .await
                .expect("grant permission");
            let mut third = connect(&cluster.members[2].endpoint()).await;
            third
                .user_grant_role("alice", "app")
                .await
                .expect("grant role");
            for m in &cluster.members {
                let mut c = connect(&m.endpoint()).await;
                let user = c.user_get("alice").await.expect("user get");
                assert_eq!(user.roles(), ["app"], "on {}", m.name);
                let role = c.role_get("app").await.expect("role get");
                assert_eq!(role.permissions().len(), 1, "on {}", m.name);
            }
            // Hash covers all state (auth included): equal once every member has applied.
            wait_converged(&cluster, Duration::from_secs(30)).await;
            let mut hashes = Vec::new();
            for m in &cluster.members {
                let mut c = connect(&m.endpoint()).await;
                hashes.push(c.hash().await.expect("hash").hash());
            }
            assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
            cluster.members[2].kill9();
            cluster.members[2].restart();
            let mut back = connect(&cluster.members[2].endpoint()).await;
            let users = back.user_list().await.expect("user list after restart");
            assert_eq!(users.users(), ["alice"]);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_and_an_unreachable_peer_is_reported_sparingly() {
    // Proves `--log-format json` writes one object per line with etcd's field names on every
    // member, that auth changes leave an audit line (who, what, revision), and that a peer
    // down for a minute costs the leader a few lines with its ID in hex (one at once, then one
    // every 30 s), where openraft's warnings alone gave ten a second with decimal IDs.
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "json logs", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, &["--log-format=json"]).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        let ctl = Etcdctl::new(&cluster.members[leader].endpoint());
        let added = ctl.run(&["user", "add", "auditor:pw"], None);
        assert!(added.status.success(), "{added:?}");
        let down = (leader + 1) % 3;
        let down_id = cluster.members[down].id().await;
        cluster.members[down].kill9();
        // The span is what is measured: how many lines a minute of outage costs.
        tokio::time::sleep(Duration::from_secs(62)).await;
        for member in [leader, (leader + 2) % 3] {
            for line in cluster.members[member].log().lines() {
                let object: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
                for key in ["level", "ts", "caller", "msg"] {
                    assert!(object[key].is_string(), "no {key} in {line}");
                }
            }
        }
        let log = cluster.members[leader].log();
        let audit: Vec<&str> = log.lines().filter(|l| l.contains("\"audit\"")).collect();
        assert!(
            audit
                .iter()
                .any(|l| l.contains("\"change\":\"user add auditor\"")
                    && l.contains("\"user\":\"(anonymous)\"")
                    && l.contains("\"revision\":")),
            "no audit line for the user add: {audit:?}"
        );
        let hex = format!("{down_id:x}");
        let about_down: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&hex) && l.contains("unreachable"))
            .collect();
        assert!(
            (1..=4).contains(&about_down.len()),
            "{} lines about the down peer in a minute:\n{}",
            about_down.len(),
            about_down.join("\n")
        );
        assert!(
            !log.contains(&down_id.to_string()),
            "the down member's ID in decimal:\n{log}"
        );
    })
    .await;
}
