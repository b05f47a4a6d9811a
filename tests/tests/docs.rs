//! The shell examples of README.md, docs/operations.md and docs/security.md, run as written.
//!
//! Each session runs its examples with bash inside network and PID namespaces of its own
//! (`unshare -n -p`, loopback only), so the fixed ports the docs use (2379, 12379, …) are free
//! whatever else runs on the machine, the servers the examples start cannot meet anything
//! outside, and the examples' `pkill`/`pgrep` see only the session's processes. When the
//! session's shell ends, the kernel ends everything it started. Two kinds of block:
//! - a **transcript** (lines starting with `$ `): each command runs, and the lines under it
//!   must be its output (`…` stands for any text); a command with no lines under it is only
//!   run;
//! - a **script** (no prompts): it runs under `set -e`, so every command must succeed.
//!
//! What the examples name is mapped onto this build, and nothing else is changed:
//! `cargo run --release --bin cairn --` and `./target/release/cairn` run the `cairn` built for
//! the tests, `cargo run --release --bin cairnctl --` the `cairnctl`, and
//! `./scripts/build-plugins.sh` (which the test command has already run) checks that its
//! output is there. The README's first screen (build, run every test) is what CI itself runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::binary_path;

/// One command of a transcript and the output the docs show for it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

#[derive(Debug)]
enum Block {
    Transcript(Vec<Step>),
    Script(String),
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The `sh` code blocks of `file` between the headings `from` and `to` (exclusive).
fn blocks(file: &str, from: &str, to: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(file)).expect("read the docs");
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{file} has no {from:?}"));
    let end = text[start..].find(to).map_or(text.len(), |e| start + e);
    let mut out = Vec::new();
    let mut rest = &text[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body_start = open + "```sh\n".len();
        let close = rest[body_start..]
            .find("```")
            .map(|c| body_start + c)
            .expect("an unclosed code block");
        out.push(parse(&rest[body_start..close]));
        rest = &rest[close + 3..];
    }
    assert!(!out.is_empty(), "no sh block in {file} under {from:?}");
    out
}

fn parse(body: &str) -> Block {
    if !body.lines().any(|l| l.starts_with("$ ")) {
        return Block::Script(body.to_string());
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = body.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(first) = line.strip_prefix("$ ") {
            let mut command = first.to_string();
            // Continuation lines and here-documents belong to the command.
            while command.ends_with('\\') {
                command.push('\n');
                command.push_str(lines.next().expect("a continued line"));
            }
            if let Some(at) = command.find("<<'") {
                let marker: String = command[at + 3..]
                    .chars()
                    .take_while(|c| *c != '\'')
                    .collect();
                for next in lines.by_ref() {
                    command.push('\n');
                    command.push_str(next);
                    if next == marker {
                        break;
                    }
                }
            }
            steps.push(Step {
                command,
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        }
    }
    Block::Transcript(steps)
}

/// What an example names, pointed at this build.
fn map_names(command: &str, plugins: &Path) -> String {
    command
        .replace("cargo run --release --bin cairnctl --", "cairnctl")
        .replace("cargo run --release --bin cairn --", "cairn")
        .replace(
            "./scripts/build-plugins.sh",
            &format!("test -s {}/json_schema_guard.wasm", plugins.display()),
        )
}

/// Whether `actual` is what the docs show as `expected` (`…` is any text).
fn line_matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let mut rest = actual;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Runs `blocks` in a fresh directory and network namespace; checks every transcript.
fn run_session(name: &str, blocks: &[Block]) {
    let dir = tempfile::tempdir().expect("session dir");
    let work = dir.path();
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let debug = binary_path();
    let built = debug.parent().expect("target dir").to_path_buf();
    std::os::unix::fs::symlink(&debug, bin.join("cairn")).expect("link cairn");
    std::os::unix::fs::symlink(built.join("cairnctl"), bin.join("cairnctl"))
        .expect("link cairnctl");
    // The repository's Procfile, which docs/operations.md runs from the checkout.
    std::fs::copy(repo().join("Procfile"), work.join("Procfile")).expect("copy the Procfile");
    // ./target/release/cairn and target/wasm32-unknown-unknown/release/*.wasm, as the docs
    // name them.
    std::fs::create_dir_all(work.join("target/release")).expect("target dir");
    std::os::unix::fs::symlink(&debug, work.join("target/release/cairn")).expect("link");
    // Where this build put the plugins: beside `debug/`, in the target dir it used (which
    // CARGO_TARGET_DIR may have moved out of the repository).
    let target = built.parent().expect("target dir above the profile dir");
    let wasm = target.join("wasm32-unknown-unknown");
    std::os::unix::fs::symlink(&wasm, work.join("target/wasm32-unknown-unknown"))
        .expect("link wasm");
    let plugins = work.join("target/wasm32-unknown-unknown/release");

    let mut script = String::from(
        "set -u\nip link set lo up\ntrap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT\n",
    );
    let mut checks = Vec::new();
    for block in blocks {
        match block {
            Block::Script(text) => {
                script.push_str("set -e\n");
                script.push_str(&map_names(text, &plugins));
                script.push_str("\nset +e\n");
            }
            Block::Transcript(steps) => {
                for step in steps {
                    let n = checks.len();
                    let command = map_names(&step.command, &plugins);
                    // The command without a trailing `# comment`.
                    let code = command.split(" #").next().unwrap_or(&command).trim_end();
                    if code.ends_with('&') {
                        // A server: its log, not its output, is what the step produces. The
                        // next command is typed once it answers, as a person would wait (a
                        // TLS member: once its port takes connections; the clients wait for
                        // it to serve them).
                        let line = code.trim_end_matches('&');
                        let ready = if line.contains("https://") {
                            "(exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null"
                        } else {
                            "etcdctl endpoint health >/dev/null 2>&1"
                        };
                        script.push_str(&format!(
                            "{line} > step{n}.log 2>&1 &\n\
                             for _ in $(seq 600); do {ready} && break; sleep 0.1; done\n"
                        ));
                    } else {
                        script.push_str(&format!("{{\n{command}\n}} > step{n}.out 2>&1\n"));
                    }
                    checks.push(step);
                }
            }
        }
    }
    script.push_str("echo session-complete > complete\n");
    std::fs::write(work.join("session.sh"), &script).expect("write script");

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new("unshare")
            .args([
                "--net",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "bash",
                "session.sh",
            ])
            .current_dir(work)
            .env("PATH", path)
            .env("ETCDCTL_API", "3")
            // A slow machine may take a while to start a member: etcdctl waits for it.
            .env("ETCDCTL_DIAL_TIMEOUT", "30s")
            .env("ETCDCTL_COMMAND_TIMEOUT", "30s")
            .env_remove("ETCDCTL_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("session.log")).expect("log"))
            .stderr(std::fs::File::create(work.join("session.err")).expect("log"))
            .process_group(0)
            .spawn()
            .expect("unshare (util-linux) runs the session")
    };
    let limit = Duration::from_secs(240);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The session's process group: unshare, the shell and every server it left behind. (Not
    // through kill(1): procps 4.0's kill takes some negative ids for -1, every process.)
    if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.wait();
    let read = |f: &str| std::fs::read_to_string(work.join(f)).unwrap_or_default();
    let context = || {
        format!(
            "session {name}:\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
            read("session.log"),
            read("session.err")
        )
    };
    assert!(status.is_some(), "timed out after {limit:?}\n{}", context());
    assert!(
        work.join("complete").exists(),
        "a script command failed\n{}",
        context()
    );
    for (n, step) in checks.iter().enumerate() {
        if step.expected.is_empty() {
            continue;
        }
        let out = read(&format!("step{n}.out"));
        // etcdctl 3.4 logs its client retries as JSON on stderr; they are not output.
        let actual: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with("{\"level\":\"warn\""))
            .collect();
        let ok = actual.len() == step.expected.len()
            && step
                .expected
                .iter()
                .zip(&actual)
                .all(|(e, a)| line_matches(e, a));
        assert!(
            ok,
            "session {name}: `{}` printed\n{}\nbut the docs show\n{}",
            step.command,
            actual.join("\n"),
            step.expected.join("\n")
        );
    }
}

#[test]
fn readme_single_member_examples_run_as_written() {
    // Proves the README's etcdctl, curl and plugin transcripts print what the README shows,
    // each against a member started as the README starts it.
    run_session(
        "etcdctl",
        &blocks(
            "README.md",
            "## Using it with etcdctl",
            "## Using it with curl",
        ),
    );
    let mut curl = vec![parse_start()];
    curl.extend(blocks(
        "README.md",
        "## Using it with curl",
        "## A guard plugin",
    ));
    run_session("curl", &curl);
    let mut guard = vec![parse_start()];
    guard.extend(blocks(
        "README.md",
        "## A guard plugin",
        "## A 3-member cluster",
    ));
    run_session("guard plugin", &guard);
}

#[test]
fn security_examples_run_as_written() {
    // Proves docs/security.md's transcripts print what they show: users and roles, turning
    // authentication on, `--user`, the gateway with `Authorization`, the multi-tenant layout.
    let mut session = vec![parse_start()];
    session.extend(blocks(
        "docs/security.md",
        "## Users and roles",
        "## What each request needs",
    ));
    run_session("security", &session);
}

#[test]
fn security_tls_examples_run_as_written() {
    // Proves docs/security.md's TLS example: the openssl commands make a CA and certificates
    // a member accepts; etcdctl, cairnctl and curl with them get in, etcdctl without a client
    // certificate does not.
    run_session(
        "security-tls",
        &blocks("docs/security.md", "## TLS", "## Not built yet"),
    );
}

/// The README's way of starting a single member, for the sections that assume one.
fn parse_start() -> Block {
    Block::Transcript(vec![Step {
        command: "cargo run --release --bin cairn -- --name n1 &".to_string(),
        expected: Vec::new(),
    }])
}

#[test]
fn cluster_examples_run_as_written() {
    // Proves the README's 3-member cluster and docs/operations.md's restart, replacement and
    // quorum-loss recovery run in sequence as written, ending with the README's write still
    // there on the recovered member.
    let mut session = blocks("README.md", "## A 3-member cluster", "## Flags");
    session.extend(blocks(
        "docs/operations.md",
        "## Restarting",
        "## Watch memory",
    ));
    run_session("cluster", &session);
}

#[test]
fn procfile_cluster_runs_as_written() {
    // Proves the repository's Procfile starts a 3-member cluster that elects a leader and
    // takes writes, run as docs/operations.md runs it without a Procfile runner.
    run_session(
        "procfile",
        &blocks("docs/operations.md", "## Running it", "## Restarting"),
    );
}

#[test]
fn starting_a_member_runs_as_written() {
    // Proves docs/operations.md's first example starts a member that serves.
    let mut session = blocks("docs/operations.md", "## Starting a member", "## Clusters");
    session.push(Block::Script(
        "until etcdctl endpoint health; do sleep 1; done\netcdctl put started yes\n".to_string(),
    ));
    run_session("starting a member", &session);
}
