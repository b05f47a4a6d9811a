//! Multi-member clusters for tests: Cairn or real etcd, started with the same etcd flags on
//! free loopback ports, each member its own process.
//!
//! Faults: `kill9` and `restart`, `pause` and `resume` (SIGSTOP / SIGCONT): what needs a real
//! process. Partitions, drops and delays between members run in-process (`inproc.rs`), through
//! a link filter that no flag of the `cairn` binary can install.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::Client;
use tempfile::TempDir;

use crate::process::{Guarded, binary_path, free_port, signal, spawn_logged, wait_for_port, which};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Cairn,
    Etcd,
}

/// One member process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    log: PathBuf,
    flavor: Flavor,
    args: Vec<String>,
    child: Option<Guarded>,
    id: std::sync::OnceLock<u64>,
    /// `http` or `https` (peer TLS).
    peer_scheme: &'static str,
}

impl Member {
    fn new(flavor: Flavor, name: &str, dir: &std::path::Path) -> Member {
        Member {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join(format!("{name}.data")),
            log: dir.join(format!("{name}.log")),
            flavor,
            args: Vec::new(),
            child: None,
            id: std::sync::OnceLock::new(),
            peer_scheme: "http",
        }
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the process with `self.args`; returns once its client port listens.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let bin = match self.flavor {
            Flavor::Cairn => binary_path(),
            Flavor::Etcd => which("etcd").unwrap_or_else(|| {
                panic!("etcd not found on PATH: the test command installs Debian's etcd-server")
            }),
        };
        let mut command = Command::new(bin);
        command.args(&self.args);
        let mut child = spawn_logged(command, &self.log);
        wait_for_port(
            self.client_port,
            &mut child,
            &self.log,
            Duration::from_secs(60),
        );
        self.child = Some(Guarded(child));
    }

    /// The exit status, if the process has ended by itself.
    pub fn has_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.0.try_wait().ok().flatten()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.take() {
            // SIGCONT first: a stopped process dies on SIGKILL too, but resume keeps ours tidy.
            signal(c.0.id(), rustix::process::Signal::CONT);
            drop(c);
        }
    }

    /// Starts again over the same data dir and ports, with the same flags.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Starts again over the same data dir with only `--name`, `--data-dir` and where to
    /// listen (and advertise clients): no `--initial-*` flag, so the member's identity and
    /// its cluster must come from the data dir. `extra` flags are appended.
    pub fn restart_from_data_dir(&mut self, extra: &[&str]) {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        self.args = member_args(self, None, &extra);
        self.spawn();
    }

    /// Runs the member's binary with `args` (its own flags are not used) and waits, bounded
    /// by `limit`, for it to exit by itself; returns whether it succeeded and its log.
    pub async fn run_to_exit(&mut self, args: &[String], limit: Duration) -> (bool, String) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let bin = match self.flavor {
            Flavor::Cairn => binary_path(),
            Flavor::Etcd => which("etcd").expect("etcd on PATH"),
        };
        let mut command = Command::new(bin);
        command.args(args);
        self.child = Some(Guarded(spawn_logged(command, &self.log)));
        let status = self.wait_for_exit(limit).await;
        (status.success(), self.log())
    }

    /// The flags this member was last started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Waits (bounded) for the process to exit on its own, and reaps it; fails with the end
    /// of its log if it is still running after `limit`.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.has_exited() {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "{} did not exit within {limit:?}; its log ends:\n{}",
                self.name,
                tail(&self.log(), 60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM: asks the member to stop cleanly.
    pub fn terminate(&self) {
        signal(
            self.pid().expect("SIGTERM to a stopped member"),
            rustix::process::Signal::TERM,
        );
    }

    /// SIGSTOP: the process freezes mid-whatever, holding its sockets open.
    pub fn pause(&self) {
        signal(
            self.pid().expect("pause of a stopped member"),
            rustix::process::Signal::STOP,
        );
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal(
            self.pid().expect("resume of a stopped member"),
            rustix::process::Signal::CONT,
        );
    }

    /// The sum of metric `name`'s samples on this member whose labels include `labels`, from
    /// its `/metrics` (a histogram counts its observations); `None` if the member does not
    /// answer.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        crate::process::metric(&self.endpoint(), name, labels).await
    }

    /// Waits (up to `limit`) until metric `name` (as [`Member::metric`]) satisfies `until`;
    /// panics with the last value otherwise.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        limit: Duration,
        until: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.metric(name, labels).await;
            if let Some(v) = value.filter(|v| until(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} on {} is {value:?} after {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The member's ID, from its own Status response (cached).
    pub async fn id(&self) -> u64 {
        if let Some(id) = self.id.get() {
            return *id;
        }
        let mut client = connect(&self.endpoint()).await;
        let status = client.status().await.expect("status of a member");
        let id = status.header().expect("status header").member_id();
        let _ = self.id.set(id);
        id
    }
}

/// A client with short timeouts, so a dead member fails a call quickly.
pub async fn connect(endpoint: &str) -> Client {
    try_connect(endpoint).await.expect("connect to a member")
}

/// [`connect`], for callers that expect members to be down at times.
pub async fn try_connect(endpoint: &str) -> Result<Client, etcd_client::Error> {
    try_connect_as(endpoint, None).await
}

/// A user's name and password.
pub type User<'a> = Option<(&'a str, &'a str)>;

/// [`try_connect`] as `user` (authenticating first), or anonymously.
pub async fn try_connect_as(endpoint: &str, user: User<'_>) -> Result<Client, etcd_client::Error> {
    let mut options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    if let Some((name, password)) = user {
        options = options.with_user(name, password);
    }
    Client::connect([endpoint], Some(options)).await
}

/// A cluster of member processes in one temporary directory.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub flavor: Flavor,
    token: String,
    extra_args: Vec<String>,
    dir: TempDir,
}

impl Drop for Cluster {
    /// A panicking test or benchmark keeps the members' logs (the data dir goes).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let to = std::env::temp_dir().join(format!("cairn-cluster-logs-{}", self.token));
            match self.keep_logs(&to) {
                Ok(()) => eprintln!("the cluster's member logs are kept in {}", to.display()),
                Err(e) => eprintln!("could not keep the cluster's member logs: {e}"),
            }
        }
    }
}

impl Cluster {
    /// Starts `size` founding members (`--initial-cluster-state new`) and waits until every
    /// one of them sees a leader.
    pub async fn start(flavor: Flavor, size: usize, extra_args: &[&str]) -> Cluster {
        Self::start_with(flavor, size, extra_args, None).await
    }

    /// [`Self::start`], the members talking to each other over TLS (`https://` peer URLs,
    /// `peer_tls`'s certificate presented and verified both ways) when it is given.
    pub async fn start_with(
        flavor: Flavor,
        size: usize,
        extra_args: &[&str],
        peer_tls: Option<&crate::inproc::PeerTls>,
    ) -> Cluster {
        let mut cluster = Cluster::prepare(flavor, size);
        cluster.start_prepared(extra_args, peer_tls).await;
        cluster
    }

    /// Starts the members of a [`Self::prepare`]d cluster as its founding members and waits
    /// until every one sees a leader (what [`Self::start_with`] does after preparing; a test
    /// may first put a member's data dir somewhere of its own).
    pub async fn start_prepared(
        &mut self,
        extra_args: &[&str],
        peer_tls: Option<&crate::inproc::PeerTls>,
    ) {
        let token = self.token.clone();
        let members = &mut self.members;
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        if let Some(t) = peer_tls {
            for m in members.iter_mut() {
                m.peer_scheme = "https";
            }
            extra_args.extend([
                format!("--peer-cert-file={}", t.pair.cert.display()),
                format!("--peer-key-file={}", t.pair.key.display()),
                format!("--peer-trusted-ca-file={}", t.ca.display()),
                "--peer-client-cert-auth".to_string(),
            ]);
        }
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        let initial = initial.join(",");
        for m in members.iter_mut() {
            let first = Initial {
                token: &token,
                cluster: &initial,
                state: "new",
            };
            m.args = member_args(m, Some(first), &extra_args);
        }
        // Spawned together: each waits for its client port only, and the first to listen
        // does so before the others have started (etcd waits for peers before it serves).
        std::thread::scope(|s| {
            for m in members.iter_mut() {
                s.spawn(move || m.spawn());
            }
        });
        self.extra_args = extra_args;
        self.wait_for_leader(Duration::from_secs(60)).await;
    }

    /// `size` members' ports and data dirs, none started: for data dirs made by something
    /// else (`snapshot restore`), then [`Self::start_from_data_dirs`].
    pub fn prepare(flavor: Flavor, size: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir for a cluster");
        let members = (0..size)
            .map(|i| Member::new(flavor, &format!("m{i}"), dir.path()))
            .collect();
        Cluster {
            members,
            flavor,
            token: format!("test-{}", free_port()),
            extra_args: Vec::new(),
            dir,
        }
    }

    /// The `--initial-cluster` value naming every member.
    pub fn initial_cluster(&self) -> String {
        let parts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect();
        parts.join(",")
    }

    /// The cluster's `--initial-cluster-token`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts every member from its data dir alone (no `--initial-*` flag) and waits until
    /// every one sees a leader.
    pub async fn start_from_data_dirs(&mut self) {
        std::thread::scope(|s| {
            for m in &mut self.members {
                s.spawn(move || m.restart_from_data_dir(&[]));
            }
        });
        self.wait_for_leader(Duration::from_secs(60)).await;
    }

    /// Copies every member's log into `to` (created), for a look after the cluster is gone.
    pub fn keep_logs(&self, to: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for m in &self.members {
            if m.log.exists() {
                std::fs::copy(&m.log, to.join(format!("{}.log", m.name)))?;
            }
        }
        Ok(())
    }

    /// Client endpoints of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.endpoint())
            .collect()
    }

    /// A new member's ports and data dir, not started: its peer URL goes into `member add`.
    pub fn prepare_member(&mut self, name: &str) -> usize {
        self.members
            .push(Member::new(self.flavor, name, self.dir.path()));
        self.members.len() - 1
    }

    /// Starts a prepared member with `--initial-cluster-state existing` and
    /// `--initial-cluster` listing it and the current members.
    pub fn start_joining(&mut self, index: usize, initial_cluster: &str) {
        let first = Initial {
            token: &self.token,
            cluster: initial_cluster,
            state: "existing",
        };
        let args = member_args(&self.members[index], Some(first), &self.extra_args);
        let m = &mut self.members[index];
        m.args = args;
        m.spawn();
    }

    /// The `--initial-cluster` value for the running members plus `extra` (name, peer URL).
    pub fn initial_cluster_with(&self, extra: usize) -> String {
        let mut parts: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, m)| m.is_running() || *i == extra)
            .map(|(_, m)| format!("{}={}", m.name, m.peer_url()))
            .collect();
        parts.sort();
        parts.join(",")
    }

    /// The index of the member that reports itself leader, if a running one does.
    pub async fn leader(&self) -> Option<usize> {
        self.leader_except(None).await
    }

    /// [`Self::leader`], asking every running member but `except` (a member that is frozen,
    /// whose answer would only cost the wait).
    pub async fn leader_except(&self, except: Option<usize>) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() || Some(i) == except {
                continue;
            }
            let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(2),
                Client::connect([m.endpoint()], None),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), client.status()).await
            else {
                continue;
            };
            let me = status.header().map(|h| h.member_id());
            if me.is_some() && Some(status.leader()) == me {
                return Some(i);
            }
        }
        None
    }

    /// Waits (bounded) until a running member leads and every running member knows a leader.
    pub async fn wait_for_leader(&self, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(leader) = self.leader().await
                && self.all_see_a_leader().await
            {
                return leader;
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log(), 40)))
                    .collect();
                panic!("no leader within {limit:?}; logs:\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills member `down` with SIGKILL and waits until member `observer` (which must stay up)
    /// counts it as down in its `etcd_network_active_peers` metric: for Cairn's leader, once
    /// it has not acknowledged heartbeats for two election timeouts (from then on the leader
    /// keeps no log entries for it); for etcd, once its connections broke. Returns the log
    /// index `down` had applied.
    pub async fn kill_and_wait_down(&mut self, down: usize, observer: usize) -> f64 {
        let remote = format!("{:x}", self.members[down].id().await);
        let applied = self.members[down]
            .metric("etcd_server_proposals_applied_total", &[])
            .await
            .expect("the member answers /metrics before it is killed");
        self.members[down].kill9();
        self.members[observer]
            .wait_for_metric(
                "etcd_network_active_peers",
                &[("Remote", remote.as_str())],
                Duration::from_secs(30),
                |active| active == 0.0,
            )
            .await;
        applied
    }

    /// Waits (up to `limit`) until Cairn member `leader` has purged its log past `index`, so
    /// a member that had applied up to `index` can only catch up by snapshot.
    pub async fn wait_purged_past(&self, leader: usize, index: f64, limit: Duration) {
        self.members[leader]
            .wait_for_metric("cairn_raft_log_purged_index", &[], limit, |purged| {
                purged > index
            })
            .await;
    }

    async fn all_see_a_leader(&self) -> bool {
        for m in self.members.iter().filter(|m| m.is_running()) {
            let seen = async {
                let mut client = Client::connect([m.endpoint()], None).await.ok()?;
                let status = client.status().await.ok()?;
                (status.leader() != 0).then_some(())
            };
            match tokio::time::timeout(Duration::from_secs(2), seen).await {
                Ok(Some(())) => {}
                _ => return false,
            }
        }
        true
    }
}

/// How a member enters its cluster the first time: `--initial-cluster-token`,
/// `--initial-cluster` and `--initial-cluster-state`.
struct Initial<'a> {
    token: &'a str,
    cluster: &'a str,
    state: &'a str,
}

/// The etcd flags of one member; Cairn takes the same ones. Without `initial`, only its name,
/// data dir and addresses (a restart that must take the rest from the data dir).
fn member_args(m: &Member, initial: Option<Initial<'_>>, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", m.name),
        format!("--data-dir={}", m.data_dir.display()),
        format!("--listen-client-urls={}", m.client_url()),
        format!("--advertise-client-urls={}", m.client_url()),
        format!("--listen-peer-urls={}", m.peer_url()),
    ];
    if let Some(initial) = initial {
        args.extend([
            format!("--initial-advertise-peer-urls={}", m.peer_url()),
            format!("--initial-cluster={}", initial.cluster),
            format!("--initial-cluster-state={}", initial.state),
            format!("--initial-cluster-token={}", initial.token),
        ]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
