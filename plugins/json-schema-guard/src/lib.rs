//! A Cairn guard: every value put under the bound range must be JSON matching the schema
//! given as the binding config.
//!
//! The schema language is the small deterministic subset in [`schema`]. A put with
//! `ignore_value` keeps the current value and is allowed; deletes are allowed. A config that
//! is not a schema in that subset denies every write (fail closed), with the reason.
//!
//! It neither reads the store nor logs, and it is exported with `log_panics = false`, so its
//! component imports nothing: each call is one core instance (see docs/plugins.md, "What a
//! call costs").

pub mod schema;

use cairn_sdk::{Context, Decision, Guard, Op};
use schema::{Path, Schema};

/// The guard: checks each put's value against the binding's schema.
pub struct JsonSchemaGuard;

impl Guard for JsonSchemaGuard {
    fn check(ctx: &Context<'_>, ops: &[Op]) -> Decision {
        // A bad config is reported in the denial (which the binding's statistics count and
        // every client sees), not logged: logging would cost the log import on every call.
        let schema = match Schema::parse(ctx.config()) {
            Ok(schema) => schema,
            Err(e) => {
                return Decision::Deny(format!(
                    "json-schema-guard: bad schema in binding config: {e}"
                ));
            }
        };
        for op in ops {
            let Op::Put(put) = op else { continue };
            if put.ignore_value {
                continue;
            }
            let key = String::from_utf8_lossy(&put.key);
            let value: serde_json::Value = match serde_json::from_slice(&put.value) {
                Ok(value) => value,
                Err(e) => return Decision::Deny(format!("{key}: value is not JSON: {e}")),
            };
            if let Err(violation) = schema.validate(&value, &Path::Root) {
                return Decision::Deny(format!("{key}: {violation}"));
            }
        }
        Decision::Allow
    }
}

// Nothing here panics on any input (serde_json and the schema code return errors), so the
// panic hook would only cost the log import on every call.
cairn_sdk::export_guard!(JsonSchemaGuard, log_panics = false);

#[cfg(test)]
mod tests {
    use cairn_sdk::Put;
    use cairn_sdk::testing::{self, Harness, MemStore};

    use super::*;

    const SCHEMA: &[u8] = br#"{
        "type": "object",
        "properties": {"port": {"type": "integer"}, "name": {"type": "string"}},
        "required": ["name"]
    }"#;

    fn check(ops: &[Op]) -> Decision {
        testing::check::<JsonSchemaGuard>(&MemStore::new(), SCHEMA, ops)
    }

    /// A matching value is allowed; a mismatch names the key and the JSON path.
    #[test]
    fn puts_must_match_the_schema() {
        assert_eq!(
            check(&[Op::put("/svc/a", r#"{"name": "a", "port": 80}"#)]),
            Decision::Allow
        );
        assert_eq!(
            check(&[Op::put("/svc/a", r#"{"name": "a", "port": "80"}"#)]),
            Decision::deny("/svc/a: $.port: expected integer, got string")
        );
    }

    /// Every put in the request is checked, not just the first.
    #[test]
    fn every_put_is_checked() {
        let ops = [
            Op::put("/svc/a", r#"{"name": "a"}"#),
            Op::put("/svc/b", r#"{"port": 1}"#),
        ];
        assert_eq!(
            check(&ops),
            Decision::deny("/svc/b: $.name: missing required property")
        );
    }

    /// A value that is not JSON at all is denied.
    #[test]
    fn non_json_values_are_denied() {
        let Decision::Deny(reason) = check(&[Op::put("/svc/a", "port=80")]) else {
            panic!("non-JSON value allowed");
        };
        assert!(reason.starts_with("/svc/a: value is not JSON"), "{reason}");
    }

    /// ignore_value puts keep the current value, and deletes remove it: both allowed.
    #[test]
    fn ignore_value_puts_and_deletes_are_allowed() {
        let keep = Op::Put(Put {
            key: b"/svc/a".to_vec(),
            value: b"garbage".to_vec(),
            ignore_value: true,
            ..Put::default()
        });
        assert_eq!(check(&[keep, Op::delete("/svc/a")]), Decision::Allow);
    }

    /// A bad schema denies every put, saying why, and logs nothing.
    #[test]
    fn bad_config_fails_closed() {
        let store = MemStore::new();
        let harness = Harness::new(&store, br#"{"type": "float"}"#);
        let decision = harness.check::<JsonSchemaGuard>(&[Op::put("/svc/a", "{}")]);
        let expected =
            r#"json-schema-guard: bad schema in binding config: $.type: unknown type "float""#;
        assert_eq!(decision, Decision::deny(expected));
        assert!(harness.logs().is_empty());
    }
}
