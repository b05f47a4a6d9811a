//! A Cairn computed compare: how many keys are under a prefix, or an integer field of a JSON
//! value.
//!
//! The argument is either
//! - a key prefix, e.g. `/jobs/`: the number of keys that start with it (the empty argument
//!   counts every key), or
//! - `json:<key>#<field>`, e.g. `json:/config/app#replicas`: the integer `<field>` of the
//!   JSON object stored at `<key>`. `<key>` runs to the last `#`, so keys may contain `#` but
//!   field names may not; `<field>` is a top-level field name, not a path. It is an error
//!   (and so the compare is false) if the key is missing, its value is not a JSON object, the
//!   field is missing, or the field is not an integer that fits in 64 bits.
//!
//! Both are `Value::Int`, compared with the compare's integer target. The binding config is
//! not used.

use cairn_sdk::{Compare, Context, Value};

/// What marks a JSON-field argument.
pub const JSON_MARKER: &[u8] = b"json:";

/// The compare: counts keys, or reads an integer field.
pub struct CountCompare;

impl Compare for CountCompare {
    fn compute(ctx: &Context<'_>, argument: &[u8]) -> Result<Value, String> {
        match argument.strip_prefix(JSON_MARKER) {
            Some(target) => json_field(ctx, target),
            None => {
                let count = ctx.store().count_prefix(argument);
                // A store cannot hold 2^63 keys, but say so rather than wrap.
                i64::try_from(count)
                    .map(Value::Int)
                    .map_err(|_| format!("{count} keys do not fit in an int"))
            }
        }
    }
}

cairn_sdk::export_compare!(CountCompare);

/// The integer field named by `target` (`<key>#<field>`).
fn json_field(ctx: &Context<'_>, target: &[u8]) -> Result<Value, String> {
    let split = target
        .iter()
        .rposition(|&byte| byte == b'#')
        .ok_or("json: argument must be json:<key>#<field>")?;
    let (key, field) = (&target[..split], &target[split + 1..]);
    let shown_key = String::from_utf8_lossy(key);
    let field = std::str::from_utf8(field)
        .map_err(|_| format!("json:{shown_key}: field name is not UTF-8"))?;
    let kv = ctx
        .store()
        .get(key)
        .ok_or_else(|| format!("json:{shown_key}: no such key"))?;
    let value: serde_json::Value = serde_json::from_slice(&kv.value)
        .map_err(|e| format!("json:{shown_key}: value is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| format!("json:{shown_key}: value is not a JSON object"))?;
    let member = object
        .get(field)
        .ok_or_else(|| format!("json:{shown_key}: no field {field:?}"))?;
    member
        .as_i64()
        .map(Value::Int)
        .ok_or_else(|| format!("json:{shown_key}: field {field:?} is not a 64-bit integer"))
}

#[cfg(test)]
mod tests {
    use cairn_sdk::testing::{self, MemStore};

    use super::*;

    fn compute(store: &MemStore, argument: &str) -> Result<Value, String> {
        testing::compute::<CountCompare>(store, b"", argument.as_bytes())
    }

    fn store() -> MemStore {
        MemStore::new()
            .with("/jobs/a", "1")
            .with("/jobs/b", "2")
            .with("/jobsx", "3")
            .with(
                "/config/app",
                r#"{"replicas": 3, "ratio": 0.5, "name": "app"}"#,
            )
            .with("/config/a#b", r#"{"n": -7}"#)
            .with("/config/list", "[1, 2]")
    }

    /// A plain argument counts the keys under it, and only those.
    #[test]
    fn counts_keys_under_a_prefix() {
        let store = store();
        assert_eq!(compute(&store, "/jobs/"), Ok(Value::Int(2)));
        assert_eq!(compute(&store, "/jobs"), Ok(Value::Int(3)));
        assert_eq!(compute(&store, "/nothing/"), Ok(Value::Int(0)));
        assert_eq!(compute(&store, ""), Ok(Value::Int(6)));
    }

    /// json:<key>#<field> reads an integer field; the key may contain '#'.
    #[test]
    fn reads_integer_fields() {
        let store = store();
        assert_eq!(
            compute(&store, "json:/config/app#replicas"),
            Ok(Value::Int(3))
        );
        assert_eq!(compute(&store, "json:/config/a#b#n"), Ok(Value::Int(-7)));
    }

    /// Every way the field can be unusable is an error naming the key.
    #[test]
    fn unusable_fields_are_errors() {
        let store = store();
        let cases = [
            (
                "json:/config/app",
                "json: argument must be json:<key>#<field>",
            ),
            (
                "json:/config/none#replicas",
                "json:/config/none: no such key",
            ),
            ("json:/jobs/a#x", "json:/jobs/a: value is not a JSON object"),
            (
                "json:/config/list#x",
                "json:/config/list: value is not a JSON object",
            ),
            (
                "json:/config/app#size",
                r#"json:/config/app: no field "size""#,
            ),
            (
                "json:/config/app#ratio",
                r#"json:/config/app: field "ratio" is not a 64-bit integer"#,
            ),
            (
                "json:/config/app#name",
                r#"json:/config/app: field "name" is not a 64-bit integer"#,
            ),
        ];
        for (argument, error) in cases {
            assert_eq!(
                compute(&store, argument),
                Err(error.to_owned()),
                "{argument}"
            );
        }
        let not_json = MemStore::new().with("/k", "{oops");
        let Err(error) = compute(&not_json, "json:/k#f") else {
            panic!("non-JSON value read");
        };
        assert!(error.starts_with("json:/k: value is not JSON"), "{error}");
    }
}
