//! RBAC policy hooks end to end on real clusters: the example policies installed and bound
//! through `cairnctl` on 3 members, deciding the same on every member (their statistics, a
//! hash chained over every decision and its fuel, are compared), HashKV equal, and the same
//! after a member restart and after a catch-up by snapshot; root never subject to them; and
//! hostile policies failing by their binding's failure policy, alike on every member, while
//! the members keep serving.
//!
//! The plugins are built by `scripts/build-plugins.sh`, which the test command runs first.
//! The differential check of the "defer" case against etcd's static RBAC is in `auth.rs`
//! (`permission_matrix_with_a_deferring_policy_matches_etcd`).

use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_tests::converge::wait_converged_as;
use cairn_tests::plugins::stats_agree;
use cairn_tests::workload::put_concurrently_as;
use cairn_tests::{Cluster, Etcdctl, Flavor, cairnctl_ok, install_plugin};

/// Multi-member tests load two cores; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ROOT: Option<(&str, &str)> = Some(("root", "rootpw"));

/// Runs etcdctl (a real etcd client) as `user` ("name:password"); returns "ok" or its error
/// line (the last line of stderr: etcdctl logs its retries above it).
fn as_user(endpoint: &str, user: &str, args: &[&str]) -> String {
    let mut all = vec![format!("--user={user}")];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = Etcdctl::new(endpoint).run(&all, None);
    if out.status.success() {
        "ok".to_string()
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr.trim().lines().last().unwrap_or_default().to_string()
    }
}

/// Puts `key` as `user` through `cairnctl txn`, which prints a policy's reason; returns "ok"
/// or its error line.
fn cairnctl_put(endpoint: &str, user: &str, key: &str, value: &str) -> String {
    let out = Etcdctl::cairnctl(endpoint).run(
        &[&format!("--user={user}"), "txn"],
        Some(&format!("\nput {key} {value}\n\n\n")),
    );
    if out.status.success() {
        "ok".to_string()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }
}

/// A token for `name`.
async fn token(endpoint: &str, name: &str, password: &str) -> String {
    let mut auth = AuthClient::connect(format!("http://{endpoint}"))
        .await
        .expect("auth client");
    auth.authenticate(pb::AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("authenticate {name}: {e}"))
    .into_inner()
    .token
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("token", token.parse().expect("ascii token"));
    request
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

/// Opens a watch as `token` on `key`'s prefix; returns (created, canceled, reason).
async fn watch_as(endpoint: &str, token: &str, key: &str) -> (bool, bool, String) {
    let mut client = WatchClient::connect(format!("http://{endpoint}"))
        .await
        .expect("watch client");
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.as_bytes().to_vec(),
                range_end: prefix_end(key.as_bytes()),
                ..Default::default()
            },
        )),
    };
    let stream = futures::stream::iter([create]).chain(futures::stream::pending());
    let mut responses = client
        .watch(with_token(stream, token))
        .await
        .expect("watch stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("a watch answer in time")
        .expect("watch message")
        .expect("a response");
    (first.created, first.canceled, first.cancel_reason)
}

use futures::StreamExt;

/// The end of the range of keys starting with `prefix` (for the prefixes here, which end in
/// a byte below 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Adds users and roles, installs and binds the example policies, and turns authentication
/// on, all through cairnctl on `e`.
fn set_up(e: &str, freeze_from: i64, freeze_until: i64) {
    for (name, crate_name) in [("tenant", "tenant-policy"), ("freeze", "change-freeze")] {
        install_plugin(e, name, crate_name);
    }
    cairnctl_ok(
        e,
        &[
            "plugin",
            "bind",
            "tenants",
            "--plugin",
            "tenant",
            "--kind",
            "policy",
            "--key",
            "/tenants/",
            "--prefix",
            "--config",
            r#"{"prefix": "/tenants/", "admin_roles": ["ops"]}"#,
        ],
    );
    let freeze = format!(
        r#"{{"prefix": "/config/", "windows": [{{"from": {freeze_from}, "until": {freeze_until}, "reason": "test freeze"}}]}}"#
    );
    cairnctl_ok(
        e,
        &[
            "plugin", "bind", "freeze", "--plugin", "freeze", "--kind", "policy", "--key",
            "/config/", "--prefix", "--config", &freeze,
        ],
    );
    for line in [
        "user add root:rootpw",
        "user grant-role root root",
        "user add alice:alicepw",
        "user add bob:bobpw",
        "user add carol:carolpw",
        "user add olga:olgapw",
        "role add cfg",
        "role grant-permission cfg readwrite /config/ --prefix=true",
        "user grant-role carol cfg",
        "role add ops",
        "role grant-permission ops readwrite /tenants/ --prefix=true",
        "user grant-role olga ops",
        "auth enable",
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        cairnctl_ok(e, &args);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_policies_decide_alike_on_three_members() {
    // Proves the tenant-isolation and change-freeze policies end to end through cairnctl on 3
    // members: tenants reach only their own subtree (for writes in apply, for reads and
    // watches on the serving member) though no role grants it, admins are left to their
    // roles, a freeze window denies writes by the entry's stamped time, root is never subject;
    // every member's statistics (a hash over every decision and its fuel) agree, HashKV agrees,
    // and both hold after a restart and after a catch-up by snapshot.
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(
        Flavor::Cairn,
        3,
        &[
            "--snapshot-count=100",
            "--experimental-snapshot-catchup-entries=20",
        ],
    )
    .await;
    let e0 = cluster.members[0].endpoint();
    let now = unix_ms_now();
    set_up(&e0, now - 3_600_000, now + 3_600_000);

    let denied = "Error: etcdserver: permission denied";
    for m in &cluster.members {
        let e = m.endpoint();
        // Writes, decided in apply.
        assert_eq!(
            as_user(&e, "alice:alicepw", &["put", "/tenants/alice/db", "1"]),
            "ok"
        );
        // etcdctl prints etcd's error; cairnctl adds the policy's reason.
        assert_eq!(
            as_user(&e, "alice:alicepw", &["put", "/tenants/bob/db", "1"]),
            denied
        );
        assert_eq!(
            cairnctl_put(&e, "alice:alicepw", "/tenants/bob/db", "1"),
            format!(
                "{denied} (policy tenants: tenant \"alice\" may only use keys under /tenants/alice/)"
            )
        );
        // Reads, decided on the serving member.
        assert_eq!(
            as_user(&e, "alice:alicepw", &["get", "/tenants/alice/", "--prefix"]),
            "ok"
        );
        assert!(
            as_user(&e, "alice:alicepw", &["get", "/tenants/", "--prefix"]).starts_with(denied)
        );
        // Outside the bound range, the roles decide (alice has none).
        assert_eq!(
            as_user(&e, "alice:alicepw", &["put", "/other", "1"]),
            denied
        );
        // An admin role: deferred to the roles, which allow it.
        assert_eq!(
            as_user(&e, "olga:olgapw", &["put", "/tenants/bob/db", "2"]),
            "ok"
        );
        // The freeze: carol's role allows /config/, the window does not.
        let frozen = cairnctl_put(&e, "carol:carolpw", "/config/app", "1");
        assert!(
            frozen.starts_with(&format!(
                "{denied} (policy freeze: change freeze on /config/ (test freeze): no writes until "
            )),
            "{frozen}"
        );
        assert_eq!(as_user(&e, "carol:carolpw", &["get", "/config/app"]), "ok");
        // Root is never subject to policies.
        assert_eq!(
            as_user(&e, "root:rootpw", &["put", "/tenants/bob/x", "r"]),
            "ok"
        );
        assert_eq!(
            as_user(&e, "root:rootpw", &["put", "/config/app", "r"]),
            "ok"
        );
    }
    // Watches, decided on the serving member.
    let e1 = cluster.members[1].endpoint();
    let alice = token(&e1, "alice", "alicepw").await;
    assert_eq!(
        watch_as(&e1, &alice, "/tenants/alice/").await,
        (true, false, String::new())
    );
    let (_, canceled, reason) = watch_as(&e1, &alice, "/tenants/bob/").await;
    assert!(canceled, "a watch on another tenant is canceled");
    assert_eq!(
        reason,
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    );
    // The response metadata carries the binding and the reason.
    let mut kv = KvClient::connect(format!("http://{e1}"))
        .await
        .expect("kv client");
    let refused = kv
        .put(with_token(
            pb::PutRequest {
                key: b"/tenants/bob/y".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("alice may not write bob's keys");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(refused.message(), "etcdserver: permission denied");
    let meta = |key: &str| {
        refused
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(meta("cairn-policy-binding").as_deref(), Some("tenants"));
    assert!(
        meta("cairn-policy-reason").is_some_and(|r| r.contains("may only use keys under")),
        "{:?}",
        refused.metadata()
    );

    let first = stats_agree(&cluster, ROOT).await;
    let tenants = first.iter().find(|s| s.0 == "tenants").expect("bound");
    // Writes only (reads are decided by the serving member alone): through each member,
    // alice's three and olga's one (root's are never asked), then alice's over gRPC.
    assert_eq!((tenants.1, tenants.2), (13, 7), "{first:?}");
    // The leader evaluated them once; every member took its verdicts.
    for m in &cluster.members {
        let accepted = m
            .metric("cairn_plugin_verdicts_total", &[("place", "accepted")])
            .await;
        assert!(accepted.is_some_and(|n| n > 0.0), "{accepted:?}");
    }
    wait_converged_as(&cluster, ROOT, Duration::from_secs(30)).await;

    // Thaw: a window in the past. The same write now goes through, on every member alike.
    cairnctl_ok(
        &e0,
        &[
            "--user=root:rootpw",
            "plugin",
            "bind",
            "freeze",
            "--plugin",
            "freeze",
            "--kind",
            "policy",
            "--key",
            "/config/",
            "--prefix",
            "--config",
            r#"{"prefix": "/config/", "windows": [{"from": 0, "until": 1000}]}"#,
        ],
    );
    assert_eq!(
        as_user(&e1, "carol:carolpw", &["put", "/config/app", "2"]),
        "ok"
    );

    // A restarted member decides as before.
    cluster.members[1].kill9();
    cluster.members[1].restart();
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let e1 = cluster.members[1].endpoint();
    assert!(as_user(&e1, "bob:bobpw", &["put", "/tenants/alice/db", "x"]).starts_with(denied));
    assert_eq!(
        as_user(&e1, "bob:bobpw", &["put", "/tenants/bob/db", "x"]),
        "ok"
    );
    stats_agree(&cluster, ROOT).await;

    // A member that catches up by snapshot gets the bindings and their statistics.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let down = (leader + 1) % 3;
    let had = cluster.kill_and_wait_down(down, leader).await;
    put_concurrently_as(
        &cluster.members[leader].endpoint(),
        ROOT,
        8,
        150,
        "/tenants/root/",
        "v",
    )
    .await;
    cluster
        .wait_purged_past(leader, had, Duration::from_secs(60))
        .await;
    cluster.members[down].restart();
    wait_converged_as(&cluster, ROOT, Duration::from_secs(60)).await;
    let installs = cluster.members[down]
        .metric("etcd_network_snapshot_receive_success", &[])
        .await;
    assert_eq!(
        installs,
        Some(1.0),
        "the member that was down installed a snapshot"
    );
    let e = cluster.members[down].endpoint();
    assert!(as_user(&e, "alice:alicepw", &["put", "/tenants/bob/z", "1"]).starts_with(denied));
    assert!(
        as_user(&e, "alice:alicepw", &["get", "/tenants/bob/", "--prefix"]).starts_with(denied)
    );
    stats_agree(&cluster, ROOT).await;
    wait_converged_as(&cluster, ROOT, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_policies_follow_their_failure_policy_alike_on_every_member() {
    // Proves that a policy that traps, loops, hoards memory or answers with 8 MiB denies the
    // writes it is asked about when bound fail-closed, and leaves them to the roles when bound
    // with ignore, identically on every member (statistics agree), while the members keep
    // serving; root is never subject to them and can always unbind them.
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let e0 = cluster.members[0].endpoint();
    let hostile = [
        ("trap", "trap-guard"),
        ("loop", "loop-guard"),
        ("bomb", "memory-bomb-guard"),
        ("huge", "huge-output-guard"),
    ];
    for (name, crate_name) in hostile {
        install_plugin(&e0, name, crate_name);
        for (policy, failure) in [("closed", "fail-closed"), ("open", "ignore")] {
            let key = format!("/{name}-{policy}/");
            cairnctl_ok(
                &e0,
                &[
                    "plugin",
                    "bind",
                    &format!("{name}-{policy}"),
                    "--plugin",
                    name,
                    "--kind",
                    "policy",
                    "--key",
                    &key,
                    "--prefix",
                    "--fuel",
                    "2000000",
                    "--memory",
                    "8MiB",
                    "--failure-policy",
                    failure,
                ],
            );
        }
    }
    for line in [
        "user add root:rootpw",
        "user grant-role root root",
        "user add dev:devpw",
        "role add dev",
        "role grant-permission dev readwrite / --prefix=true",
        "user grant-role dev dev",
        "auth enable",
    ] {
        let args: Vec<&str> = line.split(' ').collect();
        cairnctl_ok(&e0, &args);
    }
    let denied = "Error: etcdserver: permission denied (policy ";
    for (i, m) in cluster.members.iter().enumerate() {
        let e = m.endpoint();
        for (name, _) in hostile {
            let closed = cairnctl_put(&e, "dev:devpw", &format!("/{name}-closed/{i}"), "v");
            assert!(
                closed.starts_with(&format!("{denied}{name}-closed: the policy failed: ")),
                "{closed}"
            );
            // Ignore: the roles decide, and dev's role allows it.
            let open = as_user(&e, "dev:devpw", &["put", &format!("/{name}-open/{i}"), "v"]);
            assert_eq!(open, "ok", "{name}");
            // Reads go through the same engine on the serving member.
            let read = as_user(&e, "dev:devpw", &["get", &format!("/{name}-closed/{i}")]);
            assert_eq!(read, "Error: etcdserver: permission denied", "{name}");
            assert_eq!(
                as_user(
                    &e,
                    "root:rootpw",
                    &["put", &format!("/{name}-closed/{i}"), "r"]
                ),
                "ok"
            );
        }
    }
    let stats = stats_agree(&cluster, ROOT).await;
    for (name, calls, _, failures, fuel, _) in &stats {
        assert_eq!(calls, failures, "{name}: every call failed: {stats:?}");
        assert_eq!(
            *fuel,
            calls * 2_000_000,
            "{name}: a failed call costs its budget"
        );
    }
    wait_converged_as(&cluster, ROOT, Duration::from_secs(30)).await;
    // Root unbinds them all; dev's writes are then the roles' alone.
    for (name, _) in hostile {
        for policy in ["closed", "open"] {
            cairnctl_ok(
                &e0,
                &[
                    "--user=root:rootpw",
                    "plugin",
                    "unbind",
                    &format!("{name}-{policy}"),
                ],
            );
        }
        assert_eq!(
            as_user(
                &e0,
                "dev:devpw",
                &["put", &format!("/{name}-closed/after"), "v"]
            ),
            "ok"
        );
    }
}
