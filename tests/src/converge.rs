//! Checks that the members of a cluster agree: the same revision, the same HashKV, and every
//! acknowledged key present on each of them.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::{GetOptions, SortOrder, SortTarget};

use crate::cluster::{Cluster, User, connect, try_connect_as};
use crate::workload::Writers;

/// The members a check asks: the name and client endpoint of each running member.
pub trait Running {
    fn running(&self) -> Vec<(String, String)>;
}

impl Running for Cluster {
    fn running(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| (m.name.clone(), m.endpoint()))
            .collect()
    }
}

/// Stops `writers`, waits (bounded) until every running member has the same revision and
/// HashKV, and checks that each holds every write the cluster acknowledged.
pub async fn stop_and_verify(cluster: &impl Running, writers: Writers, prefix: &str) {
    let acked = writers.stop().await;
    wait_converged(cluster, Duration::from_secs(60)).await;
    assert_all_present(cluster, prefix, &acked).await;
}

/// What one member reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberHash {
    pub name: String,
    pub revision: i64,
    pub hash: u32,
}

/// Waits (bounded) until every running member reports the same revision and the same HashKV
/// at it; returns that revision and hash. Panics with every member's answer otherwise.
pub async fn wait_converged(cluster: &impl Running, limit: Duration) -> (i64, u32) {
    wait_converged_as(cluster, None, limit).await
}

/// [`wait_converged`], asking as `user` (HashKV needs root while authentication is on).
pub async fn wait_converged_as(
    cluster: &impl Running,
    user: User<'_>,
    limit: Duration,
) -> (i64, u32) {
    let start = Instant::now();
    let mut last = Vec::new();
    loop {
        last = hashes(cluster, user).await.unwrap_or(last);
        if let Some(first) = last.first()
            && last.len() == cluster.running().len()
            && last
                .iter()
                .all(|m| m.revision == first.revision && m.hash == first.hash)
        {
            return (first.revision, first.hash);
        }
        assert!(
            start.elapsed() < limit,
            "members did not converge within {limit:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn hashes(cluster: &impl Running, user: User<'_>) -> Option<Vec<MemberHash>> {
    let mut out = Vec::new();
    for (name, endpoint) in cluster.running() {
        let ask = async {
            let mut client = try_connect_as(&endpoint, user).await.ok()?;
            client.hash_kv(0).await.ok()
        };
        let resp = tokio::time::timeout(Duration::from_secs(5), ask)
            .await
            .ok()??;
        out.push(MemberHash {
            name,
            revision: resp.header()?.revision(),
            hash: resp.hash(),
        });
    }
    Some(out)
}

/// Asserts that every running member holds every key in `acked` (serializable reads, so each
/// member answers from its own state).
pub async fn assert_all_present(cluster: &impl Running, prefix: &str, acked: &[String]) {
    let want: BTreeSet<&str> = acked.iter().map(String::as_str).collect();
    for (name, endpoint) in cluster.running() {
        let mut client = connect(&endpoint).await;
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_serializable()
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let resp = client
            .get(prefix, Some(options))
            .await
            .unwrap_or_else(|e| panic!("range on {name}: {e}"));
        let have: BTreeSet<String> = resp
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        let missing: Vec<&&str> = want.iter().filter(|k| !have.contains(**k)).collect();
        assert!(
            missing.is_empty(),
            "{name} lost {} acknowledged writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}
