//! What `cairnctl` prints, in etcdctl's five output formats (`-w/--write-out`):
//!
//! - `simple`: etcdctl's human lines (`--hex` writes keys and values as `\x66\x6f\x6f`);
//! - `json`: Go's `encoding/json` of the response, as etcdctl writes it ([`gojson`]);
//! - `fields`: one `"Name" : value` line per field, values quoted as Go's `%q` quotes them;
//! - `protobuf`: the response message's wire bytes;
//! - `table`: the tables etcdctl draws (member list, endpoint health, status and hashkv,
//!   snapshot status).
//!
//! A response type says which formats it supports by implementing the methods of
//! [`Printable`]; the others fail as etcdctl fails them (`table not supported as output
//! format`, exit status 4). Printers write to any `Write`, so tests read what a user sees.

pub mod gojson;
mod kv;
mod table;

pub use kv::{WatchShown, print_kv};
pub use table::Table;

use std::io::{self, Write};

use cairn_proto::etcdserverpb::ResponseHeader;

use crate::error::Error;
use gojson::{GoJson, Obj};

/// `-w/--write-out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteOut {
    Simple,
    Json,
    Fields,
    Protobuf,
    Table,
}

impl WriteOut {
    pub fn name(self) -> &'static str {
        match self {
            WriteOut::Simple => "simple",
            WriteOut::Json => "json",
            WriteOut::Fields => "fields",
            WriteOut::Protobuf => "protobuf",
            WriteOut::Table => "table",
        }
    }
}

/// How `simple` writes keys and values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    /// `--hex`: every byte as `\xNN`.
    pub hex: bool,
    /// `get --print-value-only`: values without their keys.
    pub value_only: bool,
}

/// The output format and style of one command.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: WriteOut,
    pub style: Style,
}

/// Something a command prints. `simple` is required; each other format is supported when its
/// method returns `Some`.
pub trait Printable {
    fn simple(&self, out: &mut dyn Write, style: Style) -> io::Result<()>;

    /// The Go JSON document etcdctl prints.
    fn json(&self) -> Option<String> {
        None
    }

    fn fields(&self, _out: &mut dyn Write) -> Option<io::Result<()>> {
        None
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        None
    }

    fn table(&self) -> Option<Table> {
        None
    }
}

impl Printer {
    pub fn new(format: WriteOut, hex: bool) -> Self {
        Printer {
            format,
            style: Style {
                hex,
                value_only: false,
            },
        }
    }

    /// Prints `item` in this printer's format.
    pub fn print(&self, out: &mut dyn Write, item: &dyn Printable) -> Result<(), Error> {
        let unsupported = || {
            Error::Unsupported(format!(
                "{} not supported as output format",
                self.format.name()
            ))
        };
        match self.format {
            WriteOut::Simple => item.simple(out, self.style)?,
            WriteOut::Json => {
                let json = item.json().ok_or_else(unsupported)?;
                writeln!(out, "{json}")?;
            }
            WriteOut::Fields => item.fields(out).ok_or_else(unsupported)??,
            WriteOut::Protobuf => out.write_all(&item.protobuf().ok_or_else(unsupported)?)?,
            WriteOut::Table => item.table().ok_or_else(unsupported)?.render(out)?,
        }
        Ok(())
    }

    pub fn is_simple(&self) -> bool {
        self.format == WriteOut::Simple
    }
}

/// A printer of lines: a simple or fields output written by a closure.
pub type Lines<'a> = &'a dyn Fn(&mut dyn Write) -> io::Result<()>;

/// A response whose simple and fields output are given by closures (most commands), and whose
/// JSON and protobuf are the message's own.
pub struct Shown<'a, R> {
    pub response: &'a R,
    pub simple: Lines<'a>,
    /// `None`: etcdctl has no fields output for this command.
    pub fields: Option<Lines<'a>>,
    /// Whether etcdctl can print this response as protobuf.
    pub protobuf: bool,
}

impl<R: GoJson + prost::Message> Printable for Shown<'_, R> {
    fn simple(&self, out: &mut dyn Write, _style: Style) -> io::Result<()> {
        (self.simple)(out)
    }

    fn json(&self) -> Option<String> {
        Some(self.response.to_go_json())
    }

    fn fields(&self, out: &mut dyn Write) -> Option<io::Result<()>> {
        self.fields.map(|fields| fields(out))
    }

    fn protobuf(&self) -> Option<Vec<u8>> {
        self.protobuf.then(|| self.response.encode_to_vec())
    }
}

impl GoJson for ResponseHeader {
    fn go_json(&self, out: &mut String) {
        let mut obj = Obj::open(out);
        header_fields(&mut obj, Some(self));
        obj.close();
    }
}

/// A header's fields, flattened into `obj` (Go's embedded `*pb.ResponseHeader`).
pub fn header_fields(obj: &mut Obj<'_>, header: Option<&ResponseHeader>) {
    if let Some(h) = header {
        obj.int("cluster_id", h.cluster_id)
            .int("member_id", h.member_id)
            .int("revision", h.revision)
            .int("raft_term", h.raft_term);
    }
}

/// etcdctl's fields header lines (all zero when the response has none).
pub fn fields_header(out: &mut dyn Write, header: Option<&ResponseHeader>) -> io::Result<()> {
    let h = header.cloned().unwrap_or_default();
    writeln!(out, "\"ClusterID\" : {}", h.cluster_id)?;
    writeln!(out, "\"MemberID\" : {}", h.member_id)?;
    writeln!(out, "\"Revision\" : {}", h.revision)?;
    writeln!(out, "\"RaftTerm\" : {}", h.raft_term)
}

/// Go's `%q`: a double-quoted string with Go escapes; bytes that are not UTF-8 as `\xNN`.
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(text) => (text, &[][..]),
            Err(e) => {
                let (good, after) = rest.split_at(e.valid_up_to());
                // `good` is valid UTF-8: `valid_up_to` says so.
                let text = std::str::from_utf8(good).unwrap_or_default();
                let bad_len = e.error_len().unwrap_or(after.len());
                (text, &after[..bad_len])
            }
        };
        for c in valid.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => {
                    if (c as u32) < 0x10000 {
                        out.push_str(&format!("\\u{:04x}", c as u32));
                    } else {
                        out.push_str(&format!("\\U{:08x}", c as u32));
                    }
                }
                c => out.push(c),
            }
        }
        for b in bad {
            out.push_str(&format!("\\x{b:02x}"));
        }
        rest = &rest[valid.len() + bad.len()..];
    }
    out.push('"');
    out
}

/// `--hex`: `\x66\x6f\x6f`.
pub fn hex_escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(go_quote(b"with space"), "\"with space\"");
        assert_eq!(go_quote(b"a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote(b"\x01\x7f"), "\"\\x01\\x7f\"");
        assert_eq!(go_quote(b"caf\xc3\xa9 \xff!"), "\"caf\u{e9} \\xff!\"");
    }

    #[test]
    fn hex_escapes_every_byte() {
        assert_eq!(hex_escaped(b"foo"), "\\x66\\x6f\\x6f");
    }
}
