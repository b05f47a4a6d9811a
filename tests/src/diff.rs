//! Differential sessions: the same etcdctl (or cairnctl) commands against a fresh etcd and a
//! fresh Cairn, compared after zeroing what legitimately differs (cluster and member IDs, the
//! Raft term) and dropping the clients' own logging.

use std::process::Output;

use crate::{CairnNode, EtcdNode, Etcdctl};

/// One etcdctl invocation: arguments and optional stdin (for `txn`).
#[derive(Clone, Debug)]
pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

pub fn cmd(line: &str) -> Step {
    Step {
        args: split(line),
        stdin: None,
    }
}

/// Splits on spaces, with '...' quoting for arguments that contain spaces or are empty.
pub fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Replaces the number after `"key":` with 0 everywhere in `text`.
pub fn zero_field(text: &str, key: &str) -> String {
    let pattern = format!("\"{key}\":");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&pattern) {
        let after = i + pattern.len();
        out.push_str(&rest[..after]);
        let digits = rest[after..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .count();
        out.push('0');
        rest = &rest[after + digits..];
    }
    out.push_str(rest);
    out
}

/// Zeroes the identity lines of etcdctl's `fields` format (`"ClusterID" : 123`).
pub fn zero_fields_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            for key in ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "] {
                if line.starts_with(key) {
                    return format!("{key}0");
                }
            }
            line.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What is compared: exit status, stdout with identity fields zeroed, and the `Error:` lines
/// of stderr (the rest of stderr is client logging with timestamps and random ids).
pub fn normalize(out: &Output) -> String {
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    for key in ["cluster_id", "member_id", "raft_term"] {
        stdout = zero_field(&stdout, key);
    }
    stdout = zero_fields_lines(&stdout);
    let errors: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect();
    format!(
        "exit: {:?}\nstdout:\n{stdout}\nerrors: {errors:?}",
        out.status.code()
    )
}

/// Runs `steps` through etcdctl against a fresh etcd and a fresh Cairn (both started with
/// `flags`); panics with every step whose normalized output differs.
pub fn assert_sessions_match(flags: &[&str], steps: &[Step]) {
    assert_clients_match(flags, steps, Etcdctl::new);
}

/// [`assert_sessions_match`], with Cairn driven by the client `on_cairn` makes (etcdctl, or
/// cairnctl where it must print what etcdctl prints).
pub fn assert_clients_match(flags: &[&str], steps: &[Step], on_cairn: fn(&str) -> Etcdctl) {
    let etcd = EtcdNode::start(flags);
    let cairn = CairnNode::start(flags);
    let (on_etcd, on_cairn) = (Etcdctl::new(&etcd.endpoint()), on_cairn(&cairn.endpoint()));
    let mut mismatches = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let want = normalize(&on_etcd.run(&args, step.stdin.as_deref()));
        let got = normalize(&on_cairn.run(&args, step.stdin.as_deref()));
        if std::env::var_os("CAIRN_DIFF_DUMP").is_some() {
            eprintln!("=== step {i}: {}\n{got}", args.join(" "));
        }
        if want != got {
            mismatches.push(format!(
                "step {i}: {}{}\n--- etcd\n{want}\n--- cairn\n{got}",
                args.join(" "),
                step.stdin
                    .as_deref()
                    .map(|s| format!(" <<< {s:?}"))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} steps differ:\n\n{}\n\ncairn log:\n{}",
        mismatches.len(),
        steps.len(),
        mismatches.join("\n\n"),
        cairn.log()
    );
}
