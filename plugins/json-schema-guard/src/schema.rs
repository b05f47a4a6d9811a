//! A small, deterministic subset of JSON Schema: parsed from the binding config, checked
//! against one value at a time.
//!
//! Supported keywords: `type` (a name or a list of names), `properties`, `required`, `enum`,
//! `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`,
//! `items` (one schema for every element), `additionalProperties` (`false`, `true` or a
//! schema), and the boolean schemas `true` and `false`. Annotations (`$schema`, `$id`,
//! `$comment`, `title`, `description`, `default`, `examples`) are ignored. Any other keyword
//! is a config error rather than silently unenforced.
//!
//! Lengths count Unicode code points, and `integer` accepts any number with no fractional
//! part (`1.0` too), as JSON Schema does. Objects are walked in key order (serde_json's map is
//! a `BTreeMap`), so the first violation reported is the same on every member.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Number, Value};

/// Keywords that describe a schema but do not constrain values.
const ANNOTATIONS: [&str; 7] = [
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
];

/// A parsed schema.
#[derive(Debug, Default)]
pub struct Schema {
    /// `false`: nothing matches.
    reject_all: bool,
    types: Option<Vec<JsonType>>,
    properties: BTreeMap<String, Schema>,
    required: Vec<String>,
    allowed: Option<Vec<Value>>,
    minimum: Option<Bound>,
    maximum: Option<Bound>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    items: Option<Box<Schema>>,
    additional: Option<Box<Schema>>,
}

/// A numeric bound, inclusive (`minimum`) or exclusive (`exclusiveMinimum`).
#[derive(Debug)]
struct Bound {
    limit: Number,
    exclusive: bool,
}

/// The seven JSON Schema type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonType {
    Null,
    Boolean,
    Object,
    Array,
    Number,
    Integer,
    String,
}

impl JsonType {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "null" => Self::Null,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            "number" => Self::Number,
            "integer" => Self::Integer,
            "string" => Self::String,
            other => return Err(format!("unknown type {other:?}")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::String => "string",
        }
    }

    /// The most specific type of `value` (`integer` for a whole number).
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Boolean,
            Value::Object(_) => Self::Object,
            Value::Array(_) => Self::Array,
            Value::Number(number) if is_integer(number) => Self::Integer,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
        }
    }

    fn matches(self, value: &Value) -> bool {
        let actual = Self::of(value);
        actual == self || (self == Self::Number && actual == Self::Integer)
    }
}

fn is_integer(number: &Number) -> bool {
    number.is_i64() || number.is_u64() || number.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// Orders two JSON numbers: exactly when both are integers, as `f64` otherwise.
fn compare(a: &Number, b: &Number) -> Ordering {
    let exact = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (exact(a), exact(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        // Both finite (JSON has no NaN), so partial_cmp always answers.
        _ => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

/// Where in the checked value a violation is, rendered only when there is one: `$`,
/// `$.port`, `$.servers[2].name`, `$["odd key"]`.
#[derive(Clone, Copy)]
pub enum Path<'a> {
    /// The value itself.
    Root,
    /// A property of an object.
    Property(&'a Path<'a>, &'a str),
    /// An element of an array.
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("$"),
            Self::Property(parent, name) => {
                let plain = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    write!(f, "{parent}.{name}")
                } else {
                    write!(f, "{parent}[{}]", Value::from(*name))
                }
            }
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// The first way a value fails its schema: `$.port: expected integer, got string`.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a path from `$`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn violation(path: &Path<'_>, message: impl Into<String>) -> Result<(), Violation> {
    Err(Violation {
        path: path.to_string(),
        message: message.into(),
    })
}

impl Schema {
    /// Parses a schema from the binding config's JSON.
    pub fn parse(config: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(config).map_err(|e| format!("config is not JSON: {e}"))?;
        Self::from_value(&value, &Path::Root)
    }

    /// Parses the schema `value`, found at `at` in the config (for error messages).
    fn from_value(value: &Value, at: &Path<'_>) -> Result<Self, String> {
        let object = match value {
            Value::Bool(accept) => {
                return Ok(Self {
                    reject_all: !accept,
                    ..Self::default()
                });
            }
            Value::Object(object) => object,
            _ => return Err(format!("schema at {at} is not an object or a boolean")),
        };
        let mut schema = Self::default();
        for (keyword, arg) in object {
            schema.set(keyword, arg, &Path::Property(at, keyword))?;
        }
        Ok(schema)
    }

    /// Applies one keyword of a schema object, found at `here`. Errors name where they are.
    fn set(&mut self, keyword: &str, arg: &Value, here: &Path<'_>) -> Result<(), String> {
        let at = |e: String| format!("{here}: {e}");
        match keyword {
            "type" => self.types = Some(parse_types(arg).map_err(at)?),
            "properties" => {
                for (name, sub) in as_object(arg).map_err(at)? {
                    let sub = Self::from_value(sub, &Path::Property(here, name))?;
                    self.properties.insert(name.clone(), sub);
                }
            }
            "required" => {
                self.required = as_array(arg)
                    .ok()
                    .and_then(|names| {
                        names
                            .iter()
                            .map(|name| name.as_str().map(str::to_owned))
                            .collect()
                    })
                    .ok_or_else(|| at("expected a list of property names".to_owned()))?;
            }
            "enum" => self.allowed = Some(as_array(arg).map_err(at)?.clone()),
            "minimum" | "exclusiveMinimum" => {
                self.minimum = Some(Bound {
                    limit: as_number(arg).map_err(at)?,
                    exclusive: keyword == "exclusiveMinimum",
                });
            }
            "maximum" | "exclusiveMaximum" => {
                self.maximum = Some(Bound {
                    limit: as_number(arg).map_err(at)?,
                    exclusive: keyword == "exclusiveMaximum",
                });
            }
            "minLength" => self.min_length = Some(as_count(arg).map_err(at)?),
            "maxLength" => self.max_length = Some(as_count(arg).map_err(at)?),
            "items" => self.items = Some(Box::new(Self::from_value(arg, here)?)),
            "additionalProperties" => {
                self.additional = Some(Box::new(Self::from_value(arg, here)?));
            }
            annotation if ANNOTATIONS.contains(&annotation) => {}
            unsupported => return Err(at(format!("unsupported keyword {unsupported:?}"))),
        }
        Ok(())
    }

    /// Checks `value`, found at `path`, and returns the first violation.
    pub fn validate(&self, value: &Value, path: &Path<'_>) -> Result<(), Violation> {
        if self.reject_all {
            return violation(path, "not allowed");
        }
        if let Some(types) = &self.types
            && !types.iter().any(|ty| ty.matches(value))
        {
            let expected: Vec<&str> = types.iter().map(|ty| ty.name()).collect();
            let expected = expected.join(" or ");
            let got = JsonType::of(value).name();
            return violation(path, format!("expected {expected}, got {got}"));
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            return violation(path, format!("not one of {}", Value::from(allowed.clone())));
        }
        match value {
            Value::Number(number) => self.validate_number(number, path),
            Value::String(string) => self.validate_string(string, path),
            Value::Array(elements) => self.validate_array(elements, path),
            Value::Object(object) => self.validate_object(object, path),
            Value::Null | Value::Bool(_) => Ok(()),
        }
    }

    fn validate_number(&self, number: &Number, path: &Path<'_>) -> Result<(), Violation> {
        if let Some(Bound { limit, exclusive }) = &self.minimum {
            match compare(number, limit) {
                Ordering::Less => return violation(path, format!("{number} is below {limit}")),
                Ordering::Equal if *exclusive => {
                    return violation(path, format!("{number} is not above {limit}"));
                }
                _ => {}
            }
        }
        if let Some(Bound { limit, exclusive }) = &self.maximum {
            match compare(number, limit) {
                Ordering::Greater => {
                    return violation(path, format!("{number} is above {limit}"));
                }
                Ordering::Equal if *exclusive => {
                    return violation(path, format!("{number} is not below {limit}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate_string(&self, string: &str, path: &Path<'_>) -> Result<(), Violation> {
        let length = string.chars().count() as u64;
        if let Some(min) = self.min_length
            && length < min
        {
            return violation(path, format!("shorter than {min} characters"));
        }
        if let Some(max) = self.max_length
            && length > max
        {
            return violation(path, format!("longer than {max} characters"));
        }
        Ok(())
    }

    fn validate_array(&self, elements: &[Value], path: &Path<'_>) -> Result<(), Violation> {
        if let Some(items) = &self.items {
            for (index, element) in elements.iter().enumerate() {
                items.validate(element, &Path::Index(path, index))?;
            }
        }
        Ok(())
    }

    fn validate_object(
        &self,
        object: &Map<String, Value>,
        path: &Path<'_>,
    ) -> Result<(), Violation> {
        for name in &self.required {
            if !object.contains_key(name) {
                return violation(&Path::Property(path, name), "missing required property");
            }
        }
        for (name, member) in object {
            let here = Path::Property(path, name);
            match (self.properties.get(name), &self.additional) {
                (Some(schema), _) => schema.validate(member, &here)?,
                (None, Some(additional)) if additional.reject_all => {
                    return violation(&here, "property not allowed");
                }
                (None, Some(additional)) => additional.validate(member, &here)?,
                (None, None) => {}
            }
        }
        Ok(())
    }
}

fn parse_types(arg: &Value) -> Result<Vec<JsonType>, String> {
    match arg {
        Value::String(name) => Ok(vec![JsonType::parse(name)?]),
        Value::Array(names) if !names.is_empty() => names
            .iter()
            .map(|name| {
                name.as_str()
                    .ok_or_else(|| "expected a type name".to_owned())
                    .and_then(JsonType::parse)
            })
            .collect(),
        _ => Err("expected a type name or a non-empty list of them".to_owned()),
    }
}

fn as_object(arg: &Value) -> Result<&Map<String, Value>, String> {
    arg.as_object()
        .ok_or_else(|| "expected an object".to_owned())
}

fn as_array(arg: &Value) -> Result<&Vec<Value>, String> {
    arg.as_array().ok_or_else(|| "expected a list".to_owned())
}

fn as_number(arg: &Value) -> Result<Number, String> {
    match arg {
        Value::Number(number) => Ok(number.clone()),
        _ => Err("expected a number".to_owned()),
    }
}

fn as_count(arg: &Value) -> Result<u64, String> {
    arg.as_u64()
        .ok_or_else(|| "expected a non-negative integer".to_owned())
}

#[cfg(test)]
#[path = "schema_test.rs"]
mod tests;
