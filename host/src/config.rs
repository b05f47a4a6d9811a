//! The server's flags: etcd's names and defaults, each also readable from `CAIRN_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use thiserror::Error;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: an etcd v3 compatible key-value store"
)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "CAIRN_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: `<name>.cairn`).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic, comma-separated [default: http://localhost:2379].
    /// Setting it requires --advertise-client-urls, as etcd requires.
    #[arg(long, env = "CAIRN_LISTEN_CLIENT_URLS", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,

    /// URLs to serve HTTP on (the JSON gateway, /health, /version, /metrics), comma-separated.
    /// When set, the client URLs serve only gRPC.
    #[arg(long, env = "CAIRN_LISTEN_CLIENT_HTTP_URLS", value_delimiter = ',')]
    pub listen_client_http_urls: Vec<String>,

    /// Extra URLs that serve only /metrics and the health probes, comma-separated.
    #[arg(long, env = "CAIRN_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,

    /// Client URLs of this member advertised to the cluster, comma-separated
    /// [default: http://localhost:2379].
    #[arg(long, env = "CAIRN_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,

    /// URLs to listen on for traffic from the other members, comma-separated.
    #[arg(
        long,
        env = "CAIRN_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,

    /// Peer URLs of this member advertised to the cluster (part of the member ID). Read only
    /// when the data dir is new.
    #[arg(
        long,
        env = "CAIRN_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// The founding members, `name=peerURL,...` (a name may appear once per peer URL)
    /// [default: `<name>=<url>` for each --initial-advertise-peer-urls]. Read only when the
    /// data dir is new.
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// `new` to found a cluster, `existing` to join one that `member add` prepared. Read only
    /// when the data dir is new.
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// Token that keeps members of different clusters apart (part of every member ID). Read
    /// only when the data dir is new.
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Disaster recovery: make this member, with the data in its data dir, the only member of
    /// its cluster (etcd's flag). Entries it never knew committed are dropped. Start it once
    /// with this flag, then without; add new members with `member add`.
    #[arg(long, env = "CAIRN_FORCE_NEW_CLUSTER")]
    pub force_new_cluster: bool,

    /// Applied Raft entries between snapshots (after which the log is compacted).
    #[arg(long, env = "CAIRN_SNAPSHOT_COUNT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_count: u64,

    /// Log entries kept behind a snapshot for members that lag; a member further behind
    /// catches up by receiving a snapshot.
    #[arg(
        long,
        env = "CAIRN_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000
    )]
    pub experimental_snapshot_catchup_entries: u64,

    /// Refuse membership changes that would leave the cluster without a quorum of started
    /// members, or that need members the leader has not heard from lately (etcd's rule).
    #[arg(long, env = "CAIRN_STRICT_RECONFIG_CHECK", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub strict_reconfig_check: bool,

    /// Largest client request Cairn accepts, in bytes.
    #[arg(long, env = "CAIRN_MAX_REQUEST_BYTES", default_value_t = 1_572_864, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_request_bytes: u32,

    /// Most operations in one Txn (compares, success ops or failure ops).
    #[arg(long, env = "CAIRN_MAX_TXN_OPS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_txn_ops: u32,

    /// Time between leader heartbeats, in milliseconds.
    #[arg(long, env = "CAIRN_HEARTBEAT_INTERVAL", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval: u64,

    /// Time a follower waits without a heartbeat before it campaigns, in milliseconds.
    #[arg(long, env = "CAIRN_ELECTION_TIMEOUT", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub election_timeout: u64,

    /// Period of progress notifications to watchers that ask for them (Go-style duration:
    /// `500ms`, `10s`, `10m`, `1h`).
    #[arg(
        long,
        env = "CAIRN_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m"
    )]
    pub watch_progress_notify_interval: GoDuration,

    /// How often the server pings a client connection that has been quiet (etcd's flag and
    /// default); a client that does not answer within --grpc-keepalive-timeout is
    /// disconnected (Go-style duration).
    #[arg(long, env = "CAIRN_GRPC_KEEPALIVE_INTERVAL", default_value = "2h")]
    pub grpc_keepalive_interval: GoDuration,

    /// How long a keepalive ping waits for its answer (Go-style duration).
    #[arg(long, env = "CAIRN_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub grpc_keepalive_timeout: GoDuration,

    /// Most concurrent HTTP/2 streams (RPCs, watch and keepalive streams) one client
    /// connection may hold (etcd's default: 2^32 - 1, no limit in practice).
    #[arg(long, env = "CAIRN_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// `basic` or `extensive`: `extensive` also exports the gRPC handling-time histograms
    /// (`grpc_server_handling_seconds`), as etcd does.
    #[arg(long, env = "CAIRN_METRICS", value_enum, default_value_t = MetricsLevel::Basic)]
    pub metrics: MetricsLevel,

    /// A YAML file with etcd's configuration keys (the flags' names, as in etcd's
    /// `etcd.conf.yml`). Flags and `CAIRN_*` variables win over it.
    #[arg(long, env = "CAIRN_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// How often the leader records remaining lease TTLs through Raft, so that a new leader
    /// continues each lease's countdown instead of restarting it (Go-style duration).
    #[arg(
        long,
        env = "CAIRN_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5m"
    )]
    pub experimental_lease_checkpoint_interval: GoDuration,

    /// The state database may grow to this many bytes; a write that would take it further
    /// raises the NOSPACE alarm and is refused (0: etcd's default, 2 GiB; negative: no quota,
    /// though a nearly full disk still raises the alarm).
    #[arg(
        long,
        env = "CAIRN_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,

    /// Auto-compaction: `periodic` (keep `--auto-compaction-retention` of time) or
    /// `revision` (keep that many revisions).
    #[arg(long, env = "CAIRN_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,

    /// How much history auto-compaction keeps: for `periodic`, a duration (`30m`) or a number
    /// of hours (`1`); for `revision`, a number of revisions. `0` turns it off.
    #[arg(long, env = "CAIRN_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// How often `revision` auto-compaction checks (Cairn's own; etcd fixes it at 5m).
    #[arg(
        long,
        env = "CAIRN_AUTO_COMPACTION_CHECK_INTERVAL",
        default_value = "5m"
    )]
    pub auto_compaction_check_interval: GoDuration,

    /// Before serving, compare this member's HashKV with every peer's at its revision, and
    /// refuse to start on a mismatch.
    #[arg(long, env = "CAIRN_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub experimental_initial_corrupt_check: bool,

    /// How often the leader compares its HashKV with every follower's (a Go duration; `0s`,
    /// the default, turns it off); a follower that differs gets a CORRUPT alarm.
    #[arg(
        long,
        env = "CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s"
    )]
    pub experimental_corrupt_check_time: String,

    /// Cost of the bcrypt hashes of user passwords (4 to 31, as etcd).
    #[arg(long, env = "CAIRN_BCRYPT_COST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,

    /// How clients' auth tokens are made: `simple` (HS256 JWTs signed with a key the cluster
    /// replicates, accepted by every member) or `jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG,ttl=DURATION`
    /// (RS256/384/512, PS256/384/512, ES256/384, HS256/384/512), as etcd's flag.
    #[arg(long, env = "CAIRN_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// Lifetime of a simple token, in seconds.
    #[arg(long, env = "CAIRN_AUTH_TOKEN_TTL", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub auth_token_ttl: u64,

    /// Client TLS: this member's certificate for `https://` client URLs.
    #[arg(long, env = "CAIRN_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Client TLS: the key of `--cert-file`.
    #[arg(long, env = "CAIRN_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Client TLS: the CA bundle that verifies client certificates.
    #[arg(long, env = "CAIRN_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Client TLS: require a client certificate signed by `--trusted-ca-file`; its common
    /// name is then the user of a request that carries no token.
    #[arg(long, env = "CAIRN_CLIENT_CERT_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: bool,

    /// Client TLS with a self-signed certificate made in the data dir (clients cannot verify
    /// it: etcdctl needs `--insecure-skip-tls-verify`).
    #[arg(long, env = "CAIRN_AUTO_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auto_tls: bool,

    /// Peer TLS: this member's certificate for `https://` peer URLs, also presented to peers.
    #[arg(long, env = "CAIRN_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Peer TLS: the key of `--peer-cert-file`.
    #[arg(long, env = "CAIRN_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Peer TLS: the CA bundle that verifies peers' certificates.
    #[arg(long, env = "CAIRN_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Peer TLS: require peers to present a certificate signed by `--peer-trusted-ca-file`.
    #[arg(long, env = "CAIRN_PEER_CLIENT_CERT_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: bool,

    /// Peer TLS with self-signed certificates made in the data dir; peers then accept each
    /// other's certificates unverified unless `--peer-trusted-ca-file` is given (as etcd).
    #[arg(long, env = "CAIRN_PEER_AUTO_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub peer_auto_tls: bool,

    /// Peer TLS: accept only peer client certificates with this common name.
    #[arg(long, env = "CAIRN_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,

    /// Years an `--auto-tls`/`--peer-auto-tls` certificate is valid.
    #[arg(long, env = "CAIRN_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub self_signed_cert_validity: u32,

    /// Oldest TLS version accepted and offered: TLS1.2 or TLS1.3.
    #[arg(long, env = "CAIRN_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: crate::net::tls::MinVersion,

    /// TLS 1.2 cipher suites allowed, by Go's names, comma-separated (default: rustls's).
    #[arg(long, env = "CAIRN_CIPHER_SUITES", value_delimiter = ',')]
    pub cipher_suites: Vec<String>,

    /// Faults between members run in one process (tests only; no flag sets it, see
    /// `raft/transport/filter.rs`).
    #[arg(skip)]
    pub link_filter: crate::raft::transport::filter::Filter,

    /// Log level: debug, info, warn or error (etcd's panic and fatal log errors only).
    #[arg(long, env = "CAIRN_LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,

    /// The logger: etcd's `zap` (the only one; its `capnslog` is gone from etcd 3.5).
    #[arg(long, env = "CAIRN_LOGGER", default_value = "zap", value_parser = ["zap"])]
    pub logger: String,

    /// Where logs go, comma-separated: `default` or `stderr`, `stdout`, or file paths.
    #[arg(
        long,
        env = "CAIRN_LOG_OUTPUTS",
        default_value = "default",
        value_delimiter = ','
    )]
    pub log_outputs: Vec<String>,

    /// Log line format: `text` (zap's `console`; coloured only on a terminal) or `json` (one
    /// object per line with etcd's field names).
    #[arg(long, env = "CAIRN_LOG_FORMAT", value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

/// `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsLevel {
    Basic,
    Extensive,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--initial-cluster: {0}")]
    InitialCluster(String),
    /// A flag whose value does not parse (auto-compaction, the corruption check).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "--election-timeout ({election}ms) must be at least 5 times --heartbeat-interval ({heartbeat}ms)"
    )]
    Timing { election: u64, heartbeat: u64 },
    /// etcd's rule and words: a member listening on chosen addresses must say where clients
    /// reach it, or it would advertise another server's default address.
    #[error("--advertise-client-urls is required when --listen-client-urls is set explicitly")]
    UnsetAdvertiseClientUrls,
    #[error("--auth-token: {0}")]
    AuthToken(String),
    #[error("{0}")]
    Tls(String),
}

/// etcd's default client and peer URLs.
const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";

/// A duration written as etcd's flags write them: a number and a unit (`ms`, `s`, `m`, `h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoDuration(pub std::time::Duration);

impl std::str::FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s or 10m"))?;
        let millis = match unit {
            "ms" => n,
            "s" => n * 1000,
            "m" => n * 60_000,
            "h" => n * 3_600_000,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
        };
        if millis == 0 {
            return Err(format!("{s:?}: must be positive"));
        }
        Ok(GoDuration(std::time::Duration::from_millis(millis)))
    }
}

/// A parsed `http://host:port` listen URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `https://`: served over TLS.
    pub tls: bool,
}

/// The names a self-signed certificate covers: every listen host, and localhost.
fn auto_tls_hosts(urls: &[ListenUrl]) -> Vec<String> {
    let mut hosts: Vec<String> = urls.iter().map(|u| u.host.clone()).collect();
    hosts.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    hosts.sort();
    hosts.dedup();
    hosts
}

impl Config {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    /// Checks what clap cannot: URL shapes, flags that need each other, timing relations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen_client_urls.is_empty() && self.advertise_client_urls.is_empty() {
            return Err(ConfigError::UnsetAdvertiseClientUrls);
        }
        self.client_listen_urls()?;
        self.peer_listen_urls()?;
        self.auto_compaction()?;
        self.corrupt_check_every()?;
        // etcd requires election timeout >= 5 x heartbeat interval.
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Timing {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        Ok(())
    }

    /// The TLS of `https://` client, HTTP and metrics URLs (`None` if none is https).
    pub fn client_tls(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<Option<std::sync::Arc<crate::net::tls::ServerTls>>, ConfigError> {
        use crate::net::tls::{ServerTls, TlsOptions, self_signed};
        let urls: Vec<ListenUrl> = [
            self.client_listen_urls()?,
            self.client_http_listen_urls()?,
            self.metrics_listen_urls()?,
        ]
        .concat();
        let Some(first) = urls.iter().find(|u| u.tls) else {
            return Ok(None);
        };
        let tls_err = |e: crate::net::tls::TlsError| ConfigError::Tls(format!("client TLS: {e}"));
        let cert = match (&self.cert_file, &self.key_file, self.auto_tls) {
            (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
            (None, None, true) => {
                let hosts = auto_tls_hosts(&urls);
                self_signed(
                    &data_dir.join("fixtures").join("client"),
                    &hosts,
                    self.self_signed_cert_validity,
                )
                .map_err(tls_err)?
            }
            _ => {
                return Err(ConfigError::Tls(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                    first.url
                )));
            }
        };
        ServerTls::server(TlsOptions {
            cert: Some(cert),
            trusted_ca: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            allowed_cn: None,
            insecure_skip_verify: false,
            min_version: self.tls_min_version,
            cipher_suites: self.cipher_suites.clone(),
        })
        .map(Some)
        .map_err(tls_err)
    }

    /// Peer TLS, when this member's peer URLs are `https://`: the listener's and the one
    /// this member connects to its peers with.
    pub fn peer_tls(
        &self,
        data_dir: &std::path::Path,
    ) -> Result<Option<crate::net::tls::PeerTls>, ConfigError> {
        use crate::net::tls::{ClientTls, PeerTls, ServerTls, TlsOptions, self_signed};
        let urls = self.peer_listen_urls()?;
        let advertised = self
            .initial_advertise_peer_urls
            .iter()
            .any(|u| u.starts_with("https://"));
        if !urls.iter().any(|u| u.tls) && !advertised {
            return Ok(None);
        }
        let tls_err = |e: crate::net::tls::TlsError| ConfigError::Tls(format!("peer TLS: {e}"));
        let cert = match (
            &self.peer_cert_file,
            &self.peer_key_file,
            self.peer_auto_tls,
        ) {
            (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
            (None, None, true) => self_signed(
                &data_dir.join("fixtures").join("peer"),
                &auto_tls_hosts(&urls),
                self.self_signed_cert_validity,
            )
            .map_err(tls_err)?,
            _ => {
                return Err(ConfigError::Tls(
                    "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for https:// peer URLs".into(),
                ));
            }
        };
        let options = TlsOptions {
            cert: Some(cert),
            trusted_ca: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            insecure_skip_verify: self.peer_auto_tls && self.peer_trusted_ca_file.is_none(),
            min_version: self.tls_min_version,
            cipher_suites: self.cipher_suites.clone(),
        };
        Ok(Some(PeerTls {
            server: ServerTls::server(options.clone()).map_err(tls_err)?,
            client: ClientTls::client(options).map_err(tls_err)?,
        }))
    }

    /// `--auth-token` and `--auth-token-ttl`, with the key files read.
    pub fn token_config(&self) -> Result<crate::auth::TokenConfig, ConfigError> {
        crate::auth::TokenConfig::parse(
            &self.auth_token,
            std::time::Duration::from_secs(self.auth_token_ttl),
        )
        .map_err(ConfigError::AuthToken)
    }

    pub fn peer_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        self.listen_peer_urls.iter().map(|u| parse_url(u)).collect()
    }

    /// `--initial-cluster`, or etcd's default for it: this member alone, named `--name`, at
    /// each of its `--initial-advertise-peer-urls`.
    pub fn initial_cluster(&self) -> String {
        match &self.initial_cluster {
            Some(explicit) => explicit.clone(),
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|url| format!("{}={url}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The client URLs this member advertises.
    pub fn advertised_client_urls(&self) -> Vec<String> {
        if self.advertise_client_urls.is_empty() {
            vec![DEFAULT_CLIENT_URL.to_string()]
        } else {
            self.advertise_client_urls.clone()
        }
    }

    /// The founding members named by `--initial-cluster`: name → peer URLs, in flag order.
    /// This member must be among them, with exactly its `--initial-advertise-peer-urls`.
    pub fn initial_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let bad = |m: String| ConfigError::InitialCluster(m);
        let initial_cluster = self.initial_cluster();
        let members = parse_initial_cluster(&initial_cluster)?;
        let mine = members
            .iter()
            .find(|(n, _)| *n == self.name)
            .ok_or_else(|| {
                bad(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    self.name
                ))
            })?;
        let (mut theirs, mut ours) = (mine.1.clone(), self.initial_advertise_peer_urls.clone());
        theirs.sort();
        ours.sort();
        if theirs != ours {
            return Err(bad(format!(
                "--initial-advertise-peer-urls has {ours:?} but missing from --initial-cluster={initial_cluster:?}"
            )));
        }
        Ok(members)
    }

    pub fn client_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        if self.listen_client_urls.is_empty() {
            return Ok(vec![parse_url(DEFAULT_CLIENT_URL)?]);
        }
        self.listen_client_urls
            .iter()
            .map(|u| parse_url(u))
            .collect()
    }

    pub fn client_http_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        self.listen_client_http_urls
            .iter()
            .map(|u| parse_url(u))
            .collect()
    }

    pub fn metrics_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        self.listen_metrics_urls
            .iter()
            .map(|u| parse_url(u))
            .collect()
    }

    /// How often the leader checks followers for corruption (`None`: off).
    pub fn corrupt_check_every(&self) -> Result<Option<std::time::Duration>, ConfigError> {
        let every = parse_go_duration(&self.experimental_corrupt_check_time).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "invalid --experimental-corrupt-check-time {:?}: expected a duration such as 5m",
                self.experimental_corrupt_check_time
            ))
        })?;
        Ok((!every.is_zero()).then_some(every))
    }

    /// The auto-compaction the flags ask for (`None`: off).
    pub fn auto_compaction(&self) -> Result<Option<crate::compactor::Policy>, ConfigError> {
        crate::compactor::Policy::parse(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
            self.auto_compaction_check_interval.0,
        )
        .map_err(ConfigError::Invalid)
    }

    /// The ID this member gets when its data dir enters a cluster (see `identity`).
    pub fn member_id(&self) -> u64 {
        self.member_id_for(&self.initial_advertise_peer_urls)
    }

    /// The ID of the member with `peer_urls` in the cluster `--initial-cluster-token` names.
    pub fn member_id_for(&self, peer_urls: &[String]) -> u64 {
        crate::identity::member_id(peer_urls, &self.initial_cluster_token)
    }
}

/// Parses an `--initial-cluster` value (`name=peerURL,...`; a name may appear once per URL):
/// name → peer URLs, in flag order.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for entry in text.split(',').filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::InitialCluster(format!("{entry:?} is not name=peerURL")))?;
        parse_url(url)?;
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    Ok(members)
}

/// A Go duration of whole units (`500ms`, `90s`, `30m`, `1h30m`).
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        total += unit * u32::try_from(n).ok()?;
        rest = &rest[unit_len..];
    }
    (!text.is_empty()).then_some(total)
}

pub fn parse_url(url: &str) -> Result<ListenUrl, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let (tls, rest) = match url.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
        None => return Err(bad("expected http://host:port")),
    };
    let rest = rest.trim_end_matches('/');
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(ListenUrl {
            url: url.to_string(),
            host: addr.ip().to_string(),
            port: addr.port(),
            tls,
        });
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("port is not a number in 0..=65535"))?;
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(ListenUrl {
        url: url.to_string(),
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_urls() {
        // Proves the URL forms etcd accepts for --listen-client-urls.
        assert_eq!(parse_url("http://127.0.0.1:2379").unwrap().port, 2379);
        assert_eq!(
            parse_url("http://localhost:12379/").unwrap().host,
            "localhost"
        );
        assert_eq!(parse_url("http://[::1]:2379").unwrap().host, "::1");
        assert!(parse_url("localhost:2379").is_err());
        assert!(parse_url("http://localhost").is_err());
        assert!(parse_url("https://localhost:2379").is_ok());
    }

    #[test]
    fn flags_have_etcd_defaults_and_env_vars() {
        // Proves etcd's defaults and the CAIRN_<FLAG> spelling.
        let c = Config::try_parse_from(["cairn"]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir(), PathBuf::from("default.cairn"));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        let c = Config::try_parse_from(["cairn", "--name=n1", "--max-txn-ops", "7"]).unwrap();
        assert_eq!(
            (c.data_dir(), c.max_txn_ops),
            (PathBuf::from("n1.cairn"), 7)
        );
        assert!(Config::try_parse_from(["cairn", "--max-txn-ops=0"]).is_err());
        assert!(Config::try_parse_from(["cairn", "--no-such-flag"]).is_err());
        let c =
            Config::try_parse_from(["cairn", "--watch-progress-notify-interval=1500ms"]).unwrap();
        assert_eq!(
            c.watch_progress_notify_interval.0,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(
            Config::try_parse_from(["cairn"])
                .unwrap()
                .watch_progress_notify_interval
                .0
                .as_secs(),
            600
        );
        assert!(Config::try_parse_from(["cairn", "--watch-progress-notify-interval=5x"]).is_err());
    }

    #[test]
    fn initial_cluster_and_client_urls_follow_etcds_rules() {
        // Proves etcd's defaults: --initial-cluster from --name and the advertised peer URLs,
        // and --listen-client-urls requiring --advertise-client-urls.
        let c = Config::try_parse_from(["cairn", "--name=n1"]).unwrap();
        assert_eq!(c.initial_cluster(), "n1=http://localhost:2380");
        assert_eq!(c.initial_members().unwrap().len(), 1);
        assert_eq!(c.advertised_client_urls(), ["http://localhost:2379"]);
        let c = Config::try_parse_from([
            "cairn",
            "--name=n1",
            "--initial-advertise-peer-urls=http://127.0.0.1:1,http://127.0.0.1:2",
        ])
        .unwrap();
        assert_eq!(
            c.initial_cluster(),
            "n1=http://127.0.0.1:1,n1=http://127.0.0.1:2"
        );
        let c =
            Config::try_parse_from(["cairn", "--listen-client-urls=http://127.0.0.1:5"]).unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
        let c = Config::try_parse_from([
            "cairn",
            "--listen-client-urls=http://127.0.0.1:5",
            "--advertise-client-urls=http://127.0.0.1:5",
        ])
        .unwrap();
        assert!(c.validate().is_ok());
    }
}
