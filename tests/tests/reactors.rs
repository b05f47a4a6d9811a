//! Reactors end to end: a materialized index kept exactly once across a leader's kill -9
//! (it equals what one pass over the source's history computes, and the reactor stepped once
//! per source revision), cascading deletes, a reactor writing into its own range stopped by
//! the depth limit, and failing reactors paused while the member serves on.
//!
//! The plugins are built by `scripts/build-plugins.sh`, which the test command runs first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cairn_proto::cairn_plugin::plugin_client::PluginClient;
use cairn_proto::cairn_plugin::{ListRequest, ReactorStatus};
use cairn_tests::cluster::try_connect;
use cairn_tests::converge::wait_converged;
use cairn_tests::{CairnNode, Cluster, Flavor, cairnctl_ok, install_plugin};
use etcd_client::{EventType, GetOptions, WatchOptions};

/// Multi-member tests load two cores; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reactor `name`'s status as `endpoint` reports it.
async fn status(endpoint: &str, name: &str) -> Option<ReactorStatus> {
    let mut client = PluginClient::connect(format!("http://{endpoint}"))
        .await
        .ok()?;
    let list = client.list(ListRequest {}).await.ok()?.into_inner();
    list.bindings
        .into_iter()
        .find(|b| b.name == name)
        .and_then(|b| b.reactor_status)
}

/// Waits (bounded) until reactor `name`'s status satisfies `done`; returns it.
async fn wait_status(
    endpoint: &str,
    name: &str,
    done: impl Fn(&ReactorStatus) -> bool,
) -> ReactorStatus {
    let start = Instant::now();
    loop {
        let now = status(endpoint, name).await;
        if let Some(now) = &now
            && done(now)
        {
            return now.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reactor {name} did not get there: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The index one pass over `events` (in revision order) computes: the set of index keys.
fn one_pass(events: &[(EventType, String, String)]) -> BTreeSet<String> {
    let mut users: BTreeMap<String, String> = BTreeMap::new();
    for (kind, key, value) in events {
        match kind {
            EventType::Put => {
                let city = serde_json::from_str::<serde_json::Value>(value)
                    .ok()
                    .and_then(|v| v.get("city").and_then(|c| c.as_str().map(str::to_owned)));
                match city {
                    Some(city) => users.insert(key.clone(), city),
                    None => users.remove(key),
                };
            }
            EventType::Delete => {
                users.remove(key);
            }
        }
    }
    users
        .into_iter()
        .map(|(key, city)| format!("/index/city/{city}/{key}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_reactor_is_exactly_once_across_a_leader_kill() {
    // Proves exactly-once reactions: while a stream of puts and deletes under /users/ runs,
    // the leader (which runs the reactor) is killed with SIGKILL; afterwards the index under
    // /index/ equals what one pass over the source's history computes, the reactor stepped
    // once per source revision, and every member has the same store.
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let e0 = cluster.members[0].endpoint();
    install_plugin(&e0, "index", "index-reactor");
    cairnctl_ok(
        &e0,
        &[
            "plugin",
            "bind",
            "users-by-city",
            "--plugin",
            "index",
            "--kind",
            "reactor",
            "--key",
            "/users/",
            "--prefix",
            "--config",
            r#"{"prefix": "/users/", "field": "city", "index": "/index/"}"#,
        ],
    );
    let bound_at = status(&e0, "users-by-city").await.expect("bound").cursor;

    // The source stream, through every member in turn, retrying a failed write elsewhere.
    let cities = ["London", "Paris", "Lagos", "Lima"];
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let mut killed = None;
    let mut last_source = 0;
    for i in 0..240usize {
        if i == 80 {
            cluster.members[leader].kill9();
            killed = Some(leader);
        }
        let key = format!("/users/u{}", i % 20);
        let value = format!(r#"{{"city": "{}", "i": {i}}}"#, cities[i % 4]);
        let start = Instant::now();
        loop {
            let m = (i + start.elapsed().as_millis() as usize) % 3;
            if Some(m) == killed {
                continue;
            }
            let Ok(mut client) = try_connect(&cluster.members[m].endpoint()).await else {
                continue;
            };
            // The revision of the write's event (a delete of a missing key makes none).
            let done = if i % 7 == 6 {
                client.delete(key.as_str(), None).await.map(|r| {
                    if r.deleted() > 0 {
                        r.header().map_or(0, |h| h.revision())
                    } else {
                        0
                    }
                })
            } else {
                client
                    .put(key.as_str(), value.as_str(), None)
                    .await
                    .map(|r| r.header().map_or(0, |h| h.revision()))
            };
            if let Ok(revision) = done {
                last_source = last_source.max(revision);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "write {i} failed: {done:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let down = killed.expect("the leader was killed");
    cluster.members[down].restart();
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let e = cluster.members[leader].endpoint();
    let state = wait_status(&e, "users-by-city", |s| s.paused || s.cursor >= last_source).await;
    assert!(!state.paused, "{state:?}");

    // The source's history since the binding, in order.
    let mut client = try_connect(&e).await.expect("connect");
    let mut stream = client
        .watch(
            "/users/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(bound_at + 1),
            ),
        )
        .await
        .expect("watch");
    let mut events = Vec::new();
    let mut revisions = BTreeSet::new();
    while revisions.last().is_none_or(|&r| r < last_source) {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("history in time")
            .expect("watch")
            .expect("open");
        for ev in resp.events() {
            let kv = ev.kv().expect("kv");
            revisions.insert(kv.mod_revision());
            events.push((
                ev.event_type(),
                kv.key_str().expect("utf-8").to_owned(),
                kv.value_str().expect("utf-8").to_owned(),
            ));
        }
    }
    let index: BTreeSet<String> = client
        .get("/index/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get index")
        .kvs()
        .iter()
        .map(|kv| kv.key_str().expect("utf-8").to_owned())
        .collect();
    assert_eq!(
        index,
        one_pass(&events),
        "the index is one pass over the source"
    );
    // A step reacts to one or more source revisions in a row (the runner batches them).
    assert!(
        (1..=revisions.len() as u64).contains(&state.steps),
        "at most one step per source revision, {} revisions: {state:?}",
        revisions.len()
    );
    wait_converged(&cluster, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascades_depth_limits_and_failing_reactors() {
    // Proves a cascade-delete reactor deletes a parent's children and only them; a reactor
    // bound with --retrigger that writes into its own range stops at its depth limit; and a
    // reactor that traps is retried, counted and paused after 5 failures, visible in
    // `cairnctl plugin get`, while the member serves on.
    let _serial = SERIAL.lock().await;
    let node = CairnNode::start(&[]);
    let e = node.endpoint();
    install_plugin(&e, "cascade", "cascade-reactor");
    install_plugin(&e, "echo", "echo-reactor");
    install_plugin(&e, "trap", "trap-guard");
    cairnctl_ok(
        &e,
        &[
            "plugin",
            "bind",
            "cascade",
            "--plugin",
            "cascade",
            "--kind",
            "reactor",
            "--key",
            "/projects/",
            "--prefix",
            "--config",
            r#"{"parent": "/projects/", "children": ["/tasks/"]}"#,
        ],
    );
    cairnctl_ok(
        &e,
        &[
            "plugin",
            "bind",
            "echo",
            "--plugin",
            "echo",
            "--kind",
            "reactor",
            "--key",
            "/e/",
            "--prefix",
            "--retrigger",
            "--max-depth",
            "3",
        ],
    );
    let mut client = try_connect(&e).await.expect("connect");
    for key in [
        "/tasks/p1/a",
        "/tasks/p1/b",
        "/tasks/p2/a",
        "/projects/p1",
        "/projects/p2",
    ] {
        client.put(key, "x", None).await.expect("put");
    }
    let deleted = client
        .delete("/projects/p1", None)
        .await
        .expect("delete")
        .header()
        .expect("header")
        .revision();
    client.put("/e/a", "v", None).await.expect("put");
    let cascade = wait_status(&e, "cascade", |s| s.cursor >= deleted).await;
    assert_eq!(cascade.writes, 1, "{cascade:?}");
    // Three echoes, then the fourth level is not triggered: the cursor passes the last echo.
    wait_status(&e, "echo", |s| s.writes >= 3).await;
    let last_echo = client
        .get("/e/a///", None)
        .await
        .expect("get")
        .kvs()
        .first()
        .map(|kv| kv.mod_revision())
        .expect("the third echo");
    let echo = wait_status(&e, "echo", |s| s.cursor >= last_echo).await;
    let keys = |resp: etcd_client::GetResponse| -> Vec<String> {
        resp.kvs()
            .iter()
            .map(|kv| kv.key_str().expect("utf-8").to_owned())
            .collect()
    };
    let tasks = client
        .get("/tasks/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(keys(tasks), ["/tasks/p2/a"]);
    let echoes = client
        .get("/e/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert_eq!(keys(echoes), ["/e/a", "/e/a/", "/e/a//", "/e/a///"]);
    assert_eq!(echo.writes, 3, "depth 3: three echoes, {echo:?}");

    // A trapping reactor: five failures in a row, then paused.
    cairnctl_ok(
        &e,
        &[
            "plugin", "bind", "trap", "--plugin", "trap", "--kind", "reactor", "--key", "/t/",
            "--prefix",
        ],
    );
    client.put("/t/x", "v", None).await.expect("put");
    let start = Instant::now();
    let trap = loop {
        let s = status(&e, "trap").await.expect("bound");
        if s.paused {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not paused: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(trap.failures, 5);
    assert!(trap.last_error.contains("unreachable"), "{trap:?}");
    let listed = cairnctl_ok(&e, &["plugin", "get", "trap"]);
    assert!(listed.contains("paused"), "{listed}");
    client
        .put("/other", "v", None)
        .await
        .expect("the member serves on");
}
