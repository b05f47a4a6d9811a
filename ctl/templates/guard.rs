//! {{name}}: a Cairn transaction guard.
//!
//! Denies puts whose value is longer than the binding's config says (a decimal number of
//! bytes; 1024 without a config). Bind it to the keys it guards:
//!
//! `cairnctl plugin bind {{name}} --plugin {{name}} --kind guard --key /app/ --prefix --config 64`

use cairn_sdk::{Context, Decision, Guard, Op};

/// The longest value allowed when the binding has no config.
const DEFAULT_MAX_BYTES: usize = 1024;

pub struct Plugin;

impl Guard for Plugin {
    fn check(ctx: &Context<'_>, ops: &[Op]) -> Decision {
        let max = std::str::from_utf8(ctx.config())
            .ok()
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        for op in ops {
            if let Op::Put(put) = op
                && !put.ignore_value
                && put.value.len() > max
            {
                return Decision::deny(format!("values hold at most {max} bytes"));
            }
        }
        Decision::Allow
    }
}

cairn_sdk::export_guard!(Plugin);

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{self, MemStore};
    use cairn_sdk::{Decision, Op};

    use super::Plugin;

    #[test]
    fn long_values_are_denied() {
        let store = MemStore::new();
        let check =
            |value: &str| testing::check::<Plugin>(&store, b"4", &[Op::put("/app/k", value)]);
        assert_eq!(check("abcd"), Decision::Allow);
        assert!(!check("abcde").is_allowed());
    }
}
