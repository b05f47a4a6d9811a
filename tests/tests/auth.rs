//! Authentication and RBAC: differential sessions against etcd through etcdctl, a permission
//! matrix against etcd through raw gRPC, and what Cairn does beyond etcd (tokens every member
//! accepts, per-user token invalidation, lease expiry with authentication on).

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_tests::diff::{Step, assert_sessions_match, cmd, split};
use cairn_tests::{CairnNode, EtcdNode};
use tonic::transport::Channel;

/// Both servers hash passwords at bcrypt's lowest cost: the sessions authenticate often.
const FLAGS: &[&str] = &["--bcrypt-cost=4"];

fn as_root(line: &str) -> Step {
    cmd(&format!("--user=root:rootpw {line}"))
}

fn with_stdin(line: &str, stdin: &str) -> Step {
    Step {
        args: split(line),
        stdin: Some(stdin.to_owned()),
    }
}

/// etcdctl's auth commands and `--user` on KV, txn and auth commands, errors included.
fn auth_script() -> Vec<Step> {
    let mut steps = vec![
        cmd("user add root:rootpw"),
        // root lacks the root role: etcdctl creates the role, grants it and tries again.
        cmd("auth enable"),
        cmd("auth enable"),
        as_root("auth enable"),
        cmd("put k v"),
        cmd("get k"),
        cmd("--user=root:wrong get k"),
        cmd("--user=nobody:x get k"),
        as_root("put k v -w json"),
        as_root("user add alice:apw"),
        as_root("user add bob:bpw"),
        as_root("user add --no-password carol"),
        as_root("role add app"),
        as_root("role grant-permission app readwrite /app/ --prefix=true"),
        as_root("role grant-permission app read k"),
        as_root("role grant-permission app write w"),
        as_root("user grant-role alice app"),
        cmd("--user=alice:apw put /app/x 1 -w json"),
        cmd("--user=alice:apw put /app/y 2 --prev-kv -w json"),
        cmd("--user=alice:apw get /app/ --prefix -w json"),
        cmd("--user=alice:apw get k -w json"),
        cmd("--user=alice:apw put k v2"),
        cmd("--user=alice:apw put w v --prev-kv"),
        cmd("--user=alice:apw put w v"),
        cmd("--user=alice:apw get w"),
        cmd("--user=alice:apw del /app/x --prev-kv -w json"),
        cmd("--user=alice:apw del /app/ --prefix"),
        cmd("--user=alice:apw get '' --prefix"),
        cmd("--user=alice:apw get /app0 --from-key"),
        cmd("--user=bob:bpw get k"),
        cmd("--user=carol:x get k"),
        cmd("--user=alice:apw user list"),
        cmd("--user=alice:apw user get alice"),
        cmd("--user=alice:apw user get bob"),
        cmd("--user=alice:apw role get app"),
        cmd("--user=alice:apw role list"),
        cmd("--user=alice:apw role add mine"),
        cmd("--user=alice:apw auth disable"),
        as_root("user get alice --detail"),
        as_root("role get app"),
        as_root("user list"),
        as_root("user delete root"),
        as_root("role delete root"),
        as_root("user revoke-role root root"),
    ];
    steps.push(with_stdin(
        "--user=alice:apw txn -w json",
        "value(\"k\") = \"v\"\n\nput /app/t yes\n\nput /app/t no\n\n",
    ));
    steps.push(with_stdin(
        "--user=alice:apw txn -w json",
        "value(\"k\") = \"v\"\n\nput /app/t yes\n\nput outside no\n\n",
    ));
    steps.push(with_stdin(
        "--user=alice:apw txn -w json",
        "value(\"secret\") = \"v\"\n\nput /app/t yes\n\n\n",
    ));
    steps.push(with_stdin(
        "--user=root:rootpw user passwd alice --interactive=false",
        "newpw\n",
    ));
    steps.extend([
        cmd("--user=alice:apw get k"),
        cmd("--user=alice:newpw get k"),
        as_root("role revoke-permission app k"),
        cmd("--user=alice:newpw get k"),
        as_root("user revoke-role alice app"),
        cmd("--user=alice:newpw get /app/y"),
        as_root("role delete app"),
        as_root("user delete bob"),
        cmd("--user=bob:bpw get k"),
        as_root("auth disable"),
        cmd("put k v3 -w json"),
        cmd("--user=alice:newpw get k"),
        cmd("user list"),
        cmd("auth enable"),
        as_root("get k -w json"),
    ]);
    steps
}

#[test]
fn etcdctl_auth_session_matches_etcd() {
    // Proves turning authentication on and off, `--user` on KV, txn and admin commands, and
    // every refusal on the way (no user, wrong password, no permission, root's protections, a
    // changed password) print the same on Cairn as on etcd.
    assert_sessions_match(FLAGS, &auth_script());
}

#[test]
fn etcdctl_auth_session_with_jwt_tokens_matches_etcd() {
    // Proves the same session prints the same with `--auth-token jwt,…` (RS256, the keys in
    // tests/testdata) on both servers: etcd's option syntax, and tokens etcdctl uses as is.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let jwt = format!(
        "--auth-token=jwt,pub-key={dir}/jwt-rs256.pub,priv-key={dir}/jwt-rs256.key,sign-method=RS256,ttl=10m"
    );
    assert_sessions_match(&[FLAGS[0], &jwt], &auth_script());
}

/// A member's gRPC clients, all sending one user's token.
struct Session {
    channel: Channel,
    token: Option<String>,
}

impl Session {
    async fn connect(endpoint: &str, user: Option<(&str, &str)>) -> Session {
        let channel = Channel::from_shared(format!("http://{endpoint}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut session = Session {
            channel,
            token: None,
        };
        if let Some((name, password)) = user {
            let resp = AuthClient::new(session.channel.clone())
                .authenticate(pb::AuthenticateRequest {
                    name: name.into(),
                    password: password.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("authenticate {name}: {e}"));
            session.token = Some(resp.into_inner().token);
        }
        session
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("token", token.parse().expect("ascii token"));
        }
        request
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel.clone())
    }

    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }

    /// The first answer to a watch on `[key, range_end)`: created, canceled and why.
    async fn watch_once(&self, key: &[u8], range_end: &[u8]) -> String {
        use pb::watch_request::RequestUnion;
        let create = pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                ..Default::default()
            })),
        };
        let outbound = futures::stream::iter([create]).chain(futures::stream::pending());
        let stream = WatchClient::new(self.channel.clone())
            .watch(self.req(outbound))
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(e) => return format!("error {:?}: {}", e.code(), e.message()),
        };
        match stream.message().await {
            Ok(Some(r)) => format!(
                "watch id {} created {} canceled {} reason {:?}",
                r.watch_id, r.created, r.canceled, r.cancel_reason
            ),
            Ok(None) => "watch stream ended".into(),
            Err(e) => format!("error {:?}: {}", e.code(), e.message()),
        }
    }
}

use futures::StreamExt;

use cairn_proto::cairn_plugin::ListRequest;
use cairn_proto::cairn_plugin::plugin_client::PluginClient;

/// A response without its header (IDs and terms differ by server), or the error's code and
/// message.
fn outcome<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    strip: impl FnOnce(&mut T),
) -> String {
    match result {
        Ok(r) => {
            let mut r = r.into_inner();
            strip(&mut r);
            format!("{r:?}")
        }
        Err(e) => format!("error {:?}: {}", e.code(), e.message()),
    }
}

/// A range a matrix row works on: (name, key, range_end, a key inside it).
type Target = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

/// A permission: (type as authpb numbers it, key, range_end).
type Grant = (i32, &'static [u8], &'static [u8]);

const TARGETS: &[Target] = &[
    ("single", b"k", b"", b"k"),
    ("prefix", b"p/", b"p0", b"p/new"),
    ("from-key", b"m", b"\0", b"mnew"),
    ("outside", b"a", b"b", b"a1"),
];

/// (user, role permissions): READ over `p/`, WRITE on `k`, READWRITE from `m`, nothing.
const USERS: &[(&str, &[Grant])] = &[
    ("reader", &[(0, b"p/", b"p0")]),
    ("writer", &[(1, b"k", b"")]),
    ("mixed", &[(2, b"m", b"\0"), (0, b"k", b"")]),
    ("stranger", &[]),
];

/// Creates the users and roles of [`USERS`], seeds keys and turns authentication on.
async fn set_up_matrix(endpoint: &str) {
    let anyone = Session::connect(endpoint, None).await;
    let mut auth = anyone.auth();
    auth.user_add(pb::AuthUserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    })
    .await
    .expect("root");
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .expect("root role");
    for (user, perms) in USERS {
        auth.user_add(pb::AuthUserAddRequest {
            name: user.to_string(),
            password: format!("{user}pw"),
            ..Default::default()
        })
        .await
        .expect("user");
        let role = format!("{user}-role");
        auth.role_add(pb::AuthRoleAddRequest { name: role.clone() })
            .await
            .expect("role");
        for (perm_type, key, range_end) in *perms {
            auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
                name: role.clone(),
                perm: Some(cairn_proto::authpb::Permission {
                    perm_type: *perm_type,
                    key: key.to_vec(),
                    range_end: range_end.to_vec(),
                }),
            })
            .await
            .expect("grant permission");
        }
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: user.to_string(),
            role,
        })
        .await
        .expect("grant role");
    }
    for key in [&b"k"[..], b"p/a", b"p/b", b"m1", b"a1", b"z"] {
        anyone
            .kv()
            .put(pb::PutRequest {
                key: key.to_vec(),
                value: b"seed".to_vec(),
                ..Default::default()
            })
            .await
            .expect("seed");
    }
    auth.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("enable");
}

/// Every cell of the matrix for `user` against one server, as lines.
async fn matrix_rows(endpoint: &str, user: &str, lease_base: i64) -> Vec<String> {
    let me = Session::connect(endpoint, Some((user, &format!("{user}pw")))).await;
    let root = Session::connect(endpoint, Some(("root", "rootpw"))).await;
    let strip_range = |r: &mut pb::RangeResponse| r.header = None;
    let mut rows = Vec::new();
    for (i, (name, key, range_end, inside)) in TARGETS.iter().enumerate() {
        let (key, range_end, inside) = (key.to_vec(), range_end.to_vec(), inside.to_vec());
        let row = |op: &str, result: String| format!("{user} {op} {name}: {result}");
        let range = me
            .kv()
            .range(me.req(pb::RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                ..Default::default()
            }))
            .await;
        rows.push(row("range", outcome(range, strip_range)));
        let range = me
            .kv()
            .range(me.req(pb::RangeRequest {
                key: inside.clone(),
                serializable: true,
                ..Default::default()
            }))
            .await;
        rows.push(row("serializable get", outcome(range, strip_range)));
        for prev_kv in [false, true] {
            let put = me
                .kv()
                .put(me.req(pb::PutRequest {
                    key: inside.clone(),
                    value: b"v".to_vec(),
                    prev_kv,
                    ..Default::default()
                }))
                .await;
            rows.push(row(
                &format!("put prev_kv={prev_kv}"),
                outcome(put, |r| r.header = None),
            ));
        }
        for prev_kv in [false, true] {
            let del = me
                .kv()
                .delete_range(me.req(pb::DeleteRangeRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    prev_kv,
                }))
                .await;
            rows.push(row(
                &format!("delete prev_kv={prev_kv}"),
                outcome(del, |r| r.header = None),
            ));
        }
        let compare = pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Version as i32,
            key: key.clone(),
            range_end: range_end.clone(),
            target_union: Some(pb::compare::TargetUnion::Version(0)),
            computed: None,
        };
        let put_op = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: inside.clone(),
                value: b"t".to_vec(),
                ..Default::default()
            })),
        };
        let get_op = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                key: key.clone(),
                range_end: range_end.clone(),
                ..Default::default()
            })),
        };
        let txn = me
            .kv()
            .txn(me.req(pb::TxnRequest {
                compare: vec![compare.clone()],
                success: vec![put_op],
                failure: vec![get_op.clone()],
            }))
            .await;
        rows.push(row("txn write", outcome(txn, |r| r.header = None)));
        let txn = me
            .kv()
            .txn(me.req(pb::TxnRequest {
                compare: vec![compare],
                success: vec![get_op],
                failure: vec![],
            }))
            .await;
        rows.push(row("txn read-only", outcome(txn, |r| r.header = None)));
        rows.push(row("watch", me.watch_once(&key, &range_end).await));
        // A lease holding a key of the range, granted by root; the user revokes it.
        let lease = lease_base + i as i64;
        root.lease()
            .lease_grant(root.req(pb::LeaseGrantRequest {
                ttl: 600,
                id: lease,
            }))
            .await
            .expect("root grants");
        root.kv()
            .put(root.req(pb::PutRequest {
                key: inside.clone(),
                value: b"leased".to_vec(),
                lease,
                ..Default::default()
            }))
            .await
            .expect("root attaches");
        let revoke = me
            .lease()
            .lease_revoke(me.req(pb::LeaseRevokeRequest { id: lease }))
            .await;
        rows.push(row("lease revoke", outcome(revoke, |r| r.header = None)));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_matches_etcd() {
    // Proves, cell by cell, that users with READ over a prefix, WRITE on one key, READWRITE
    // from a key, or nothing get the same outcome (response or exact error) from Cairn as from
    // etcd for range, serializable get, put and delete (with and without prev_kv), a txn with
    // a compare, a read-only txn, a watch and a lease revoke, over a single key, a prefix, a
    // from-key range and a range outside every grant.
    let etcd = EtcdNode::start(FLAGS);
    let cairn = CairnNode::start(FLAGS);
    matrices_match(&etcd, &cairn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_with_a_deferring_policy_matches_etcd() {
    // Proves that a policy hook bound on every key which answers "defer" leaves every
    // decision to the roles: the whole matrix, with the hook asked about every write, read
    // and watch, is still cell for cell etcd's static RBAC.
    let etcd = EtcdNode::start(FLAGS);
    let cairn = CairnNode::start(FLAGS);
    let cairnctl = cairn_tests::Etcdctl::cairnctl(&cairn.endpoint());
    let wasm = cairn_tests::plugin_wasm("change-freeze");
    for args in [
        vec![
            "plugin",
            "install",
            "freeze",
            wasm.to_str().expect("utf-8 path"),
        ],
        // A freeze with no window: defers on everything.
        vec![
            "plugin",
            "bind",
            "defer",
            "--plugin",
            "freeze",
            "--kind",
            "policy",
            "--key",
            "",
            "--prefix",
            "--config",
            r#"{"prefix": "", "windows": []}"#,
        ],
    ] {
        let out = cairnctl.run(&args, None);
        assert!(
            out.status.success(),
            "cairnctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    matrices_match(&etcd, &cairn).await;
    // The hook was asked about the writes (reads are decided on the serving member and not
    // counted in the replicated statistics).
    let root = Session::connect(&cairn.endpoint(), Some(("root", "rootpw"))).await;
    let list = PluginClient::new(root.channel.clone())
        .list(root.req(ListRequest {}))
        .await
        .expect("list bindings")
        .into_inner();
    let stats = list.bindings[0].stats.clone().unwrap_or_default();
    assert!(
        stats.calls >= 50 && stats.denials == 0 && stats.failures == 0,
        "the policy deferred on every write: {stats:?}"
    );
}

/// Sets up the matrix on both servers and compares every cell.
async fn matrices_match(etcd: &EtcdNode, cairn: &CairnNode) {
    set_up_matrix(&etcd.endpoint()).await;
    set_up_matrix(&cairn.endpoint()).await;
    let mut mismatches = Vec::new();
    let mut cells = 0;
    for (u, (user, _)) in USERS.iter().enumerate() {
        let base = 1000 + 10 * u as i64;
        let want = matrix_rows(&etcd.endpoint(), user, base).await;
        let got = matrix_rows(&cairn.endpoint(), user, base).await;
        assert_eq!(want.len(), got.len());
        if std::env::var_os("CAIRN_DIFF_DUMP").is_some() {
            eprintln!("{}", got.join("\n"));
        }
        cells += want.len();
        for (w, g) in want.iter().zip(&got) {
            if w != g {
                mismatches.push(format!("etcd:  {w}\ncairn: {g}"));
            }
        }
    }
    assert!(cells >= 150, "only {cells} cells");
    assert!(
        mismatches.is_empty(),
        "{} of {cells} cells differ:\n{}\n\ncairn log:\n{}",
        mismatches.len(),
        mismatches.join("\n"),
        cairn.log()
    );
}

/// Cluster tests share the machine's two cores one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Adds root (with the root role) and alice (READWRITE over `app/`), then turns
/// authentication on, all through `endpoint`.
async fn enable_with_alice(endpoint: &str) {
    let anyone = Session::connect(endpoint, None).await;
    let mut auth = anyone.auth();
    for (name, password) in [("root", "rootpw"), ("alice", "apw")] {
        auth.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    auth.role_add(pb::AuthRoleAddRequest { name: "app".into() })
        .await
        .expect("role add");
    auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
        name: "app".into(),
        perm: Some(cairn_proto::authpb::Permission {
            perm_type: 2,
            key: b"app/".to_vec(),
            range_end: b"app0".to_vec(),
        }),
    })
    .await
    .expect("grant permission");
    for (user, role) in [("root", "root"), ("alice", "app")] {
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
        .await
        .expect("grant role");
    }
    auth.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("auth enable");
}

/// Puts `key` as the session's user; the revision it was written at.
async fn put(session: &Session, key: &str) -> Result<i64, tonic::Status> {
    session
        .kv()
        .put(session.req(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .await
        .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
}

/// A session on `endpoint` that uses `token` (issued elsewhere).
async fn with_token(endpoint: &str, token: &str) -> Session {
    let mut session = Session::connect(endpoint, None).await;
    session.token = Some(token.to_owned());
    session
}

/// Retries `put` through `endpoint` with `token` until it succeeds (a member just restarted
/// or added may still be catching up); panics with the last error after `limit`.
async fn put_eventually(endpoint: &str, token: &str, key: &str, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    loop {
        let last = match Session::connect_bounded(endpoint).await {
            Some(mut session) => {
                session.token = Some(token.to_owned());
                match put(&session, key).await {
                    Ok(_) => return,
                    Err(e) => format!("{:?}: {}", e.code(), e.message()),
                }
            }
            None => "not reachable".to_owned(),
        };
        assert!(
            start.elapsed() < limit,
            "put {key} on {endpoint} kept failing: {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Session {
    /// [`Session::connect`] without a user, `None` if the member does not answer in 2 s.
    async fn connect_bounded(endpoint: &str) -> Option<Session> {
        let channel = Channel::from_shared(format!("http://{endpoint}"))
            .ok()?
            .connect_timeout(std::time::Duration::from_secs(2));
        let channel = tokio::time::timeout(std::time::Duration::from_secs(2), channel.connect())
            .await
            .ok()?
            .ok()?;
        Some(Session {
            channel,
            token: None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_member_works_on_every_member_across_failures() {
    // Proves Cairn's tokens are the cluster's, not a member's (etcd's simple tokens are not,
    // #9629, #13134): a token issued by one member is accepted by the others, after the
    // leader is killed, by the killed member once restarted from its data dir, and by a
    // member added afterwards.
    use cairn_tests::{Cluster, Flavor, with_timeout};
    use std::time::Duration;
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(240), "tokens across members", async {
        let mut cluster = Cluster::start(Flavor::Cairn, 3, FLAGS).await;
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        enable_with_alice(&cluster.members[0].endpoint()).await;
        let alice = Session::connect(&cluster.members[1].endpoint(), Some(("alice", "apw"))).await;
        let token = alice.token.clone().expect("token");
        let root = Session::connect(&cluster.members[2].endpoint(), Some(("root", "rootpw"))).await;
        let root_token = root.token.clone().expect("root token");
        for m in &cluster.members {
            put_eventually(&m.endpoint(), &token, "app/first", Duration::from_secs(20)).await;
            let outside = put(&with_token(&m.endpoint(), &token).await, "elsewhere").await;
            assert_eq!(
                outside.expect_err("outside app/").code(),
                tonic::Code::PermissionDenied
            );
        }
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
        cluster.members[leader].kill9();
        let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        for &i in &survivors {
            let endpoint = cluster.members[i].endpoint();
            put_eventually(&endpoint, &token, "app/after-kill", Duration::from_secs(30)).await;
        }
        cluster.members[leader].restart_from_data_dir(&[]);
        let endpoint = cluster.members[leader].endpoint();
        put_eventually(
            &endpoint,
            &token,
            "app/after-restart",
            Duration::from_secs(30),
        )
        .await;

        // A member added now (by root: membership is root's) accepts the same token.
        let new = cluster.prepare_member("m3");
        let admin = with_token(&cluster.members[survivors[0]].endpoint(), &root_token).await;
        cairn_proto::etcdserverpb::cluster_client::ClusterClient::new(admin.channel.clone())
            .member_add(admin.req(pb::MemberAddRequest {
                peer_ur_ls: vec![cluster.members[new].peer_url()],
                is_learner: false,
            }))
            .await
            .expect("member add as root");
        let initial = cluster.initial_cluster_with(new);
        cluster.start_joining(new, &initial);
        let endpoint = cluster.members[new].endpoint();
        put_eventually(&endpoint, &token, "app/on-new", Duration::from_secs(60)).await;
        // Without root, membership changes are refused.
        let refused =
            cairn_proto::etcdserverpb::cluster_client::ClusterClient::new(alice.channel.clone())
                .member_remove(alice.req(pb::MemberRemoveRequest { id: 1 }))
                .await
                .expect_err("alice may not remove members");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_invalidates_only_that_users_tokens() {
    // Proves a user or role change leaves other users' tokens valid (etcd invalidates every
    // token, #13300), while a changed password or a deleted user makes that user's tokens
    // "invalid auth token".
    let cairn = CairnNode::start(FLAGS);
    let endpoint = cairn.endpoint();
    enable_with_alice(&endpoint).await;
    let root = Session::connect(&endpoint, Some(("root", "rootpw"))).await;
    root.auth()
        .user_add(root.req(pb::AuthUserAddRequest {
            name: "bob".into(),
            password: "bpw".into(),
            ..Default::default()
        }))
        .await
        .expect("add bob");
    root.auth()
        .user_grant_role(root.req(pb::AuthUserGrantRoleRequest {
            user: "bob".into(),
            role: "app".into(),
        }))
        .await
        .expect("grant bob");
    let alice = Session::connect(&endpoint, Some(("alice", "apw"))).await;
    let bob = Session::connect(&endpoint, Some(("bob", "bpw"))).await;
    // Changes to roles and to other users: both tokens stay good.
    root.auth()
        .role_add(root.req(pb::AuthRoleAddRequest {
            name: "other".into(),
        }))
        .await
        .expect("role add");
    root.auth()
        .user_add(root.req(pb::AuthUserAddRequest {
            name: "carol".into(),
            password: "cpw".into(),
            ..Default::default()
        }))
        .await
        .expect("add carol");
    put(&alice, "app/a")
        .await
        .expect("alice after others' changes");
    put(&bob, "app/b").await.expect("bob after others' changes");
    // Alice's password changes: her token is dead, Bob's lives.
    root.auth()
        .user_change_password(root.req(pb::AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "new".into(),
            ..Default::default()
        }))
        .await
        .expect("change password");
    let dead = put(&alice, "app/a").await.expect_err("old token");
    assert_eq!(
        (dead.code(), dead.message()),
        (
            tonic::Code::Unauthenticated,
            "etcdserver: invalid auth token"
        )
    );
    put(&bob, "app/b").await.expect("bob unaffected");
    let alice = Session::connect(&endpoint, Some(("alice", "new"))).await;
    put(&alice, "app/a").await.expect("alice's new token");
    // Bob is deleted: his token is dead.
    root.auth()
        .user_delete(root.req(pb::AuthUserDeleteRequest { name: "bob".into() }))
        .await
        .expect("delete bob");
    let dead = put(&bob, "app/b").await.expect_err("deleted user's token");
    assert_eq!(dead.code(), tonic::Code::Unauthenticated);
    // Malformed, foreign and unsigned tokens.
    for bad in [
        "garbage",
        "nNqmHrafGDdBUtZT.16",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1c2VybmFtZSI6InJvb3QiLCJyZXZpc2lvbiI6MSwiZXhwIjo5OTk5OTk5OTk5fQ.",
    ] {
        let refused = put(&with_token(&endpoint, bad).await, "app/x")
            .await
            .expect_err(bad);
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{bad}");
    }
}

/// Waits (bounded: 30 s) until `counter` reaches `at_least`; panics saying `what` did not
/// happen.
async fn reach(counter: &std::sync::atomic::AtomicUsize, at_least: usize, what: &str) {
    let start = std::time::Instant::now();
    while counter.load(std::sync::atomic::Ordering::Relaxed) < at_least {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no {what} within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_while_writes_run_takes_effect_at_one_revision_everywhere() {
    // Proves a permission revoked while a user writes through two members is decided in
    // apply: every write acknowledged has a revision at or below the one the revoke was
    // applied at, every later one is refused, and the members hold the same state (HashKV
    // equal).
    use cairn_tests::{Cluster, Flavor, with_timeout};
    use std::time::Duration;
    let _serial = SERIAL.lock().await;
    with_timeout(Duration::from_secs(180), "revoke under writes", async {
        let cluster = Cluster::start(Flavor::Cairn, 3, FLAGS).await;
        cluster.wait_for_leader(Duration::from_secs(30)).await;
        enable_with_alice(&cluster.members[0].endpoint()).await;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let mut writers = Vec::new();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // Writes acknowledged and refused so far, by both writers.
        let counts = std::sync::Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        for w in 1..3 {
            let endpoint = cluster.members[w].endpoint();
            let (stop, counts) = (stop.clone(), counts.clone());
            writers.push(tokio::spawn(async move {
                let alice = Session::connect(&endpoint, Some(("alice", "apw"))).await;
                let (mut acked, mut refused) = (Vec::new(), 0);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    match put(&alice, &format!("app/{w}/{i}")).await {
                        Ok(rev) => {
                            acked.push(rev);
                            counts.0.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.code() == tonic::Code::PermissionDenied => {
                            refused += 1;
                            counts.1.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                    i += 1;
                }
                (acked, refused)
            }));
        }
        reach(&counts.0, 20, "20 writes acknowledged before the revoke").await;
        let root = Session::connect(&cluster.members[0].endpoint(), Some(("root", "rootpw"))).await;
        let revoked_at = root
            .auth()
            .role_revoke_permission(root.req(pb::AuthRoleRevokePermissionRequest {
                role: "app".into(),
                key: b"app/".to_vec(),
                range_end: b"app0".to_vec(),
            }))
            .await
            .expect("revoke")
            .into_inner()
            .header
            .expect("header")
            .revision;
        // The writers see refusals; then they stop.
        reach(&counts.1, 10, "10 writes refused after the revoke").await;
        stop.store(true, Ordering::Relaxed);
        let (mut acked, mut refused) = (0, 0);
        for writer in writers {
            let (revs, r) = writer.await.expect("writer");
            assert!(
                revs.iter().all(|&rev| rev <= revoked_at),
                "a write acknowledged after the revoke at {revoked_at}: {revs:?}"
            );
            acked += revs.len();
            refused += r;
        }
        assert!(acked > 0 && refused > 0, "acked {acked}, refused {refused}");
        // Every member holds the same store.
        let mut hashes = std::collections::BTreeSet::new();
        for m in &cluster.members {
            let s = Session::connect(&m.endpoint(), Some(("root", "rootpw"))).await;
            let start = std::time::Instant::now();
            let hash = loop {
                let h = cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient::new(
                    s.channel.clone(),
                )
                .hash_kv(s.req(pb::HashKvRequest {
                    revision: revoked_at,
                }))
                .await;
                match h {
                    Ok(h) => break h.into_inner().hash,
                    Err(e) => {
                        assert!(start.elapsed() < Duration::from_secs(20), "hash_kv: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            hashes.insert(hash);
        }
        assert_eq!(hashes.len(), 1, "members differ: {hashes:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_with_authentication_on() {
    // Proves lease expiry keeps working with authentication on (etcd #13975): the leader's
    // expiry is the cluster's own duty, never refused, even for keys only root may write.
    let cairn = CairnNode::start(FLAGS);
    let endpoint = cairn.endpoint();
    enable_with_alice(&endpoint).await;
    let alice = Session::connect(&endpoint, Some(("alice", "apw"))).await;
    let root = Session::connect(&endpoint, Some(("root", "rootpw"))).await;
    let mut keys = Vec::new();
    for (session, key) in [(&alice, "app/leased"), (&root, "rootonly/leased")] {
        let lease = session
            .lease()
            .lease_grant(session.req(pb::LeaseGrantRequest { ttl: 2, id: 0 }))
            .await
            .expect("grant")
            .into_inner()
            .id;
        session
            .kv()
            .put(session.req(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            }))
            .await
            .expect("put with lease");
        keys.push(key);
    }
    // Anonymous lease grants are refused with authentication on.
    let anonymous = Session::connect(&endpoint, None).await;
    let refused = anonymous
        .lease()
        .lease_grant(pb::LeaseGrantRequest { ttl: 2, id: 0 })
        .await
        .expect_err("anonymous grant");
    assert_eq!(refused.message(), "etcdserver: user name is empty");
    let start = std::time::Instant::now();
    for key in keys {
        loop {
            let count = root
                .kv()
                .range(root.req(pb::RangeRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                }))
                .await
                .expect("range")
                .into_inner()
                .count;
            if count == 0 {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "{key} outlived its lease:\n{}",
                cairn.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_passwords_does_not_starve_other_clients() {
    // Proves bcrypt's work is bounded: with etcd's default cost, 24 Authenticate calls with
    // wrong passwords in flight at once all fail with etcd's error, and writes by an
    // authenticated client meanwhile all succeed (each within the request timeout).
    let cairn = CairnNode::start(&[]);
    let endpoint = cairn.endpoint();
    enable_with_alice(&endpoint).await;
    let alice = Session::connect(&endpoint, Some(("alice", "apw"))).await;
    let mut guesses = Vec::new();
    for i in 0..24 {
        let endpoint = endpoint.clone();
        guesses.push(tokio::spawn(async move {
            let s = Session::connect(&endpoint, None).await;
            s.auth()
                .authenticate(pb::AuthenticateRequest {
                    name: "alice".into(),
                    password: format!("guess{i}"),
                })
                .await
                .expect_err("a wrong password")
        }));
    }
    for i in 0..20 {
        put(&alice, &format!("app/{i}"))
            .await
            .expect("a write during the burst");
    }
    for guess in guesses {
        let refused = guess.await.expect("guess task");
        assert_eq!(
            refused.message(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairnctl_runs_as_the_user_it_is_given() {
    // Proves cairnctl's global --user (and --password) authenticate as etcdctl's do: root
    // reads the auth status, alice is refused root's commands, no user and a wrong password
    // get etcd's errors.
    let cairn = CairnNode::start(FLAGS);
    enable_with_alice(&cairn.endpoint()).await;
    let cairnctl = cairn_tests::Etcdctl::cairnctl(&cairn.endpoint());
    let run = |args: &[&str]| {
        let out = cairnctl.run(args, None);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = run(&["--user=root:rootpw", "auth", "status"]);
    assert!(
        out.starts_with("Authentication Status: true\nAuthRevision: "),
        "{out}{err}"
    );
    let (out, _) = run(&["--user=root", "--password=rootpw", "user", "list"]);
    assert_eq!(out, "alice\nroot\n");
    let (_, err) = run(&["--user=alice:apw", "user", "list"]);
    assert!(
        err.contains("Error: etcdserver: permission denied"),
        "{err}"
    );
    let (_, err) = run(&["user", "list"]);
    assert!(
        err.contains("Error: etcdserver: user name is empty"),
        "{err}"
    );
    let (_, err) = run(&["--user=alice:wrong", "user", "list"]);
    assert!(
        err.contains("Error: etcdserver: authentication failed, invalid user ID or password"),
        "{err}"
    );
}
