//! A Cairn policy hook for tenant isolation: under a prefix such as `/tenants/`, user `u` may
//! read, write and watch `/tenants/u/…` and nothing of any other tenant. One binding replaces
//! a role per tenant.
//!
//! Config: `{"prefix": "/tenants/", "admin_roles": ["ops"]}` (`admin_roles` optional).
//!
//! For every access it is shown (those overlapping the bound range):
//!
//! - wholly inside the user's own subtree `<prefix><user>/`: fine;
//! - anything else under the prefix (another tenant's keys, a range across tenants, the
//!   prefix itself): the request is denied, naming the user's subtree.
//!
//! If every access is fine it answers allow, which grants them even though no role does. A
//! user holding one of `admin_roles` is left to its roles (defer), so operators keep their
//! cross-tenant view. A bad config denies everything (fail closed). It reads neither the
//! store nor the clock, so members memoize its answers for reads.

use cairn_sdk::{Access, Answer, Context, Policy, PolicyRequest, prefix_end};
use serde::Deserialize;

/// The binding config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where tenants' subtrees live: user `u` owns `<prefix>u/`.
    pub prefix: String,
    /// Users holding any of these roles are left to their roles.
    #[serde(default)]
    pub admin_roles: Vec<String>,
}

/// The policy.
pub struct TenantPolicy;

impl Policy for TenantPolicy {
    fn check(ctx: &Context<'_>, request: &PolicyRequest) -> Answer {
        let config: Config = match serde_json::from_slice(ctx.config()) {
            Ok(config) => config,
            Err(e) => {
                let reason = format!("tenant-policy: bad binding config: {e}");
                ctx.warn(&reason);
                return Answer::Deny(reason);
            }
        };
        decide(&config, request)
    }
}

cairn_sdk::export_policy!(TenantPolicy);

/// The answer for `request` under `config`.
pub fn decide(config: &Config, request: &PolicyRequest) -> Answer {
    if request
        .roles
        .iter()
        .any(|role| config.admin_roles.contains(role))
    {
        return Answer::Defer;
    }
    let own = format!("{}{}/", config.prefix, request.user);
    if request
        .accesses
        .iter()
        .all(|access| within(access, own.as_bytes()))
    {
        Answer::Allow
    } else {
        Answer::Deny(format!(
            "tenant {:?} may only use keys under {own}",
            request.user
        ))
    }
}

/// Whether the access lies wholly in the keys starting with `prefix`.
fn within(access: &Access, prefix: &[u8]) -> bool {
    if !access.key.starts_with(prefix) {
        return false;
    }
    match access.range_end.as_slice() {
        [] => true,
        // Every key from `key` on: past any prefix.
        [0] => false,
        end => end <= prefix_end(prefix).as_slice(),
    }
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{Harness, MemStore};
    use cairn_sdk::{Access, Answer, Operation, PolicyRequest};

    use super::TenantPolicy;

    const CONFIG: &[u8] = br#"{"prefix": "/tenants/", "admin_roles": ["ops"]}"#;

    fn ask(user: &str, roles: &[&str], accesses: Vec<Access>) -> Answer {
        let store = MemStore::new();
        let mut request = PolicyRequest::new(user, Operation::Txn, accesses);
        request.roles = roles.iter().map(|r| r.to_string()).collect();
        Harness::new(&store, CONFIG).check_policy::<TenantPolicy>(&request)
    }

    #[test]
    fn a_tenant_owns_its_subtree() {
        assert_eq!(
            ask("alice", &[], vec![Access::put("/tenants/alice/db", "1")]),
            Answer::Allow
        );
        assert_eq!(
            ask(
                "alice",
                &[],
                vec![Access::read("/tenants/alice/", "/tenants/alice0")]
            ),
            Answer::Allow
        );
    }

    #[test]
    fn other_tenants_and_wide_ranges_are_denied() {
        let denied = Answer::deny("tenant \"alice\" may only use keys under /tenants/alice/");
        assert_eq!(
            ask("alice", &[], vec![Access::put("/tenants/bob/db", "1")]),
            denied
        );
        // A prefix of the name is not the subtree: "/tenants/alice2/" is someone else's.
        assert_eq!(
            ask("alice", &[], vec![Access::put("/tenants/alice2/db", "1")]),
            denied
        );
        assert_eq!(
            ask("alice", &[], vec![Access::read("/tenants/", "/tenants0")]),
            denied
        );
        assert_eq!(
            ask("alice", &[], vec![Access::read("/tenants/alice/", "\0")]),
            denied
        );
        // One foreign access denies the whole request.
        assert_eq!(
            ask(
                "alice",
                &[],
                vec![
                    Access::put("/tenants/alice/a", "1"),
                    Access::delete("/tenants/bob/a", "")
                ]
            ),
            denied
        );
    }

    #[test]
    fn admins_are_left_to_their_roles() {
        assert_eq!(
            ask("carol", &["ops"], vec![Access::put("/tenants/bob/db", "1")]),
            Answer::Defer
        );
    }

    #[test]
    fn a_bad_config_denies() {
        let store = MemStore::new();
        let request = PolicyRequest::new(
            "alice",
            Operation::Put,
            vec![Access::put("/tenants/alice/a", "1")],
        );
        let answer = Harness::new(&store, b"{}").check_policy::<TenantPolicy>(&request);
        assert!(matches!(answer, Answer::Deny(reason) if reason.contains("bad binding config")));
    }
}
