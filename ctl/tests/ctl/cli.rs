//! The built binary against `FakeServer`: what it sends, prints, and exits with.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::cairn_plugin::{Binding, FailurePolicy, Kind};
use cairn_proto::etcdserverpb::{
    CairnComputed, Compare, cairn_computed::Expected, compare::CompareResult,
    compare::CompareTarget,
};
use cairnctl::module::sha256_hex;
use wasmparser::Parser;

use crate::fake_server::{FakeServer, acl_binding};
use crate::module::{core_module, fake_component};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cairnctl` with `args` (endpoints first, if any) and `stdin`.
fn cairnctl(endpoints: Option<&str>, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairnctl"));
    if let Some(endpoints) = endpoints {
        command.arg("--endpoints").arg(endpoints);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn ok(server: &FakeServer, args: &[&str], stdin: &str) -> String {
    let run = cairnctl(Some(&server.endpoint()), args, stdin);
    assert_eq!(run.code, 0, "{args:?}: stderr {}", run.stderr);
    assert_eq!(run.stderr, "", "{args:?}");
    run.stdout
}

/// Asserts the etcdctl-style failure: exit 1, nothing on stdout, `Error: <message>` on stderr.
fn fails(server: &FakeServer, args: &[&str], stdin: &str, stderr: &str) {
    let run = cairnctl(Some(&server.endpoint()), args, stdin);
    assert_eq!(run.code, 1, "{args:?}: stderr {}", run.stderr);
    assert_eq!(run.stdout, "", "{args:?}");
    assert_eq!(run.stderr, format!("Error: {stderr}\n"), "{args:?}");
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file
}

/// A 2.5 MiB component goes as three ordered chunks (1 MiB by default) that the server joins
/// into the file's bytes, each request carrying the deadline.
#[test]
fn install_sends_a_component_in_ordered_chunks() {
    let server = FakeServer::start();
    let bytes = fake_component(5 << 19);
    let file = temp_file(&bytes);
    let path = file.path().to_str().unwrap();
    let sha = sha256_hex(&bytes);

    let stdout = ok(&server, &["plugin", "install", "big", path], "");
    assert_eq!(
        stdout,
        format!("installed big sha256:{sha} (2621440 bytes)\n")
    );

    let recorded = server.recorded();
    let shape: Vec<(u64, usize)> = recorded
        .installs
        .iter()
        .map(|request| (request.offset, request.data.len()))
        .collect();
    assert_eq!(
        shape,
        [(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 1 << 19)]
    );
    for request in &recorded.installs {
        assert_eq!((request.name.as_str(), request.size), ("big", 5 << 19));
        assert_eq!(request.sha256, sha);
    }
    let joined: Vec<u8> = recorded
        .installs
        .iter()
        .flat_map(|r| r.data.clone())
        .collect();
    assert_eq!(joined, bytes);
    assert!(
        recorded
            .grpc_timeouts
            .iter()
            .all(|timeout| timeout.is_some())
    );
}

/// `--chunk-size` sets the chunk; `-w json` prints the last InstallResponse as proto3 JSON.
#[test]
fn install_chunk_size_and_json() {
    let server = FakeServer::start();
    let bytes = fake_component(1000);
    let file = temp_file(&bytes);
    let path = file.path().to_str().unwrap();

    let stdout = ok(
        &server,
        &[
            "plugin",
            "install",
            "small",
            path,
            "--chunk-size",
            "256",
            "-w",
            "json",
        ],
        "",
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["installed"], true);
    assert_eq!(json["received"], "1000", "64-bit integers are JSON strings");
    assert_eq!(json["header"]["revision"], "7");
    let offsets: Vec<u64> = server
        .recorded()
        .installs
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, [0, 256, 512, 768]);
}

/// A core module built with wit-bindgen is made a component before it is sent; the printed
/// digest is that of the bytes the server received.
#[test]
fn install_componentizes_a_core_module() {
    let server = FakeServer::start();
    let file = temp_file(&core_module(true));
    let stdout = ok(
        &server,
        &["plugin", "install", "answer", file.path().to_str().unwrap()],
        "",
    );
    let recorded = server.recorded();
    assert_eq!(recorded.installs.len(), 1);
    let sent = &recorded.installs[0];
    assert!(Parser::is_component(&sent.data));
    assert_eq!(sent.sha256, sha256_hex(&sent.data));
    assert_eq!(
        stdout,
        format!(
            "installed answer sha256:{} ({} bytes)\n",
            sent.sha256,
            sent.data.len()
        )
    );
}

/// Files that cannot be installed fail before anything is sent.
#[test]
fn install_refuses_unusable_files() {
    let server = FakeServer::start();
    let text = temp_file(b"not wasm at all");
    let text_path = text.path().to_str().unwrap();
    fails(
        &server,
        &["plugin", "install", "x", text_path],
        "",
        &format!("{text_path} is not a WebAssembly module or component (no \\0asm header)"),
    );
    let bare = temp_file(&core_module(false));
    let run = cairnctl(
        Some(&server.endpoint()),
        &["plugin", "install", "x", bare.path().to_str().unwrap()],
        "",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("is a core module without component type information")
    );
    fails(
        &server,
        &["plugin", "install", "x", "/nonexistent/x.wasm"],
        "",
        "cannot read /nonexistent/x.wasm: No such file or directory (os error 2)",
    );
    fails(
        &server,
        &["plugin", "install", "x", text_path, "--chunk-size", "0"],
        "",
        "--chunk-size must be between 1 byte and 4GiB",
    );
    assert_eq!(server.recorded().calls(), 0);
}

/// `plugin bind` sends the binding the flags describe; --prefix computes etcd's range end.
#[test]
fn bind_sends_the_binding() {
    let server = FakeServer::start();
    let stdout = ok(
        &server,
        &[
            "plugin",
            "bind",
            "acl-app",
            "--plugin",
            "acl",
            "--kind",
            "guard",
            "--key",
            "/app/",
            "--prefix",
            "--config",
            r#"{"max":3}"#,
            "--fuel",
            "1000",
            "--memory",
            "1MiB",
            "--failure-policy",
            "ignore",
        ],
        "",
    );
    assert_eq!(stdout, "bound acl-app\n");

    let config = temp_file(b"\x00binary config");
    let stdout = ok(
        &server,
        &[
            "plugin",
            "bind",
            "count",
            "--plugin",
            "quota",
            "--kind",
            "compare",
            "--key",
            "a",
            "--range-end",
            "m",
            "--config-file",
            config.path().to_str().unwrap(),
            "-w",
            "json",
        ],
        "",
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["header"]["member_id"], "2");

    ok(
        &server,
        &[
            "plugin", "bind", "all", "--plugin", "p", "--kind", "guard", "--prefix",
        ],
        "",
    );

    let binds: Vec<Binding> = server
        .recorded()
        .binds
        .iter()
        .map(|request| request.binding.clone().unwrap())
        .collect();
    assert_eq!(
        binds,
        [
            Binding {
                name: "acl-app".to_owned(),
                plugin: "acl".to_owned(),
                kind: Kind::Guard as i32,
                key: b"/app/".to_vec(),
                range_end: b"/app0".to_vec(),
                config: br#"{"max":3}"#.to_vec(),
                fuel: 1000,
                memory_bytes: 1 << 20,
                failure_policy: FailurePolicy::Ignore as i32,
                ..Binding::default()
            },
            Binding {
                name: "count".to_owned(),
                plugin: "quota".to_owned(),
                kind: Kind::Compare as i32,
                key: b"a".to_vec(),
                range_end: b"m".to_vec(),
                config: b"\x00binary config".to_vec(),
                failure_policy: FailurePolicy::FailClosed as i32,
                ..Binding::default()
            },
            Binding {
                name: "all".to_owned(),
                plugin: "p".to_owned(),
                kind: Kind::Guard as i32,
                range_end: vec![0],
                ..Binding::default()
            },
        ]
    );
}

/// Contradictory bind flags are refused by the argument parser, before any request.
#[test]
fn bind_refuses_conflicting_flags() {
    let server = FakeServer::start();
    for args in [
        &[
            "plugin",
            "bind",
            "b",
            "--plugin",
            "p",
            "--kind",
            "guard",
            "--prefix",
            "--range-end",
            "z",
        ][..],
        &[
            "plugin",
            "bind",
            "b",
            "--plugin",
            "p",
            "--kind",
            "guard",
            "--config",
            "x",
            "--config-file",
            "y",
        ],
        &["plugin", "bind", "b", "--plugin", "p", "--kind", "bogus"],
        &["plugin", "bind", "b", "--kind", "guard"],
        &[
            "plugin",
            "bind",
            "b",
            "--plugin",
            "p",
            "--kind",
            "guard",
            "--failure-policy",
            "open",
        ],
    ] {
        let run = cairnctl(Some(&server.endpoint()), args, "");
        assert_ne!(run.code, 0, "{args:?}");
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(server.recorded().calls(), 0);
}

/// Server refusals print the gRPC message as etcdctl does, with exit status 1.
#[test]
fn server_errors_print_the_grpc_message() {
    let server = FakeServer::start();
    fails(
        &server,
        &[
            "plugin", "bind", "b", "--plugin", "missing", "--kind", "guard",
        ],
        "",
        "plugin: plugin \"missing\" not found",
    );
    fails(
        &server,
        &["plugin", "unbind", "missing"],
        "",
        "plugin: binding not found",
    );
    fails(
        &server,
        &["plugin", "remove", "in-use"],
        "",
        "plugin: plugin \"in-use\" is used by binding \"b\"",
    );
    fails(
        &server,
        &["plugin", "get", "nope"],
        "",
        "plugin: plugin not found",
    );
}

/// unbind and remove send the name and confirm in one line.
#[test]
fn unbind_and_remove() {
    let server = FakeServer::start();
    assert_eq!(
        ok(&server, &["plugin", "unbind", "acl-app"], ""),
        "unbound acl-app\n"
    );
    assert_eq!(
        ok(&server, &["plugin", "remove", "acl"], ""),
        "removed acl\n"
    );
    let stdout = ok(&server, &["plugin", "remove", "acl", "-w", "json"], "");
    assert_eq!(
        stdout,
        "{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\",\"revision\":\"7\",\"raft_term\":\"3\"}}\n"
    );
    let recorded = server.recorded();
    assert_eq!(recorded.unbinds[0].name, "acl-app");
    let removed: Vec<&str> = recorded.removes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(removed, ["acl", "acl"]);
}

/// `plugin list` prints two aligned tables; -w json the ListResponse.
#[test]
fn list_prints_plugins_and_bindings() {
    let server = FakeServer::start();
    let stdout = ok(&server, &["plugin", "list"], "");
    assert_eq!(
        stdout,
        "\
PLUGIN  SHA256        SIZE   EXPORTS
acl     3f2a9c1b0d4e  48213  cairn:plugin/guard@0.1.0
quota   0123456789ab  7      cairn:plugin/guard@0.1.0,cairn:plugin/compare@0.1.0

BINDING      PLUGIN  KIND     RANGE   FAILURE POLICY  CALLS  DENIALS  FAILURES  FUEL USED
acl-app      acl     guard    /app/*  fail-closed     12     1        0         93812
quota-count  quota   compare  *       ignore          0      0        0         0
"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&server, &["plugin", "list", "-w", "json"], "")).unwrap();
    assert_eq!(json["plugins"][0]["name"], "acl");
    assert_eq!(json["bindings"][0]["kind"], "GUARD");
    assert_eq!(json["bindings"][0]["key"], "L2FwcC8=", "bytes are base64");
    assert_eq!(json["bindings"][0]["stats"]["fuel_used"], "93812");
    assert_eq!(server.recorded().lists, 2);
}

/// `plugin get` prints the plugin's fields and its bindings.
#[test]
fn get_prints_one_plugin() {
    let server = FakeServer::start();
    let stdout = ok(&server, &["plugin", "get", "acl"], "");
    assert_eq!(
        stdout,
        "\
name: acl
sha256: 3f2a9c1b0d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff
size: 48213
exports: cairn:plugin/guard@0.1.0

BINDING  PLUGIN  KIND   RANGE   FAILURE POLICY  CALLS  DENIALS  FAILURES  FUEL USED
acl-app  acl     guard  /app/*  fail-closed     12     1        0         93812
"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&server, &["-w", "json", "plugin", "get", "acl"], "")).unwrap();
    assert_eq!(json["bindings"][0]["name"], acl_binding().name);
    assert_eq!(server.recorded().gets[0].name, "acl");
}

/// A txn with a computed compare sends target CAIRN_COMPUTED with the binding as the key and
/// prints etcdctl's simple output.
#[test]
fn txn_with_computed_compare() {
    let server = FakeServer::start();
    let input = "\
computed(\"quota\", \"tenant-a\") < 100
value(\"k\") = \"v\"

put k v2
get k
del k
get none

put never ran
";
    let stdout = ok(&server, &["txn"], input);
    assert_eq!(stdout, "SUCCESS\n\nOK\n\nk\nv1\n\n1\n\n");

    let recorded = server.recorded();
    let txn = &recorded.txns[0];
    assert_eq!(
        txn.compare[0],
        Compare {
            result: CompareResult::Less as i32,
            target: CompareTarget::CairnComputed as i32,
            key: b"quota".to_vec(),
            computed: Some(CairnComputed {
                binding: "quota".to_owned(),
                argument: b"tenant-a".to_vec(),
                expected: Some(Expected::IntValue(100)),
            }),
            ..Compare::default()
        }
    );
    assert_eq!(txn.compare[1].target, CompareTarget::Value as i32);
    assert_eq!((txn.success.len(), txn.failure.len()), (4, 1));
}

/// A failed txn prints FAILURE and the failure ops' results; -w json prints the TxnResponse
/// as etcdctl does (Go's encoding/json: numbers as numbers, the op under `Response`).
#[test]
fn txn_failure_and_json() {
    let server = FakeServer::start();
    let input = "value(\"fail\") = \"x\"\n\nput k v\n\nget k\n";
    assert_eq!(ok(&server, &["txn"], input), "FAILURE\n\nk\nv1\n");

    let stdout = ok(
        &server,
        &["txn", "-w", "json"],
        "computed(\"b\") = \"yes\"\n\nput k v\n\n",
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["succeeded"], true);
    assert_eq!(json["header"]["revision"], 7);
    assert!(json["responses"][0]["Response"]["ResponsePut"].is_object());
    let recorded = server.recorded();
    let computed = recorded.txns[1].compare[0].computed.clone().unwrap();
    assert_eq!(
        computed.expected,
        Some(Expected::BytesValue(b"yes".to_vec()))
    );
}

/// Interactive mode prompts as etcdctl before each section.
#[test]
fn txn_interactive_prompts() {
    let server = FakeServer::start();
    let stdout = ok(&server, &["txn", "-i"], "\nput k v\n\n");
    assert_eq!(
        stdout,
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
         SUCCESS\n\nOK\n"
    );
}

/// A malformed txn fails before any request, with the line and what was expected.
#[test]
fn txn_syntax_errors_send_nothing() {
    let server = FakeServer::start();
    fails(
        &server,
        &["txn"],
        "computed(\"quota\", \"a\") > lots\n\nput k v\n",
        "bad compare \"computed(\"quota\", \"a\") > lots\": expected an integer or a quoted value \
         after the operator, found lots",
    );
    fails(
        &server,
        &["txn"],
        "\nput k\n",
        "bad op \"put k\": expected put <key> <value>",
    );
    assert_eq!(server.recorded().calls(), 0);
}

/// Endpoints take http:// and commas; the first one that answers serves the command.
#[test]
fn endpoints_fall_through_to_one_that_answers() {
    let server = FakeServer::start();
    let dead = dead_endpoint();
    let endpoints = format!("{dead},http://{}/", server.endpoint());
    let run = cairnctl(Some(&endpoints), &["plugin", "unbind", "x"], "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "unbound x\n"),
        "{}",
        run.stderr
    );
}

/// No endpoint answering is a one-line error per endpoint; bad endpoints are named.
#[test]
fn connection_errors_are_clear() {
    let dead = dead_endpoint();
    let run = cairnctl(Some(&dead), &["plugin", "list", "--dial-timeout", "1s"], "");
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .starts_with(&format!("Error: cannot connect to {dead}: ")),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // An https:// endpoint needs a CA to verify the server with.
    let run = cairnctl(Some("https://127.0.0.1:1"), &["plugin", "list"], "");
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            1,
            "Error: an https:// endpoint needs --cacert (or --insecure-skip-tls-verify)\n"
        )
    );
    let run = cairnctl(Some("ftp://127.0.0.1:1"), &["plugin", "list"], "");
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (
            1,
            "Error: invalid endpoint \"ftp://127.0.0.1:1\": only http:// and https:// endpoints are supported\n"
        )
    );
}

/// --command-timeout bounds each call: a server that does not answer gives etcdctl's
/// "context deadline exceeded" promptly.
#[test]
fn command_timeout_bounds_each_call() {
    let server = FakeServer::start();
    let started = Instant::now();
    fails(
        &server,
        &["plugin", "get", "slow", "--command-timeout", "300ms"],
        "",
        "context deadline exceeded",
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        server.recorded().grpc_timeouts,
        [Some("300000u".to_owned())]
    );
}

/// A loopback address nobody listens on: bound, then released.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
