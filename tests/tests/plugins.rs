//! WebAssembly plugins end to end on real clusters: the example plugins installed and bound
//! through `cairnctl`, guards denying identically on every member, computed compares, the
//! registry surviving restarts and snapshot catch-up, hostile plugins failing the same way
//! everywhere while the member keeps serving, and per-binding statistics (decisions and fuel)
//! equal on every member.
//!
//! The plugins are built for wasm32-unknown-unknown by `scripts/build-plugins.sh`, which the
//! test command runs first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_proto::cairn_plugin::InstallRequest;
use cairn_proto::cairn_plugin::plugin_client::PluginClient;
use cairn_tests::cluster::connect;
use cairn_tests::converge::wait_converged;
use cairn_tests::plugins::stats_agree;
use cairn_tests::workload::put_concurrently;
use cairn_tests::{Cluster, Flavor, binary_path};

/// Multi-member tests load two cores; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A plugin built by `scripts/build-plugins.sh`.
fn wasm(crate_name: &str) -> PathBuf {
    cairn_tests::plugin_wasm(crate_name)
}

fn cairnctl_path() -> PathBuf {
    let path = binary_path().with_file_name("cairnctl");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` (the test command does)",
        path.display()
    );
    path
}

/// Runs cairnctl against `endpoint`; returns (success, stdout, stderr).
fn cairnctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(cairnctl_path());
    cmd.arg(format!("--endpoints={endpoint}")).args(args);
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("cairnctl runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("cairnctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let (success, stdout, stderr) = cairnctl(endpoint, args, None);
    assert!(success, "cairnctl {args:?} failed: {stderr}{stdout}");
    stdout
}

/// A put's error message, or "ok".
async fn put(endpoint: &str, key: &str, value: &str) -> String {
    let mut client = connect(endpoint).await;
    match client.put(key, value, None).await {
        Ok(_) => "ok".to_string(),
        Err(e) => cairn_tests::grpc_message(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugins_on_three_members() {
    // Proves the example plugins work end to end through cairnctl on 3 members: the schema
    // and quota guards deny identically on every member and only in their ranges (evaluated
    // once, by the leader, and taken by every member), a computed
    // compare counts keys, HashKV and the plugin statistics (decisions, fuel) agree, and the
    // registry survives a restart and a catch-up by snapshot.
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
    for (name, crate_name) in [
        ("schema", "json-schema-guard"),
        ("quota", "quota-guard"),
        ("count", "count-compare"),
    ] {
        let file = wasm(crate_name);
        let out = ok(
            &e0,
            &[
                "plugin",
                "install",
                name,
                file.to_str().expect("utf-8 path"),
            ],
        );
        assert!(out.contains("installed"), "{out}");
    }
    let schema = r#"{"type":"object","required":["port"],"properties":{"port":{"type":"integer","minimum":1,"maximum":65535}}}"#;
    ok(
        &e0,
        &[
            "plugin",
            "bind",
            "config-schema",
            "--plugin",
            "schema",
            "--kind",
            "guard",
            "--key",
            "/config/",
            "--prefix",
            "--config",
            schema,
        ],
    );
    ok(
        &e0,
        &[
            "plugin",
            "bind",
            "jobs-quota",
            "--plugin",
            "quota",
            "--kind",
            "guard",
            "--key",
            "/jobs/",
            "--prefix",
            "--config",
            r#"{"prefix":"/jobs/","max_keys":3}"#,
        ],
    );
    ok(
        &e0,
        &[
            "plugin", "bind", "count", "--plugin", "count", "--kind", "compare",
        ],
    );

    // The schema guard, through every member: the same answer everywhere.
    for m in &cluster.members {
        let e = m.endpoint();
        assert_eq!(put(&e, "/config/web", r#"{"port":8080}"#).await, "ok");
        let denied = put(&e, "/config/web", r#"{"port":"eighty"}"#).await;
        assert!(
            denied.starts_with("FailedPrecondition: cairn: guard config-schema denied the write:")
                && denied.contains("port"),
            "{denied}"
        );
        // Other keys are not the guard's business.
        assert_eq!(put(&e, "/other/web", "not json").await, "ok");
    }
    // The quota guard.
    for i in 1..=3 {
        assert_eq!(put(&e0, &format!("/jobs/{i}"), "x").await, "ok");
    }
    let e2 = cluster.members[2].endpoint();
    let denied = put(&e2, "/jobs/4", "x").await;
    assert!(denied.contains("jobs-quota denied"), "{denied}");
    assert_eq!(
        put(&e2, "/jobs/1", "rewrite").await,
        "ok",
        "an existing key stays in quota"
    );

    // A computed compare through cairnctl: three jobs.
    let (success, out, err) = cairnctl(
        &e2,
        &["txn"],
        Some(
            "computed(\"count\", \"/jobs/\") = 3\n\nput /seen/jobs yes\n\nput /seen/wrong yes\n\n",
        ),
    );
    assert!(success, "{err}");
    assert!(out.starts_with("SUCCESS"), "{out}");
    let (success, out, err) = cairnctl(
        &e0,
        &["txn"],
        Some("computed(\"count\", \"/jobs/\") > 3\n\nput /x/a yes\n\nput /x/b yes\n\n"),
    );
    assert!(success, "{err}");
    assert!(out.starts_with("FAILURE"), "{out}");

    let first = stats_agree(&cluster, None).await;
    let schema_stats = first
        .iter()
        .find(|s| s.0 == "config-schema")
        .expect("bound");
    assert_eq!((schema_stats.1, schema_stats.2), (6, 3), "{first:?}");
    assert!(schema_stats.4 > 0, "fuel is counted: {first:?}");
    // Guards ran once, on the leader: every member took carried verdicts (the statistics
    // above, equal everywhere, include them).
    for m in &cluster.members {
        let accepted = m
            .metric("cairn_plugin_verdicts_total", &[("place", "accepted")])
            .await;
        assert!(accepted.is_some_and(|n| n > 0.0), "{accepted:?}");
    }
    wait_converged(&cluster, Duration::from_secs(30)).await;

    // A restarted member still guards.
    cluster.members[1].kill9();
    cluster.members[1].restart();
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let e1 = cluster.members[1].endpoint();
    let denied = put(&e1, "/config/db", "[]").await;
    assert!(
        denied.contains("config-schema denied"),
        "{denied}\nm1's log:\n{}",
        cluster.members[1].log()
    );

    // A member that catches up by snapshot gets the registry too.
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let down = (leader + 1) % 3;
    let had = cluster.kill_and_wait_down(down, leader).await;
    // More entries than the log keeps behind a snapshot (100 and 20 here), written by eight
    // clients so it stays quick; then wait until the leader has purged past the member.
    put_concurrently(&cluster.members[leader].endpoint(), 8, 150, "/other/", "v").await;
    cluster
        .wait_purged_past(leader, had, Duration::from_secs(60))
        .await;
    cluster.members[down].restart();
    wait_converged(&cluster, Duration::from_secs(60)).await;
    let installs = cluster.members[down]
        .metric("etcd_network_snapshot_receive_success", &[])
        .await;
    assert_eq!(
        installs,
        Some(1.0),
        "snapshots installed by the member that was down"
    );
    let e2 = cluster.members[down].endpoint();
    let denied = put(&e2, "/config/cache", r#"{"port":0}"#).await;
    assert!(denied.contains("config-schema denied"), "{denied}");
    stats_agree(&cluster, None).await;
    wait_converged(&cluster, Duration::from_secs(30)).await;
}

/// Installs raw bytes (no componentizing) through the registry service.
async fn install_raw(endpoint: &str, name: &str, bytes: &[u8]) -> Result<(), tonic::Status> {
    use sha2_free_hex::sha256_hex;
    let mut client = PluginClient::connect(format!("http://{endpoint}"))
        .await
        .expect("plugin client");
    client
        .install(InstallRequest {
            name: name.to_string(),
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
            offset: 0,
            data: bytes.to_vec(),
        })
        .await
        .map(|_| ())
}

/// sha256 in hex for the raw install, via the cairn crate's own hashing.
mod sha2_free_hex {
    pub fn sha256_hex(bytes: &[u8]) -> String {
        cairn::plugin::registry::hex(&cairn::plugin::registry::sha256(bytes))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_alike_and_members_keep_serving() {
    // Proves hostile plugins are refused at install or fail deterministically per binding
    // (same statistics on every member), and that the member keeps serving other requests
    // quickly meanwhile.
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let e0 = cluster.members[0].endpoint();

    // Refused at install, on every member alike (the install is one Raft command).
    let core = std::fs::read(wasm("trap-guard")).expect("core module");
    let refused = install_raw(&e0, "raw", &core)
        .await
        .expect_err("a core module");
    assert!(refused.message().contains("not a component"), "{refused:?}");
    let (success, _, err) = cairnctl(
        &e0,
        &[
            "plugin",
            "install",
            "evil",
            wasm("bad-import-guard").to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(!success, "a plugin importing outside the contract installs");
    assert!(err.contains("outside the plugin contract"), "{err}");
    let garbage = install_raw(&e0, "garbage", b"definitely not wasm")
        .await
        .expect_err("garbage");
    assert!(
        garbage.message().contains("not a WebAssembly component"),
        "{garbage:?}"
    );

    // Installed, bound to their own prefixes, each denies writes there by failing.
    // What each failure says (a memory bomb may run out of fuel before it runs out of
    // memory, depending on how fast it grows).
    let hostile: [(&str, &str, &[&str]); 5] = [
        ("loop", "loop-guard", &["out of fuel"]),
        ("bomb", "memory-bomb-guard", &["unreachable", "out of fuel"]),
        // Rust's own stack lives in linear memory: unbounded recursion runs off its bottom
        // (out of bounds) before wasm's call stack overflows.
        (
            "recursion",
            "recursion-guard",
            &["stack overflow", "out of bounds"],
        ),
        ("trap", "trap-guard", &["unreachable"]),
        ("huge", "huge-output-guard", &["limit", "unreachable"]),
    ];
    for (name, crate_name, _) in hostile {
        ok(
            &e0,
            &[
                "plugin",
                "install",
                name,
                wasm(crate_name).to_str().expect("utf-8"),
            ],
        );
        ok(
            &e0,
            &[
                "plugin",
                "bind",
                name,
                "--plugin",
                name,
                "--kind",
                "guard",
                "--key",
                &format!("/{name}/"),
                "--prefix",
                "--fuel",
                "50000000",
            ],
        );
    }
    for (name, _, expect) in hostile {
        for m in &cluster.members {
            let started = Instant::now();
            let failed = put(&m.endpoint(), &format!("/{name}/k"), "v").await;
            assert!(
                failed.starts_with(&format!(
                    "FailedPrecondition: cairn: plugin binding {name} failed"
                )) && expect.iter().any(|e| failed.contains(e)),
                "{name}: {failed}"
            );
            println!("{name} on {}: {:?}: {failed}", m.name, started.elapsed());
            // Other requests are served at their normal speed.
            let started = Instant::now();
            assert_eq!(put(&m.endpoint(), "/plain/k", "v").await, "ok");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a plain put took {:?} after {name}",
                started.elapsed()
            );
        }
    }
    // Failures are charged the whole budget, identically everywhere.
    let stats = stats_agree(&cluster, None).await;
    for (name, _, _) in hostile {
        let s = stats.iter().find(|s| s.0 == name).expect("bound");
        assert_eq!((s.1, s.3, s.4), (3, 3, 3 * 50_000_000), "{name}: {s:?}");
    }
    // Root can always unbind and remove a broken plugin; writes then pass.
    ok(&e0, &["plugin", "unbind", "loop"]);
    ok(&e0, &["plugin", "remove", "loop"]);
    assert_eq!(put(&e0, "/loop/k", "v").await, "ok");
    wait_converged(&cluster, Duration::from_secs(30)).await;
}

#[test]
fn a_guard_runs_in_the_batch_that_installs_it() {
    // Proves a guarded write applied in the same batch as its plugin's install and bind (as
    // when a restarted member replays its log) runs the guard, instead of failing because the
    // module is not in committed storage yet.
    use cairn::mvcc::{PutRequest, WriteRequest};
    use cairn::plugin::{Binding, FailurePolicy, Kind, PluginCommand};
    use cairn::state_machine::{AppliedMarker, Command as Cmd, CommandResponse, StateMachine};

    let module = component("json-schema-guard");
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = cairn::storage::Storage::open(dir.path()).expect("storage");
    let sm = StateMachine::new(storage).expect("state machine");
    let put = |value: &str| {
        Cmd::Kv(WriteRequest::Put(PutRequest {
            key: b"/config/a".to_vec(),
            value: value.as_bytes().to_vec(),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }))
    };
    let commands = [
        Cmd::Plugin(PluginCommand::Install {
            name: "schema".into(),
            sha256: module.sha256.clone(),
            size: module.bytes.len() as u64,
            offset: 0,
            data: module.bytes.clone(),
        }),
        Cmd::Plugin(PluginCommand::Bind(Binding {
            name: "strings".into(),
            plugin: "schema".into(),
            kind: Kind::Guard,
            key: b"/config/".to_vec(),
            range_end: b"/config0".to_vec(),
            config: br#"{"type":"string"}"#.to_vec(),
            fuel: cairn::plugin::DEFAULT_FUEL,
            memory_bytes: cairn::plugin::DEFAULT_MEMORY_BYTES,
            failure_policy: FailurePolicy::FailClosed,
            sha256: String::new(),
            stats: Default::default(),
        })),
        put("\"fine\""),
        put("42"),
    ];
    let markers: Vec<AppliedMarker> = (1..=commands.len() as u64)
        .map(|i| AppliedMarker {
            applied: i.to_be_bytes().to_vec(),
            membership: None,
        })
        .collect();
    let responses = sm
        .apply(commands.iter().map(Some).zip(&markers))
        .expect("the batch applies: no host fault");
    assert!(
        matches!(&responses[2], CommandResponse::Kv(Ok(_))),
        "{:?}",
        responses[2]
    );
    assert!(
        matches!(&responses[3], CommandResponse::Kv(Err(e)) if e.to_string().contains("strings")),
        "the guard denies a number: {:?}",
        responses[3]
    );
}

#[test]
fn carried_verdicts_are_taken_only_while_what_they_read_holds() {
    // Proves the evaluate-once rule (host/src/plugin/carry.rs): apply takes a verdict the
    // proposer carried exactly when the binding, the question and everything the plugin read
    // are unchanged, and runs the plugin otherwise; and that taking it decides the same, with
    // the same fuel, as running it. The quota guard reads a count of its prefix, so a write
    // under the prefix between vetting and apply changes what it read.
    use cairn::mvcc::{PutRequest, WriteRequest};
    use cairn::plugin::carry::{Answer, Carried};
    use cairn::plugin::engine::Verdict;
    use cairn::plugin::{Binding, FailurePolicy, Kind, PluginCommand};
    use cairn::state_machine::{AppliedMarker, Command as Cmd, CommandResponse, StateMachine};

    let module = component("quota-guard");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let binding = |max_keys: u64| Binding {
        name: "quota".into(),
        plugin: "quota".into(),
        kind: Kind::Guard,
        key: b"/jobs/".to_vec(),
        range_end: b"/jobs0".to_vec(),
        config: format!(r#"{{"prefix":"/jobs/","max_keys":{max_keys}}}"#).into_bytes(),
        fuel: cairn::plugin::DEFAULT_FUEL,
        memory_bytes: cairn::plugin::DEFAULT_MEMORY_BYTES,
        failure_policy: FailurePolicy::FailClosed,
        sha256: String::new(),
        stats: Default::default(),
    };
    let put = |key: &str| {
        Cmd::Kv(WriteRequest::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }))
    };
    let stamped = |command: Cmd| Cmd::Stamped {
        unix_ms: 1,
        command: Box::new(command),
    };
    let vetted = |calls: Vec<Carried>, command: Cmd| {
        stamped(Cmd::Vetted {
            calls,
            command: Box::new(command),
        })
    };
    // A carried verdict the plugin would never give: seeing it in a response proves apply
    // took the carried verdict instead of running the plugin.
    let forged = |mut calls: Vec<Carried>| {
        for c in &mut calls {
            c.answer = Answer::Guard(Verdict::Deny("the carried verdict".into()));
        }
        calls
    };
    let denied_by_carried = |r: &CommandResponse| matches!(r, CommandResponse::Kv(Err(e)) if e.to_string().contains("the carried verdict"));

    let dir = tempfile::tempdir().expect("temp dir");
    let sm = StateMachine::new(cairn::storage::Storage::open(dir.path()).expect("storage"))
        .expect("state machine");
    let vetter = sm.vetter();
    let mut index = 0u64;
    let mut apply = |commands: Vec<Cmd>| {
        let markers: Vec<AppliedMarker> = commands
            .iter()
            .map(|_| {
                index += 1;
                AppliedMarker {
                    applied: index.to_be_bytes().to_vec(),
                    membership: None,
                }
            })
            .collect();
        sm.apply(commands.iter().map(Some).zip(&markers))
            .expect("no host fault")
    };
    let install = || {
        Cmd::Plugin(PluginCommand::Install {
            name: "quota".into(),
            sha256: module.sha256.clone(),
            size: module.bytes.len() as u64,
            offset: 0,
            data: module.bytes.clone(),
        })
    };
    apply(vec![
        install(),
        Cmd::Plugin(PluginCommand::Bind(binding(2))),
    ]);
    let vet = |command: &Cmd| rt.block_on(vetter.vet(command, 1));
    // The proposer vets only with modules already compiled (their install compiles them in
    // the background): wait for that.
    let ready = |vetter: &cairn::plugin::vet::Vetter| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while rt.block_on(vetter.vet(&put("/jobs/warm-up"), 1)).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never compiled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    ready(&vetter);

    // The proposer carries the guard's allow, the fuel and the count it read.
    let calls = vet(&put("/jobs/a"));
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].answer, Answer::Guard(Verdict::Allow));
    assert!(!calls[0].reads.is_empty() && calls[0].fuel > 0, "{calls:?}");

    // Nothing changed since: apply takes it.
    let r = apply(vec![vetted(forged(calls), put("/jobs/a"))]);
    assert!(denied_by_carried(&r[0]), "{r:?}");

    // A key written under the prefix after vetting changes the count the guard read: apply
    // runs the guard again (it allows: 2 keys of 2).
    let calls = vet(&put("/jobs/b"));
    apply(vec![stamped(put("/jobs/x"))]);
    let r = apply(vec![vetted(forged(calls), put("/jobs/b"))]);
    assert!(matches!(&r[0], CommandResponse::Kv(Ok(_))), "{r:?}");

    // A write elsewhere leaves it standing.
    let calls = vet(&put("/jobs/c"));
    apply(vec![stamped(put("/elsewhere"))]);
    let r = apply(vec![vetted(forged(calls), put("/jobs/c"))]);
    assert!(denied_by_carried(&r[0]), "{r:?}");

    // A verdict for another question (another key) is not taken.
    let calls = vet(&put("/jobs/c"));
    let r = apply(vec![vetted(forged(calls), put("/jobs/d"))]);
    assert!(
        matches!(&r[0], CommandResponse::Kv(Err(e)) if e.to_string().contains("at most 2 keys")),
        "the guard ran and denied the third key: {r:?}"
    );

    // The binding rebound with another config: not taken.
    let calls = vet(&put("/jobs/c"));
    apply(vec![Cmd::Plugin(PluginCommand::Bind(binding(3)))]);
    let r = apply(vec![vetted(forged(calls), put("/jobs/c"))]);
    assert!(matches!(&r[0], CommandResponse::Kv(Ok(_))), "{r:?}");

    // Taking an honest carried verdict decides exactly as running the plugin: two fresh
    // members apply the same writes, one with the verdicts carried, one without, and end with
    // the same responses and the same statistics (calls, decisions and fuel, hashed).
    let members: Vec<(tempfile::TempDir, StateMachine)> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().expect("temp dir");
            let sm = StateMachine::new(cairn::storage::Storage::open(dir.path()).expect("storage"))
                .expect("state machine");
            (dir, sm)
        })
        .collect();
    let setup = [install(), Cmd::Plugin(PluginCommand::Bind(binding(3)))];
    let mut outcomes = Vec::new();
    for (carrying, (_, sm)) in [true, false].into_iter().zip(&members) {
        let vetter = sm.vetter();
        let mut responses = Vec::new();
        let mut next = 0u64;
        let mut apply_one = |command: &Cmd| {
            next += 1;
            let marker = AppliedMarker {
                applied: next.to_be_bytes().to_vec(),
                membership: None,
            };
            sm.apply([(Some(command), &marker)]).expect("no host fault")
        };
        for command in &setup {
            apply_one(command);
        }
        ready(&vetter);
        for key in ["/jobs/1", "/jobs/2", "/jobs/3", "/jobs/4", "/jobs/5"] {
            let command = put(key);
            let calls = if carrying {
                rt.block_on(vetter.vet(&command, 1))
            } else {
                Vec::new()
            };
            assert_eq!(calls.is_empty(), !carrying);
            responses.extend(apply_one(&vetted(calls, command)));
        }
        let stats = sm.registry().bindings["quota"].stats.clone();
        outcomes.push((format!("{responses:?}"), stats));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert_eq!(outcomes[0].1.calls, 5);
    assert_eq!(
        outcomes[0].1.denials, 2,
        "keys 4 and 5 are over the quota of 3"
    );
}

/// A built plugin as the component `cairnctl plugin install` would send.
fn component(crate_name: &str) -> cairnctl::module::Module {
    let path = wasm(crate_name);
    let core = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    cairnctl::module::prepare(&path.display().to_string(), core)
        .unwrap_or_else(|e| panic!("componentizing {crate_name}: {e}"))
}

/// The interfaces a plugin's component imports, and how many core modules it holds (each one
/// an instance per call).
fn component_shape(crate_name: &str) -> (Vec<String>, usize) {
    let module = component(crate_name);
    let (mut imports, mut modules, mut depth) = (Vec::new(), 0, 0usize);
    for payload in wasmparser::Parser::new(0).parse_all(&module.bytes) {
        match payload.expect("a valid component") {
            wasmparser::Payload::ModuleSection { .. } => {
                modules += 1;
                depth += 1;
            }
            wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.expect("an import").name.name.to_string());
                }
            }
            _ => {}
        }
    }
    imports.sort();
    (imports, modules)
}

#[test]
fn plugins_import_only_what_they_use() {
    // Proves the SDK links a host import only when the plugin uses it. The JSON-schema guard
    // never reads the store or logs and is exported with `log_panics = false`: its component
    // imports no function (only the types interface, which has none) and holds one core
    // module, so a call instantiates one core instance. The quota guard reads the store and
    // logs: it imports both, and wit-component adds the shim and fixup modules that wire
    // imports taking strings and lists (three in all).
    let types = "cairn:plugin/types@0.1.0";
    assert_eq!(
        component_shape("json-schema-guard"),
        (vec![types.to_string()], 1),
        "json-schema-guard"
    );
    let (imports, modules) = component_shape("quota-guard");
    assert_eq!(
        imports,
        ["cairn:plugin/log@0.1.0", "cairn:plugin/store@0.1.0", types],
        "quota-guard"
    );
    assert_eq!(modules, 3, "quota-guard");
    // A guard that never logs but keeps the default panic hook imports the log only.
    let (imports, _) = component_shape("trap-guard");
    assert_eq!(imports, ["cairn:plugin/log@0.1.0", types], "trap-guard");
}

#[test]
fn plugin_new_builds_for_every_kind_and_plugin_test_runs_it() {
    // Proves `cairnctl plugin new KIND NAME` writes a crate that builds for
    // wasm32-unknown-unknown as written, for each of the five kinds, and that `cairnctl plugin
    // test` runs each built plugin on a sample request through the host's engine, with the
    // template's documented behaviour.
    let dir = tempfile::tempdir().expect("tempdir");
    // Its own target dir, kept between runs (the generated crates are outside the workspace).
    let target = cairn_tests::process::target_dir().join("plugin-new");
    let unused = "127.0.0.1:9";
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "guard",
            &["--config", "4", "--put", "/app/k=abcd"],
            "allowed: applied at revision 2\n",
        ),
        (
            "guard",
            &["--config", "4", "--put", "/app/k=abcde"],
            "denied: guard my_guard denied the write: values hold at most 4 bytes\n",
        ),
        (
            "compare",
            &[
                "--given",
                "/jobs/1=a",
                "--given",
                "/jobs/2=b",
                "--given",
                "/x=c",
                "--argument",
                "/jobs/",
            ],
            "int: 2\n",
        ),
        (
            "policy",
            &["--delete", "/app/k"],
            "deny: deleting here takes the admin role\n",
        ),
        (
            "reactor",
            &["--put", "/app/a=1"],
            "put /last-changed//app/a 2\n",
        ),
        (
            "watch-filter",
            &[
                "--put", "/a=", "--put", "/b=1", "--given", "/c=1", "--delete", "/c",
            ],
            "PUT /a: drop\nPUT /b: pass\nDELETE /c: pass\n",
        ),
    ];
    for kind in ["guard", "compare", "policy", "reactor", "watch-filter"] {
        let name = format!("my-{kind}");
        let crate_dir = dir.path().join(&name);
        let created = ok(
            unused,
            &[
                "plugin",
                "new",
                kind,
                &name,
                "--dir",
                crate_dir.to_str().expect("utf-8"),
            ],
        );
        assert!(
            created.starts_with(&format!("created {kind} plugin {name} in ")),
            "{created}"
        );
        // The workspace's lock pins the SDK's dependencies to versions already downloaded.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::copy(workspace.join("Cargo.lock"), crate_dir.join("Cargo.lock")).expect("lock");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo)
            .args(["build", "--target", "wasm32-unknown-unknown", "--release"])
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("cargo runs");
        let deadline = Instant::now() + Duration::from_secs(600);
        let status = loop {
            if let Some(status) = build.try_wait().expect("cargo's status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = build.kill();
                panic!("building {name} took over 10 minutes");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut errors = String::new();
        if let Some(mut stderr) = build.stderr.take() {
            use std::io::Read;
            let _ = stderr.read_to_string(&mut errors);
        }
        assert!(status.success(), "{name} does not build:\n{errors}");
        assert!(
            !errors.contains("warning"),
            "{name} builds with warnings:\n{errors}"
        );
        let wasm = target
            .join("wasm32-unknown-unknown/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        for (_, args, want) in cases.iter().filter(|(k, _, _)| *k == kind) {
            let mut full = vec![
                "plugin",
                "test",
                "--kind",
                kind,
                wasm.to_str().expect("utf-8"),
            ];
            full.extend_from_slice(args);
            let answer = ok(unused, &full);
            let answer = answer.lines().filter(|l| !l.starts_with("fuel: "));
            let answer: String = answer.map(|l| format!("{l}\n")).collect();
            assert_eq!(answer, *want, "{kind} {args:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_logs_follows_the_members_that_run_a_plugin() {
    // Proves `cairnctl plugin logs BINDING` follows a plugin's log lines on the members of a
    // 3-member cluster: a guard that warns on every write is run by the leader (vetting the
    // write, or in apply), so its lines reach the follower with the leader's ID; every line
    // printed is the warning, from one of the members.
    let cluster = Cluster::start(Flavor::Cairn, 3, &[]).await;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let leader_id = format!("{:x}", cluster.members[leader].id().await);
    let e0 = cluster.members[0].endpoint();
    let file = wasm("quota-guard");
    ok(
        &e0,
        &[
            "plugin",
            "install",
            "quota",
            file.to_str().expect("utf-8 path"),
        ],
    );
    // A config the guard cannot read: it denies every write in its range, with a warning.
    ok(
        &e0,
        &[
            "plugin", "bind", "jobs", "--plugin", "quota", "--kind", "guard", "--key", "/jobs/",
            "--prefix", "--config", "{}",
        ],
    );
    let mut ids = std::collections::BTreeSet::new();
    for m in &cluster.members {
        ids.insert(format!("{:x}", m.id().await));
    }
    let mut follower = Command::new(cairnctl_path())
        .args([&format!("--endpoints={e0}"), "plugin", "logs", "jobs"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cairnctl runs");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Writes until the follower has a line from the leader (its streams open while the first
    // writes go by).
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(&leader_id) {
        assert!(
            Instant::now() < deadline,
            "lines seen from {seen:?}, none from the leader {leader_id}"
        );
        assert_eq!(
            put(&e0, "/jobs/a", "1").await,
            "FailedPrecondition: cairn: guard jobs denied the write: quota-guard: bad binding config: missing field `prefix` at line 1 column 2"
        );
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            let (member, rest) = line.split_once(' ').expect("member, then the line");
            assert_eq!(
                rest,
                "jobs warn: quota-guard: bad binding config: missing field `prefix` at line 1 column 2"
            );
            assert!(ids.contains(member), "{line}: not a member of {ids:?}");
            seen.insert(member.to_string());
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
}
