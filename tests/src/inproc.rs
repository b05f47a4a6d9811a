//! A Cairn cluster inside the test process: every member is a [`cairn::server::Server`]
//! started through the library, on loopback ports the harness reserved, and every peer
//! message passes one shared [`Net`], a seeded link filter that tests tell to partition the
//! members, drop a share of messages, or hold them for a random while (which reorders
//! messages on different streams).
//!
//! What a real process is needed for (kill -9, SIGSTOP, a disk that fails) stays with
//! [`crate::Cluster`]; a member here stops gracefully and restarts from its data dir.
//!
//! The seed fixes the filter's random choices in the order they are asked for; the order
//! itself follows the members' threads, so a rerun of a seed replays the same schedule of
//! faults and client operations, not the same interleaving of messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::config::Config;
use cairn::raft::transport::filter::{Filter, LinkFilter, Verdict};
use cairn::server::Server;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::connect;
use crate::converge::Running;
use crate::process::{free_port, release_port};

/// Heartbeat and election timeout of in-process members, in milliseconds: short, so a
/// schedule sees several elections in a few seconds, and the election at least ten
/// heartbeats, so a busy machine does not make every member a candidate.
const HEARTBEAT_MS: u64 = 50;
const ELECTION_MS: u64 = 500;

/// The network between in-process members.
pub struct Net {
    state: Mutex<NetState>,
}

struct NetState {
    rng: StdRng,
    /// Each member's side of a partition; members on different sides cannot talk. Empty when
    /// there is no partition.
    sides: BTreeMap<u64, usize>,
    /// Share of messages dropped.
    drop: f64,
    /// Range of delays a message is held for, in milliseconds.
    delay_ms: Option<(u64, u64)>,
}

impl NetState {
    fn cut(&self, from: u64, to: u64) -> bool {
        match (self.sides.get(&from), self.sides.get(&to)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }
}

impl Net {
    pub fn new(seed: u64) -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::new(NetState {
                rng: StdRng::seed_from_u64(seed),
                sides: BTreeMap::new(),
                drop: 0.0,
                delay_ms: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the members (by ID) into `sides`; a member in no side talks to everyone.
    pub fn partition(&self, sides: &[Vec<u64>]) {
        let mut state = self.state();
        state.sides = sides
            .iter()
            .enumerate()
            .flat_map(|(side, ids)| ids.iter().map(move |&id| (id, side)))
            .collect();
    }

    /// Drops this share (0 to 1) of all messages.
    pub fn drop_share(&self, share: f64) {
        self.state().drop = share.clamp(0.0, 1.0);
    }

    /// Holds every message for a random time in `low..=high` milliseconds.
    pub fn delay(&self, low: u64, high: u64) {
        self.state().delay_ms = Some((low, high.max(low)));
    }

    /// Ends every fault.
    pub fn heal(&self) {
        let mut state = self.state();
        state.sides.clear();
        state.drop = 0.0;
        state.delay_ms = None;
    }
}

impl LinkFilter for Net {
    fn outbound(&self, from: u64, to: u64) -> Verdict {
        let mut state = self.state();
        if state.cut(from, to) {
            return Verdict::Drop;
        }
        let drop = state.drop;
        if drop > 0.0 && state.rng.random_bool(drop) {
            return Verdict::Drop;
        }
        match state.delay_ms {
            Some((low, high)) => {
                Verdict::Delay(Duration::from_millis(state.rng.random_range(low..=high)))
            }
            None => Verdict::Deliver,
        }
    }

    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.state().cut(from, to)
    }
}

/// One in-process member.
pub struct InProcMember {
    pub name: String,
    /// Its member ID (known once it has started).
    pub id: u64,
    client_port: u16,
    config: Config,
    server: Option<Server>,
}

impl InProcMember {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The port of its client listener.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }
}

/// The certificate every member presents to its peers, and the CA that verifies them.
#[derive(Clone, Debug)]
pub struct PeerTls {
    pub pair: crate::pki::Pair,
    pub ca: std::path::PathBuf,
}

/// N members in this process, sharing one [`Net`].
pub struct InProcCluster {
    pub members: Vec<InProcMember>,
    pub net: Arc<Net>,
    /// Every port the members listen on.
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Running for InProcCluster {
    fn running(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| (m.name.clone(), m.endpoint()))
            .collect()
    }
}

impl InProcCluster {
    /// Starts `size` members together, their network seeded with `seed`.
    pub async fn start(size: usize, seed: u64) -> InProcCluster {
        Self::start_with(size, seed, None).await
    }

    /// [`Self::start`], the members talking to each other over TLS (`https://` peer URLs,
    /// each presenting `peer_tls`'s certificate, verified against its CA, client certificates
    /// required) when it is given.
    pub async fn start_with(size: usize, seed: u64, peer_tls: Option<&PeerTls>) -> InProcCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let net = Net::new(seed);
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let scheme = if peer_tls.is_some() { "https" } else { "http" };
        let tls_args: Vec<String> = match peer_tls {
            None => Vec::new(),
            Some(t) => vec![
                format!("--peer-cert-file={}", t.pair.cert.display()),
                format!("--peer-key-file={}", t.pair.key.display()),
                format!("--peer-trusted-ca-file={}", t.ca.display()),
                "--peer-client-cert-auth".to_string(),
            ],
        };
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}={scheme}://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<InProcMember> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("{scheme}://127.0.0.1:{peer}");
                let data_dir = dir.path().join(format!("m{i}"));
                let args = [
                    "cairn".to_string(),
                    format!("--name=m{i}"),
                    format!("--data-dir={}", data_dir.display()),
                    format!("--listen-client-urls={client_url}"),
                    format!("--advertise-client-urls={client_url}"),
                    format!("--listen-peer-urls={peer_url}"),
                    format!("--initial-advertise-peer-urls={peer_url}"),
                    format!("--initial-cluster={initial_cluster}"),
                    format!("--heartbeat-interval={HEARTBEAT_MS}"),
                    format!("--election-timeout={ELECTION_MS}"),
                ];
                let args = args.into_iter().chain(tls_args.iter().cloned());
                let mut config = Config::try_parse_from(args).expect("in-process member flags");
                config.link_filter = Filter::new(net.clone());
                InProcMember {
                    name: format!("m{i}"),
                    id: 0,
                    client_port: client,
                    config,
                    server: None,
                }
            })
            .collect();
        // Together: each member's start waits (bounded) for a leader, which needs the others.
        let started =
            futures::future::join_all(members.iter().map(|m| Server::start(m.config.clone())))
                .await;
        for (m, server) in members.iter_mut().zip(started) {
            let server = server.unwrap_or_else(|e| panic!("starting {}: {e}", m.name));
            m.id = server.member_id();
            m.server = Some(server);
        }
        InProcCluster {
            members,
            net,
            ports: ports
                .iter()
                .flat_map(|&(client, peer)| [client, peer])
                .collect(),
            _dir: dir,
        }
    }

    /// Client endpoints of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(InProcMember::endpoint)
            .collect()
    }

    /// Cuts the members (by index) into `sides`.
    pub fn partition(&self, sides: &[&[usize]]) {
        let by_id: Vec<Vec<u64>> = sides
            .iter()
            .map(|side| side.iter().map(|&i| self.members[i].id).collect())
            .collect();
        self.net.partition(&by_id);
    }

    /// Stops member `index` gracefully (its data dir stays).
    pub async fn stop(&mut self, index: usize) {
        if let Some(server) = self.members[index].server.take() {
            server.shutdown().await;
        }
    }

    /// Starts member `index` again from its data dir.
    pub async fn restart(&mut self, index: usize) {
        let m = &mut self.members[index];
        assert!(m.server.is_none(), "{} is running", m.name);
        let server = Server::start(m.config.clone())
            .await
            .unwrap_or_else(|e| panic!("restarting {}: {e}", m.name));
        assert_eq!(server.member_id(), m.id, "{} changed its ID", m.name);
        m.server = Some(server);
    }

    /// The index of the member that says it leads, if any running member does.
    pub async fn leader(&self) -> Option<usize> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.leader_among(&all).await
    }

    /// The index of the member among `members` (indexes) that says it leads, if one does.
    pub async fn leader_among(&self, members: &[usize]) -> Option<usize> {
        for &i in members {
            let m = &self.members[i];
            if !m.is_running() {
                continue;
            }
            let ask = async {
                let mut c = connect(&m.endpoint()).await;
                let status = c.status().await.ok()?;
                (status.leader() == m.id).then_some(i)
            };
            if let Ok(Some(i)) = tokio::time::timeout(Duration::from_secs(1), ask).await {
                return Some(i);
            }
        }
        None
    }

    /// Waits (bounded) for a leader; returns its index.
    pub async fn wait_for_leader(&self, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            if let Some(i) = self.leader().await {
                return i;
            }
            assert!(start.elapsed() < limit, "no leader within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every member and gives back the ports' reservations (a run of schedules takes
    /// six ports per cluster; holding every lock file open would take 1,200 descriptors).
    pub async fn shutdown(mut self) {
        let stopping: Vec<Server> = self
            .members
            .iter_mut()
            .filter_map(|m| m.server.take())
            .collect();
        futures::future::join_all(stopping.into_iter().map(Server::shutdown)).await;
        for &port in &self.ports {
            release_port(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_both_ways_and_heal() {
        // Proves members on different sides cannot talk in either direction, members on the
        // same side (or in no side) can, and heal ends every fault.
        let net = Net::new(1);
        net.partition(&[vec![1], vec![2, 3]]);
        assert_eq!(net.outbound(1, 2), Verdict::Drop);
        assert_eq!(net.outbound(3, 1), Verdict::Drop);
        assert!(net.is_cut(2, 1));
        assert_eq!(net.outbound(2, 3), Verdict::Deliver);
        assert_eq!(net.outbound(4, 1), Verdict::Deliver);
        net.heal();
        assert_eq!(net.outbound(1, 2), Verdict::Deliver);
        assert!(!net.is_cut(2, 1));
    }

    #[test]
    fn the_seed_fixes_drops_and_delays() {
        // Proves two networks with the same seed decide the same sequence of messages the same
        // way (drops and delays), and a different seed decides differently.
        let verdicts = |seed: u64| {
            let net = Net::new(seed);
            net.drop_share(0.3);
            net.delay(0, 50);
            (0..200).map(|_| net.outbound(1, 2)).collect::<Vec<_>>()
        };
        let first = verdicts(7);
        assert_eq!(first, verdicts(7));
        assert_ne!(first, verdicts(8));
        let dropped = first.iter().filter(|v| **v == Verdict::Drop).count();
        assert!(
            (30..90).contains(&dropped),
            "{dropped} of 200 dropped at 30%"
        );
        assert!(first.iter().any(|v| matches!(v, Verdict::Delay(_))));
    }
}
