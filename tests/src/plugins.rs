//! Plugin statistics as members report them, for tests that check every member decided the
//! same: calls, denials, failures, fuel, and the hash chained over every decision.

use std::time::{Duration, Instant};

use cairn_proto::cairn_plugin::ListRequest;
use cairn_proto::cairn_plugin::plugin_client::PluginClient;
use cairn_proto::etcdserverpb::AuthenticateRequest;
use cairn_proto::etcdserverpb::auth_client::AuthClient;

use crate::cluster::{Cluster, User};

/// One binding's statistics: (name, calls, denials, failures, fuel used, decisions hash).
pub type Stats = (String, u64, u64, u64, u64, String);

/// Every binding's statistics as one member reports them, asked as `user` (root, while
/// authentication is on).
pub async fn stats(endpoint: &str, user: User<'_>) -> Vec<Stats> {
    let mut request = tonic::Request::new(ListRequest {});
    if let Some((name, password)) = user {
        let mut auth = AuthClient::connect(format!("http://{endpoint}"))
            .await
            .expect("auth client");
        let token = auth
            .authenticate(AuthenticateRequest {
                name: name.into(),
                password: password.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("authenticate {name}: {e}"))
            .into_inner()
            .token;
        request
            .metadata_mut()
            .insert("token", token.parse().expect("ascii token"));
    }
    let mut client = PluginClient::connect(format!("http://{endpoint}"))
        .await
        .expect("plugin client");
    let list = client
        .list(request)
        .await
        .expect("list plugins")
        .into_inner();
    list.bindings
        .into_iter()
        .map(|b| {
            let s = b.stats.unwrap_or_default();
            (
                b.name,
                s.calls,
                s.denials,
                s.failures,
                s.fuel_used,
                s.decisions_hash,
            )
        })
        .collect()
}

/// Waits (bounded) until every running member reports the same statistics; returns them.
pub async fn stats_agree(cluster: &Cluster, user: User<'_>) -> Vec<Stats> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        for m in cluster.members.iter().filter(|m| m.is_running()) {
            all.push(stats(&m.endpoint(), user).await);
        }
        if all.windows(2).all(|w| w[0] == w[1]) {
            return all.swap_remove(0);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "members disagree on plugin statistics: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
