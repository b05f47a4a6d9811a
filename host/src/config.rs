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

    /// URLs to listen on for client traffic, comma-separated.
    #[arg(
        long,
        env = "CAIRN_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,

    /// URLs to serve HTTP on (the JSON gateway, /health, /version, /metrics), comma-separated.
    /// When set, the client URLs serve only gRPC.
    #[arg(long, env = "CAIRN_LISTEN_CLIENT_HTTP_URLS", value_delimiter = ',')]
    pub listen_client_http_urls: Vec<String>,

    /// Extra URLs that serve only /metrics and the health probes, comma-separated.
    #[arg(long, env = "CAIRN_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,

    /// Client URLs of this member advertised to the cluster, comma-separated.
    #[arg(
        long,
        env = "CAIRN_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    pub advertise_client_urls: Vec<String>,

    /// URLs to listen on for traffic from the other members, comma-separated.
    #[arg(
        long,
        env = "CAIRN_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,

    /// Peer URLs of this member advertised to the cluster (part of the member ID).
    #[arg(
        long,
        env = "CAIRN_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// The founding members, `name=peerURL,...` (a name may appear once per peer URL).
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER",
        default_value = "default=http://localhost:2380"
    )]
    pub initial_cluster: String,

    /// `new` to found a cluster, `existing` to join one that `member add` prepared.
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// Token that keeps members of different clusters apart (part of the cluster ID).
    #[arg(
        long,
        env = "CAIRN_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

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

    /// How often the leader records remaining lease TTLs through Raft, so that a new leader
    /// continues each lease's countdown instead of restarting it (Go-style duration).
    #[arg(
        long,
        env = "CAIRN_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5m"
    )]
    pub experimental_lease_checkpoint_interval: GoDuration,

    /// Lets tests drop this member's traffic with chosen peers (the `SetFaults` peer call).
    /// Never for production.
    #[arg(long, env = "CAIRN_EXPERIMENTAL_FAULT_INJECTION", hide = true)]
    pub experimental_fault_injection: bool,

    /// Log level: debug, info, warn or error.
    #[arg(long, env = "CAIRN_LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--initial-cluster: {0}")]
    InitialCluster(String),
    #[error(
        "--election-timeout ({election}ms) must be at least 5 times --heartbeat-interval ({heartbeat}ms)"
    )]
    Timing { election: u64, heartbeat: u64 },
}

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
}

impl Config {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }

    /// Checks what clap cannot: URL shapes and timing relations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client_listen_urls()?;
        self.peer_listen_urls()?;
        // etcd requires election timeout >= 5 x heartbeat interval.
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Timing {
                election: self.election_timeout,
                heartbeat: self.heartbeat_interval,
            });
        }
        Ok(())
    }

    pub fn peer_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
        self.listen_peer_urls.iter().map(|u| parse_url(u)).collect()
    }

    /// The founding members named by `--initial-cluster`: name → peer URLs, in flag order.
    /// This member must be among them, with exactly its `--initial-advertise-peer-urls`.
    pub fn initial_members(&self) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let bad = |m: String| ConfigError::InitialCluster(m);
        let mut members: Vec<(String, Vec<String>)> = Vec::new();
        for entry in self.initial_cluster.split(',').filter(|e| !e.is_empty()) {
            let (name, url) = entry
                .split_once('=')
                .ok_or_else(|| bad(format!("{entry:?} is not name=peerURL")))?;
            parse_url(url)?;
            match members.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => members.push((name.to_string(), vec![url.to_string()])),
            }
        }
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
                "--initial-advertise-peer-urls has {ours:?} but missing from --initial-cluster={:?}",
                self.initial_cluster
            )));
        }
        Ok(members)
    }

    pub fn client_listen_urls(&self) -> Result<Vec<ListenUrl>, ConfigError> {
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

    /// This member's ID: a stable hash of its peer URLs and the cluster token, as etcd
    /// derives member IDs (the exact hash differs from etcd's).
    pub fn member_id(&self) -> u64 {
        self.member_id_for(&self.initial_advertise_peer_urls)
    }

    /// The ID of the member with `peer_urls` in this cluster (the same rule on every member,
    /// so `member add` and the added member agree on it).
    pub fn member_id_for(&self, peer_urls: &[String]) -> u64 {
        member_id(peer_urls, &self.initial_cluster_token)
    }

    /// The cluster's ID: a stable hash of its member IDs and the token.
    pub fn cluster_id(&self, member_ids: &[u64]) -> u64 {
        let mut ids = member_ids.to_vec();
        ids.sort_unstable();
        let text: Vec<String> = ids.iter().map(|id| format!("{id:x}")).collect();
        fnv1a(format!("{}|{}", text.join(","), self.initial_cluster_token).as_bytes())
    }
}

pub fn parse_url(url: &str) -> Result<ListenUrl, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(bad("TLS listeners are not supported yet; use http://")),
        Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
        None => return Err(bad("expected http://host:port")),
    };
    let rest = rest.trim_end_matches('/');
    if let Ok(addr) = rest.parse::<SocketAddr>() {
        return Ok(ListenUrl {
            url: url.to_string(),
            host: addr.ip().to_string(),
            port: addr.port(),
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
    })
}

/// The ID of the member with `peer_urls` in the cluster with `token`: the same rule on every
/// member, so `member add` and the member it adds agree on the ID.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    fnv1a(format!("{}|{}", urls.join(","), token).as_bytes())
}

/// 64-bit FNV-1a: small, stable across platforms and Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
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
        assert!(parse_url("https://localhost:2379").is_err());
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
}
