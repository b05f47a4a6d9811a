//! {{name}}: a Cairn RBAC policy hook.
//!
//! Refuses deletes in the bound range to users without the role the binding's config names
//! (`admin` without a config), and leaves everything else to the users' roles. Bind it to
//! the keys it protects:
//!
//! `cairnctl plugin bind {{name}} --plugin {{name}} --kind policy --key /app/ --prefix --config admin`

use cairn_sdk::{Answer, Context, Policy, PolicyRequest};

pub struct Plugin;

impl Policy for Plugin {
    fn check(ctx: &Context<'_>, request: &PolicyRequest) -> Answer {
        let role = match std::str::from_utf8(ctx.config()).map(str::trim) {
            Ok(role) if !role.is_empty() => role,
            _ => "admin",
        };
        let deletes = request
            .accesses
            .iter()
            .any(|access| access.write && access.value.is_none() && access.lease == 0);
        if deletes && !request.roles.iter().any(|r| r == role) {
            return Answer::deny(format!("deleting here takes the {role} role"));
        }
        Answer::Defer
    }
}

cairn_sdk::export_policy!(Plugin);

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{self, MemStore};
    use cairn_sdk::{Access, Answer, Operation, PolicyRequest};

    use super::Plugin;

    #[test]
    fn deletes_take_the_role() {
        let store = MemStore::new();
        let delete = PolicyRequest::new(
            "alice",
            Operation::DeleteRange,
            vec![Access::delete("/app/k", "")],
        );
        assert!(matches!(
            testing::check_policy::<Plugin>(&store, b"", &delete),
            Answer::Deny(_)
        ));
        let mut admin = delete.clone();
        admin.roles = vec!["admin".into()];
        assert_eq!(
            testing::check_policy::<Plugin>(&store, b"", &admin),
            Answer::Defer
        );
    }
}
