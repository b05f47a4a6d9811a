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
