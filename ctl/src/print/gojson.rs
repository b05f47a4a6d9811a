//! JSON as etcdctl writes it: Go's `encoding/json` over etcd's generated structs, which is not
//! proto3 JSON. Field names are the proto field names (`cluster_id`, `dbSize`), zero values are
//! left out (`omitempty`), 64-bit integers are plain numbers, bytes are standard base64, enums
//! are their numbers, and strings escape `<`, `>` and `&` as Go does.
//!
//! [`Obj`] writes one object field by field, in the order the Go struct declares them; each
//! printable response says which fields it has (see `print::json`).

use base64::Engine;

/// A JSON object being written into a `String`.
pub struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    pub fn open(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, empty: true }
    }

    pub fn close(self) {
        self.out.push('}');
    }

    /// Writes `"name":` and returns the buffer for the value.
    fn key(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        string(self.out, name.as_bytes());
        self.out.push(':');
        self.out
    }

    /// An integer field, left out when zero.
    pub fn int(&mut self, name: &str, value: impl Into<i128>) -> &mut Self {
        let value = value.into();
        if value != 0 {
            self.int_always(name, value);
        }
        self
    }

    /// An integer field without `omitempty`.
    pub fn int_always(&mut self, name: &str, value: impl Into<i128>) -> &mut Self {
        let value = value.into();
        self.key(name).push_str(&value.to_string());
        self
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        if value {
            self.bool_always(name, value);
        }
        self
    }

    pub fn bool_always(&mut self, name: &str, value: bool) -> &mut Self {
        self.key(name)
            .push_str(if value { "true" } else { "false" });
        self
    }

    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        if !value.is_empty() {
            self.str_always(name, value);
        }
        self
    }

    pub fn str_always(&mut self, name: &str, value: &str) -> &mut Self {
        string(self.key(name), value.as_bytes());
        self
    }

    /// A `[]byte` field: base64, left out when empty.
    pub fn bytes(&mut self, name: &str, value: &[u8]) -> &mut Self {
        if !value.is_empty() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            string(self.key(name), encoded.as_bytes());
        }
        self
    }

    /// A `[][]byte` field without `omitempty` (`null` when empty, as Go writes a nil slice).
    pub fn bytes_list_always(&mut self, name: &str, values: &[Vec<u8>]) -> &mut Self {
        let out = self.key(name);
        if values.is_empty() {
            out.push_str("null");
            return self;
        }
        out.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            string(out, encoded.as_bytes());
        }
        out.push(']');
        self
    }

    /// A `[]string` field, left out when empty.
    pub fn strs(&mut self, name: &str, values: &[String]) -> &mut Self {
        if values.is_empty() {
            return self;
        }
        let out = self.key(name);
        out.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(out, value.as_bytes());
        }
        out.push(']');
        self
    }

    /// A nested message, left out when absent.
    pub fn msg<T: GoJson + ?Sized>(&mut self, name: &str, value: Option<&T>) -> &mut Self {
        if let Some(value) = value {
            value.go_json(self.key(name));
        }
        self
    }

    /// A nested message without `omitempty` (`null` when absent).
    pub fn msg_always<T: GoJson>(&mut self, name: &str, value: Option<&T>) -> &mut Self {
        match value {
            Some(value) => value.go_json(self.key(name)),
            None => self.key(name).push_str("null"),
        }
        self
    }

    /// A repeated message, left out when empty.
    pub fn list<T: GoJson>(&mut self, name: &str, values: &[T]) -> &mut Self {
        if !values.is_empty() {
            self.list_always(name, values);
        }
        self
    }

    /// A repeated message without `omitempty` (`null` when empty).
    pub fn list_always<T: GoJson>(&mut self, name: &str, values: &[T]) -> &mut Self {
        let out = self.key(name);
        list(out, values);
        self
    }

    /// A raw JSON value (already encoded).
    pub fn raw(&mut self, name: &str, json: &str) -> &mut Self {
        self.key(name).push_str(json);
        self
    }
}

/// A Go value `encoding/json` can write.
pub trait GoJson {
    fn go_json(&self, out: &mut String);

    /// The value as a JSON document.
    fn to_go_json(&self) -> String {
        let mut out = String::new();
        self.go_json(&mut out);
        out
    }
}

/// A slice: `null` when empty (Go's nil slice), else `[a,b]`.
pub fn list<T: GoJson>(out: &mut String, values: &[T]) {
    if values.is_empty() {
        out.push_str("null");
        return;
    }
    out.push('[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        value.go_json(out);
    }
    out.push(']');
}

/// A JSON string as Go's encoder writes it: HTML-safe (`<`, `>`, `&` as `\u003c`...),
/// U+2028 and U+2029 escaped, and invalid UTF-8 replaced by U+FFFD.
pub fn string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let mut out = String::new();
        string(&mut out, b"a<b>&\"\\\n\x01\xff\xe2\x80\xa8");
        assert_eq!(
            out,
            "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\u{fffd}\\u2028\""
        );
    }

    #[test]
    fn zero_fields_are_left_out() {
        let mut out = String::new();
        let mut obj = Obj::open(&mut out);
        obj.int("a", 0i64)
            .int("b", 7u64)
            .bool("c", false)
            .str("d", "")
            .bytes("e", b"")
            .bytes("f", b"foo")
            .int_always("g", 0i64);
        obj.close();
        assert_eq!(out, r#"{"b":7,"f":"Zm9v","g":0}"#);
    }
}
