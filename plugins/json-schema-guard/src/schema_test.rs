use serde_json::json;

use super::*;

/// Validates `value` against `schema` and renders the first violation, if any.
fn check(schema: Value, value: Value) -> Result<(), String> {
    let schema = Schema::parse(schema.to_string().as_bytes()).expect("schema parses");
    schema
        .validate(&value, &Path::Root)
        .map_err(|violation| violation.to_string())
}

/// `type` names the expected and the actual type, and `integer` accepts whole floats.
#[test]
fn types() {
    let schema = json!({"type": "integer"});
    assert_eq!(check(schema.clone(), json!(3)), Ok(()));
    assert_eq!(check(schema.clone(), json!(3.0)), Ok(()));
    assert_eq!(
        check(schema.clone(), json!(3.5)),
        Err("$: expected integer, got number".into())
    );
    assert_eq!(
        check(schema, json!("3")),
        Err("$: expected integer, got string".into())
    );
    let either = json!({"type": ["string", "null"]});
    assert_eq!(check(either.clone(), json!(null)), Ok(()));
    assert_eq!(
        check(either, json!(true)),
        Err("$: expected string or null, got boolean".into())
    );
    assert_eq!(check(json!({"type": "number"}), json!(7)), Ok(()));
}

/// Properties, required and additionalProperties report the failing property's path.
#[test]
fn objects() {
    let schema = json!({
        "type": "object",
        "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "host": {"type": "string", "minLength": 1}
        },
        "required": ["host"],
        "additionalProperties": false
    });
    assert_eq!(
        check(schema.clone(), json!({"host": "a", "port": 80})),
        Ok(())
    );
    assert_eq!(
        check(schema.clone(), json!({"host": "a", "port": "80"})),
        Err("$.port: expected integer, got string".into())
    );
    assert_eq!(
        check(schema.clone(), json!({"port": 80})),
        Err("$.host: missing required property".into())
    );
    assert_eq!(
        check(schema.clone(), json!({"host": "a", "odd key": 1})),
        Err(r#"$["odd key"]: property not allowed"#.into())
    );
    assert_eq!(
        check(schema, json!({"host": "a", "port": 70000})),
        Err("$.port: 70000 is above 65535".into())
    );
    let typed_extras = json!({"additionalProperties": {"type": "string"}});
    assert_eq!(
        check(typed_extras, json!({"a": "x", "b": 2})),
        Err("$.b: expected string, got integer".into())
    );
}

/// items checks every element and names its index.
#[test]
fn arrays() {
    let schema = json!({
        "type": "array",
        "items": {"type": "object", "properties": {"name": {"maxLength": 3}}}
    });
    assert_eq!(check(schema.clone(), json!([{"name": "abc"}])), Ok(()));
    assert_eq!(
        check(schema, json!([{"name": "abc"}, {"name": "abcd"}])),
        Err("$[1].name: longer than 3 characters".into())
    );
}

/// enum compares whole JSON values; bounds are inclusive unless exclusive.
#[test]
fn enums_and_bounds() {
    let level = json!({"enum": ["debug", "info"]});
    assert_eq!(check(level.clone(), json!("info")), Ok(()));
    assert_eq!(
        check(level, json!("trace")),
        Err(r#"$: not one of ["debug","info"]"#.into())
    );
    let bounded = json!({"minimum": 0, "exclusiveMaximum": 1.5});
    assert_eq!(check(bounded.clone(), json!(0)), Ok(()));
    assert_eq!(check(bounded.clone(), json!(1)), Ok(()));
    assert_eq!(
        check(bounded.clone(), json!(-1)),
        Err("$: -1 is below 0".into())
    );
    assert_eq!(
        check(bounded, json!(1.5)),
        Err("$: 1.5 is not below 1.5".into())
    );
    // Exact comparison beyond f64's integer precision.
    let big = json!({"maximum": 9007199254740993_u64});
    assert_eq!(check(big.clone(), json!(9007199254740993_u64)), Ok(()));
    assert!(check(big, json!(9007199254740994_u64)).is_err());
}

/// Lengths count code points, not bytes.
#[test]
fn string_lengths_count_characters() {
    let schema = json!({"minLength": 2, "maxLength": 2});
    assert_eq!(check(schema.clone(), json!("é!")), Ok(()));
    assert_eq!(
        check(schema, json!("é")),
        Err("$: shorter than 2 characters".into())
    );
}

/// Boolean schemas accept everything or nothing.
#[test]
fn boolean_schemas() {
    assert_eq!(check(json!(true), json!({"anything": 1})), Ok(()));
    assert_eq!(
        check(json!({"properties": {"x": false}}), json!({"x": 1})),
        Err("$.x: not allowed".into())
    );
}

/// Unknown keywords and malformed arguments are config errors, not silently ignored;
/// annotations are fine.
#[test]
fn bad_schemas_are_rejected() {
    let parse = |schema: Value| Schema::parse(schema.to_string().as_bytes()).map(|_| ());
    assert_eq!(
        parse(json!({"pattern": "^a"})),
        Err(r#"$.pattern: unsupported keyword "pattern""#.into())
    );
    assert_eq!(
        parse(json!({"properties": {"a": {"type": "float"}}})),
        Err(r#"$.properties.a.type: unknown type "float""#.into())
    );
    assert_eq!(
        parse(json!({"minLength": -1})),
        Err("$.minLength: expected a non-negative integer".into())
    );
    assert_eq!(
        parse(json!(3)),
        Err("schema at $ is not an object or a boolean".into())
    );
    assert!(Schema::parse(b"{not json").is_err());
    assert_eq!(
        parse(json!({"$schema": "x", "title": "t", "description": "d", "type": "null"})),
        Ok(())
    );
}
