//! Server processes for tests: Cairn (the binary built from this workspace) and real etcd
//! (Debian's `etcd-server`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port on 127.0.0.1 that was free a moment ago (bound, then released), for a server to
/// listen on.
///
/// Chosen at random below the kernel's ephemeral range, not by binding port 0: an ephemeral
/// port just released is soon handed to some outgoing connection (a client, a peer link),
/// and the server that meant to listen on it then fails with "address in use". Ports handed
/// out in this process are never handed out again, and each is reserved across processes
/// (test binaries, or two test runs at once) by a lock on a file named after it, held until
/// this process exits or gives it back ([`release_port`]).
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let reservations = std::env::temp_dir().join("cairn-test-ports");
    let _ = std::fs::create_dir_all(&reservations);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(12_000));
    let mut rng = rand::rng();
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..10_000 {
        let port = rng.random_range(low..high);
        if given.contains(&port) {
            continue;
        }
        given.insert(port);
        // Another process holding the port's lock has it (or is about to bind it).
        let Ok(reservation) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(reservations.join(port.to_string()))
        else {
            continue;
        };
        if reservation.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            RESERVED
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(port, reservation);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

/// The cross-process reservations [`free_port`] holds, by port (open files, each locked).
static RESERVED: std::sync::Mutex<std::collections::BTreeMap<u16, std::fs::File>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Gives back the cross-process reservation of `port` (closing its lock file), for a test
/// that takes many ports and is done with them; this process still never hands it out again.
pub fn release_port(port: u16) {
    RESERVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&port);
}

/// The `cairn` binary of this workspace. The test command builds it before running tests
/// (`cargo build --bins`); a missing binary is a hard failure, never a skip.
/// Runs this build's cairnctl against `endpoint`; panics unless it succeeds. Returns stdout.
pub fn cairnctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = Etcdctl::cairnctl(endpoint).run(args, None);
    assert!(
        out.status.success(),
        "cairnctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the plugin built from crate `crate_name` under `name`, through cairnctl.
pub fn install_plugin(endpoint: &str, name: &str, crate_name: &str) {
    let file = plugin_wasm(crate_name);
    let out = cairnctl_ok(
        endpoint,
        &[
            "plugin",
            "install",
            name,
            file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.contains("installed"), "{out}");
}

/// A plugin built by `scripts/build-plugins.sh` (the test command runs it first), as a core
/// wasm module.
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-unknown-unknown/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh (the test command does)",
        path.display()
    );
    path
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, or the one above the binaries.
pub fn target_dir() -> PathBuf {
    match std::env::var("CARGO_TARGET_DIR") {
        Ok(dir) => PathBuf::from(dir),
        // binary_path() is target/<profile>/cairn.
        Err(_) => binary_path()
            .parent()
            .and_then(|p| p.parent())
            .expect("target dir above the cairn binary")
            .to_path_buf(),
    }
}

pub fn binary_path() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    // Test binaries live in target/<profile>/deps/, tools in target/<profile>/; `cairn` is in
    // target/<profile>/.
    let exe = std::env::current_exe().expect("path of the running binary");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("cairn"))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "cairn binary not found at {:?}: run `cargo build --bins` first (the README's test command does), or set CAIRN_BIN",
            candidates
        )
    })
}

/// Runs `f` with a deadline, so a hung server fails the test instead of hanging CI.
pub async fn with_timeout<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Starts `command` with stdin closed and stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open server log {}: {e}", log.display()));
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log handle"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()))
}

/// Sends `sig` to process `pid`; a process that is already gone is not an error. (Directly,
/// not through kill(1): procps 4.0's kill reads some negative ids as -1, every process.)
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Guarded(pub(crate) Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls until `endpoint` accepts TCP connections.
pub(crate) fn wait_for_port(port: u16, child: &mut Child, log: &Path, limit: Duration) {
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited with {status} before listening; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < limit,
            "server did not listen on {port} within {limit:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Cairn member running as its own process.
#[derive(Debug)]
pub struct CairnNode {
    child: Option<Guarded>,
    pub port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    /// `http` or `https` (the client URL's scheme).
    pub scheme: &'static str,
    log: PathBuf,
    _dir: Option<TempDir>,
}

impl CairnNode {
    /// Starts a fresh single-member Cairn whose client URL is `https://` (the TLS flags are
    /// the caller's, in `extra_args`).
    pub fn start_https(extra_args: &[&str]) -> CairnNode {
        Self::start_with_scheme("https", extra_args)
    }

    /// Starts a fresh single-member Cairn in a new temporary data dir.
    pub fn start(extra_args: &[&str]) -> CairnNode {
        Self::start_with_scheme("http", extra_args)
    }

    /// Starts a single-member Cairn (`--name default`) over `data_dir`, which may already hold
    /// a member's state (one made by `cairnctl snapshot restore`, say).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> CairnNode {
        let log = data_dir.with_extension("log");
        Self::start_over("http", data_dir.to_path_buf(), log, extra_args)
    }

    fn start_with_scheme(scheme: &'static str, extra_args: &[&str]) -> CairnNode {
        let dir = tempfile::tempdir().expect("temp dir for a cairn data dir");
        let data_dir = dir.path().join("data");
        let log = dir.path().join("cairn.log");
        let mut node = Self::start_over(scheme, data_dir, log, extra_args);
        node._dir = Some(dir);
        node
    }

    fn start_over(
        scheme: &'static str,
        data_dir: PathBuf,
        log: PathBuf,
        extra_args: &[&str],
    ) -> CairnNode {
        let mut node = CairnNode {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            log,
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            scheme,
            _dir: None,
        };
        node.restart();
        node
    }

    /// Starts (again) over the same data dir and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running node");
        let url = format!("{}://127.0.0.1:{}", self.scheme, self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cairn = Command::new(binary_path());
        cairn
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .args(&self.extra_args);
        let mut child = spawn_logged(cairn, &self.log);
        wait_for_port(self.port, &mut child, &self.log, Duration::from_secs(30));
        self.child = Some(Guarded(child));
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        drop(self.child.take());
    }

    /// Waits (bounded) for the process to exit on its own, and reaps it.
    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut guarded = self.child.take().expect("wait_for_exit on a stopped node");
        let start = Instant::now();
        loop {
            if let Some(status) = guarded.0.try_wait().expect("try_wait on cairn") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "cairn did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A real etcd member (Debian's `etcd-server`) for differential tests.
#[derive(Debug)]
pub struct EtcdNode {
    _child: Guarded,
    pub port: u16,
    _dir: TempDir,
}

impl EtcdNode {
    /// Starts a fresh single-member etcd with `extra_args` added to its flags.
    pub fn start(extra_args: &[&str]) -> EtcdNode {
        Self::start_with_scheme("http", extra_args, &[])
    }

    /// [`Self::start`] with an `https://` client URL (the TLS flags in `extra_args`);
    /// `client_tls` are the etcdctl flags its health check needs.
    pub fn start_https(extra_args: &[&str], client_tls: &[&str]) -> EtcdNode {
        Self::start_with_scheme("https", extra_args, client_tls)
    }

    fn start_with_scheme(scheme: &str, extra_args: &[&str], client_tls: &[&str]) -> EtcdNode {
        let etcd = which("etcd").unwrap_or_else(|| {
            panic!("etcd not found on PATH: the test command installs Debian's etcd-server (apt-get install etcd-server etcd-client)")
        });
        let dir = tempfile::tempdir().expect("temp dir for an etcd data dir");
        let (port, peer) = (free_port(), free_port());
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.path().join("etcd.log");
        let mut command = Command::new(etcd);
        command
            .arg("--name=etcd-diff")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=etcd-diff={peer_url}"))
            .args(extra_args);
        let mut child = spawn_logged(command, &log_path);
        wait_for_port(port, &mut child, &log_path, Duration::from_secs(30));
        let node = EtcdNode {
            _child: Guarded(child),
            port,
            _dir: dir,
        };
        // etcd listens before it has elected itself; wait until it serves a write path read.
        let ctl = Etcdctl::new(&format!("{scheme}://{}", node.endpoint()));
        let mut health = client_tls.to_vec();
        health.extend(["endpoint", "health"]);
        let start = Instant::now();
        while !ctl.run(&health, None).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A client command running in the background, killed (and reaped) on drop.
#[derive(Debug)]
pub struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `etcdctl` (Debian's `etcd-client`) pointed at one endpoint.
#[derive(Debug, Clone)]
pub struct Etcdctl {
    endpoint: String,
    bin: PathBuf,
}

impl Etcdctl {
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// This build's `cairnctl`, run as etcdctl is (it takes etcdctl's global flags), for
    /// comparing the two clients' output.
    pub fn cairnctl(endpoint: &str) -> Etcdctl {
        Etcdctl {
            endpoint: endpoint.to_string(),
            bin: binary_path().with_file_name("cairnctl"),
        }
    }

    pub fn new(endpoint: &str) -> Etcdctl {
        let bin = which("etcdctl").unwrap_or_else(|| {
            panic!("etcdctl not found on PATH: the test command installs Debian's etcd-client")
        });
        Etcdctl {
            endpoint: endpoint.to_string(),
            bin,
        }
    }

    /// `<client> --endpoints=<endpoint> <args>`, speaking v3.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args);
        command
    }

    /// Starts a command that does not end by itself (`make-mirror`); it is killed when the
    /// returned guard drops.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        Running(child)
    }

    /// Runs a command that does not end by itself (`watch`) for `period`, then kills it and
    /// returns what it printed until then.
    pub fn run_for(&self, args: &[&str], period: Duration) -> Output {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        let pid = child.id();
        std::thread::sleep(period);
        // SIGKILL if it is still running; an exited process just makes `kill` fail.
        signal(pid, rustix::process::Signal::KILL);
        child.wait_with_output().expect("wait for etcdctl")
    }

    /// Runs `<args>` with the environment variables `env` and no flags of its own (neither
    /// `--endpoints` nor `--command-timeout`): for testing how the client reads its
    /// environment.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(&self.bin)
            .env("ETCDCTL_API", "3")
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    }

    /// Runs `etcdctl --endpoints=<endpoint> <args>` with optional stdin.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = self
            .command(&["--command-timeout=10s"])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(input.as_bytes())
                .expect("write etcdctl stdin");
        }
        child.wait_with_output().expect("wait for etcdctl")
    }
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Opens a Watch stream on `endpoint` over a connection of its own with the raw gRPC client
/// (messages up to 64 MiB) and sends `create` on it. Returns the responses and the request
/// side: dropping the sender closes the client's half of the stream.
pub async fn raw_watch(
    endpoint: &str,
    create: cairn_proto::etcdserverpb::WatchCreateRequest,
) -> (
    tonic::Streaming<cairn_proto::etcdserverpb::WatchResponse>,
    tokio::sync::mpsc::Sender<cairn_proto::etcdserverpb::WatchRequest>,
) {
    use cairn_proto::etcdserverpb::WatchRequest;
    use cairn_proto::etcdserverpb::watch_client::WatchClient;
    use cairn_proto::etcdserverpb::watch_request::RequestUnion;

    let mut client = WatchClient::connect(format!("http://{endpoint}"))
        .await
        .expect("connect watch")
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    };
    tx.send(create).await.expect("queue create");
    let stream = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    (stream, tx)
}

/// A client error as "Code: message" for a gRPC status (what tests compare between etcd and
/// Cairn), or the error's own text.
pub fn grpc_message(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

/// The sum of metric `name`'s samples in Prometheus text `text` whose labels include `labels`
/// (a histogram counts its observations; 0 when there is none).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return 0.0;
    };
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Metric `name` on the server at `endpoint` (host:port), as [`metric_value`]; `None` if it
/// does not answer `/metrics` within 5 s.
pub async fn metric(endpoint: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let url = format!("http://{endpoint}/metrics");
    let text = client.get(&url).send().await.ok()?.text().await.ok()?;
    Some(metric_value(&text, name, labels))
}

/// For tests without a runtime: waits (up to `limit`) until metric `name` on `endpoint`
/// satisfies `until`, polling every 50 ms; panics with the last value otherwise.
pub fn wait_for_metric_blocking(
    endpoint: &str,
    name: &str,
    limit: Duration,
    until: impl Fn(f64) -> bool,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the scrape");
    let deadline = std::time::Instant::now() + limit;
    loop {
        let value = runtime.block_on(metric(endpoint, name, &[]));
        if value.is_some_and(&until) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} on {endpoint} is {value:?} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
