//! TLS: etcdctl, cairnctl and curl over `https://` with client certificates, a certificate's
//! common name as the user, refusals that say why in the server's log, and certificates
//! rotated without a restart.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_tests::pki::{Ca, Pair};
use cairn_tests::{CairnNode, Etcdctl};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// etcdctl flags that present `client` and trust `ca`.
fn tls_args(ca: &Path, client: Option<&Pair>) -> Vec<String> {
    let mut args = vec![format!("--cacert={}", ca.display())];
    if let Some(c) = client {
        args.push(format!("--cert={}", c.cert.display()));
        args.push(format!("--key={}", c.key.display()));
    }
    args
}

fn run(ctl: &Etcdctl, tls: &[String], line: &str) -> Output {
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend(line.split(' '));
    ctl.run(&args, None)
}

/// Waits (bounded) until the server's log says `what`.
fn wait_for_log(node: &CairnNode, what: &str) {
    let start = Instant::now();
    while !node.log().contains(what) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the log never said {what:?}:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    server: Pair,
    root: Pair,
    alice: Pair,
    stranger: Pair,
    other_ca: Ca,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new(dir.path(), "test-ca");
    let other_ca = Ca::new(dir.path(), "other-ca");
    Pki {
        server: ca.issue("cairn-server", "server"),
        root: ca.issue("root", "root"),
        alice: ca.issue("alice", "alice"),
        stranger: other_ca.issue("root", "stranger"),
        ca,
        other_ca,
        _dir: dir,
    }
}

fn server_flags(p: &Pki) -> Vec<String> {
    vec![
        format!("--cert-file={}", p.server.cert.display()),
        format!("--key-file={}", p.server.key.display()),
        format!("--trusted-ca-file={}", p.ca.cert.display()),
        "--client-cert-auth".to_string(),
        "--bcrypt-cost=4".to_string(),
    ]
}

#[test]
fn etcdctl_over_tls_with_client_certificates_and_cn_as_user() {
    // Proves a member serving https:// with --client-cert-auth: etcdctl with the CA and a
    // client certificate works; with authentication on, the certificate's common name is the
    // user (root administers, alice is held to her role); plaintext, no client certificate
    // and a certificate from another CA are refused, each with a log line saying why; the
    // gateway and /health answer over TLS on the same port.
    let p = pki();
    let flags = server_flags(&p);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = CairnNode::start_https(&flags);
    let https = Etcdctl::new(&format!("https://{}", node.endpoint()));
    let as_root = tls_args(&p.ca.cert, Some(&p.root));
    let as_alice = tls_args(&p.ca.cert, Some(&p.alice));

    let put = run(&https, &as_root, "put k v");
    assert_eq!(stdout(&put), "OK\n", "{}", stderr(&put));
    for line in [
        "user add root:rootpw",
        "user grant-role root root",
        "role add app",
        "role grant-permission app readwrite /app/ --prefix=true",
        "user add --no-password alice",
        "user grant-role alice app",
        "auth enable",
    ] {
        let out = run(&https, &as_root, line);
        assert!(out.status.success(), "{line}: {}", stderr(&out));
    }
    // The certificate names the user: no token, no password.
    let out = run(&https, &as_alice, "put /app/x 1");
    assert_eq!(stdout(&out), "OK\n", "{}", stderr(&out));
    let out = run(&https, &as_alice, "put k v2");
    assert!(
        stderr(&out).contains("Error: etcdserver: permission denied"),
        "{}",
        stderr(&out)
    );
    let out = run(&https, &as_root, "user list");
    assert_eq!(stdout(&out), "alice\nroot\n", "{}", stderr(&out));
    // A token beats the certificate: alice's certificate with root's password is root.
    let mut with_user = as_alice.clone();
    with_user.push("--user=root:rootpw".into());
    let out = run(&https, &with_user, "role list");
    assert_eq!(stdout(&out), "app\n", "{}", stderr(&out));

    // Refusals, each logged with its reason (etcdctl retries until its command timeout).
    let short = |mut args: Vec<String>| {
        args.push("--command-timeout=2s".into());
        args
    };
    let out = run(&https, &short(tls_args(&p.ca.cert, None)), "get k");
    assert!(!out.status.success(), "no client certificate was accepted");
    wait_for_log(&node, "TLS connection refused");
    let stranger = short(tls_args(&p.ca.cert, Some(&p.stranger)));
    let out = run(&https, &stranger, "get k");
    assert!(
        !out.status.success(),
        "another CA's certificate was accepted"
    );
    let wrong_trust = short(tls_args(&p.other_ca.cert, Some(&p.root)));
    let out = run(&https, &wrong_trust, "get k");
    assert!(
        !out.status.success(),
        "a server certificate from an untrusted CA"
    );
    let plain = Etcdctl::new(&format!("http://{}", node.endpoint()));
    let out = plain.run(&["--command-timeout=2s", "get", "k"], None);
    assert!(!out.status.success(), "plaintext to a TLS port was served");
    wait_for_log(&node, "did not speak TLS");

    // The gateway and the probes share the port, over TLS.
    let curl = |path: &str, body: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "10"])
            .arg("--cacert")
            .arg(&p.ca.cert)
            .arg("--cert")
            .arg(&p.root.cert)
            .arg("--key")
            .arg(&p.root.key)
            .arg(format!("https://{}{path}", node.endpoint()));
        if let Some(b) = body {
            cmd.args(["-X", "POST", "-d", b]);
        }
        let out = cmd.output().expect("curl runs");
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let health = curl("/health", None);
    assert!(health.contains("\"health\":\"true\""), "{health}");
    // The gateway ignores the certificate's name, as etcd's: a token is needed.
    let refused = curl("/v3/kv/range", Some(r#"{"key":"aw=="}"#));
    assert!(refused.contains("user name is empty"), "{refused}");
}

#[test]
fn cairnctl_speaks_tls() {
    // Proves cairnctl's --cacert, --cert and --key against an https:// member with
    // --client-cert-auth, and that it refuses a server its CA does not vouch for.
    let p = pki();
    let flags = server_flags(&p);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = CairnNode::start_https(&flags);
    let cairnctl = Etcdctl::cairnctl(&format!("https://{}", node.endpoint()));
    let out = run(
        &cairnctl,
        &tls_args(&p.ca.cert, Some(&p.root)),
        "user add bob:pw",
    );
    assert_eq!(stdout(&out), "User bob created\n", "{}", stderr(&out));
    let out = run(
        &cairnctl,
        &tls_args(&p.other_ca.cert, Some(&p.root)),
        "user list",
    );
    assert!(!out.status.success(), "an untrusted server was accepted");
    let mut insecure = vec!["--insecure-skip-tls-verify".to_string()];
    insecure.extend(tls_args(&p.ca.cert, Some(&p.root)).into_iter().skip(1));
    let out = run(&cairnctl, &insecure, "user list");
    assert_eq!(stdout(&out), "bob\n", "{}", stderr(&out));
}

#[test]
fn certificates_rotate_without_a_restart() {
    // Proves the member re-reads its certificate files when they change: after the server
    // certificate, key and client CA are replaced by ones from a new CA, new connections use
    // them (clients trusting only the new CA get in) with no restart.
    let p = pki();
    let dir = tempfile::tempdir().expect("temp dir");
    let live = Pair {
        cert: dir.path().join("live.crt"),
        key: dir.path().join("live.key"),
    };
    let live_ca = dir.path().join("live-ca.crt");
    std::fs::copy(&p.server.cert, &live.cert).expect("copy");
    std::fs::copy(&p.server.key, &live.key).expect("copy");
    std::fs::copy(&p.ca.cert, &live_ca).expect("copy");
    let flags = [
        format!("--cert-file={}", live.cert.display()),
        format!("--key-file={}", live.key.display()),
        format!("--trusted-ca-file={}", live_ca.display()),
        "--client-cert-auth".to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = CairnNode::start_https(&flags);
    let https = Etcdctl::new(&format!("https://{}", node.endpoint()));
    let old = tls_args(&p.ca.cert, Some(&p.root));
    assert!(run(&https, &old, "put k v").status.success());

    let next = Ca::new(p.ca.cert.parent().expect("dir"), "next-ca");
    let next_server = next.issue("cairn-server", "next-server");
    let next_root = next.issue("root", "next-root");
    // Key first, then certificate, then CA: a reader between the writes sees a mismatch,
    // keeps the old ones and tries again.
    std::fs::copy(&next_server.key, &live.key).expect("rotate key");
    std::fs::copy(&next_server.cert, &live.cert).expect("rotate cert");
    std::fs::copy(&next.cert, &live_ca).expect("rotate CA");
    let new = tls_args(&next.cert, Some(&next_root));
    let start = Instant::now();
    loop {
        let out = run(&https, &new, "get k --print-value-only");
        if stdout(&out) == "v\n" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the rotated certificates were never used: {}\n{}",
            stderr(&out),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = run(&https, &old, "get k");
    assert!(
        !out.status.success(),
        "the old CA still works after rotation"
    );
}

#[test]
fn auto_tls_serves_a_self_signed_certificate() {
    // Proves --auto-tls: the member makes a certificate in its data dir and serves https://
    // with it; etcdctl gets in with --insecure-skip-tls-verify (and etcdctl 3.4's
    // --insecure-transport=false) and not without.
    let node = CairnNode::start_https(&["--auto-tls"]);
    let https = Etcdctl::new(&format!("https://{}", node.endpoint()));
    let out = https.run(
        &[
            "--insecure-transport=false",
            "--insecure-skip-tls-verify",
            "put",
            "k",
            "v",
        ],
        None,
    );
    assert_eq!(stdout(&out), "OK\n", "{}", stderr(&out));
    let out = https.run(&["--dial-timeout=2s", "get", "k"], None);
    assert!(
        !out.status.success(),
        "an unverifiable certificate was trusted"
    );
    assert!(node.data_dir.join("fixtures/client/cert.pem").exists());
}
