//! etcdctl 3.4's `txn` input, read into a `TxnRequest`, plus Cairn's computed compare.
//!
//! The input is three sections, each ended by a blank line (or the end of input): compares,
//! the ops run on success, the ops run on failure.
//!
//! ```text
//! value("k") = "v"                      compare: target("key") op "value"
//! computed("quota", "tenant-a") < 100   Cairn: computed("binding", "argument") op int|"bytes"
//!                                       (blank line)
//! put k v                               success ops: put <key> <value>, get <key> [<end>],
//! get k                                              del <key> [<end>], get/del --prefix <key>
//!                                       (blank line)
//! get k                                 failure ops
//! ```
//!
//! Targets are etcdctl's: `value`/`val`, `version`/`ver`, `create`/`c`, `mod`/`m`, `lease`;
//! operators `=`, `!=`, `<`, `>`. Strings are Go-quoted as etcdctl scans them (`"..."` with Go's
//! escapes, including `\xNN` for any byte, or a raw `` `...` ``); ops also take `'raw'` and bare
//! words. The numeric targets take `"3"` as etcdctl does, or a bare `3`. A computed compare's
//! right side decides its type: a bare integer is compared as an int, a quoted string as bytes.
//! Pure: no I/O beyond the reader and the prompt writer handed in.

use std::io::{self, BufRead, Write};

use cairn_proto::etcdserverpb::{
    CairnComputed, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    cairn_computed::Expected,
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
};

use crate::key_range::prefix_range_end;

/// Lines read per section at most: far above any server's op limit (etcd's is 128), low
/// enough that a runaway pipe fails fast instead of filling memory.
pub const MAX_LINES_PER_SECTION: usize = 10_000;

const TARGETS: &str = "value, version, create, mod, lease or computed";
const OPERATORS: &str = "=, !=, <, >";

/// Why the txn input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TxnParseError {
    #[error("bad compare \"{line}\": expected {expected}")]
    BadCompare { line: String, expected: String },
    #[error("bad op \"{line}\": expected {expected}")]
    BadOp { line: String, expected: String },
    #[error("txn input has more than {MAX_LINES_PER_SECTION} lines in one section")]
    TooLong,
    #[error("txn input: {0}")]
    Io(#[from] io::Error),
}

/// Reads the three sections from `input`. With `prompts`, writes etcdctl's interactive prompts
/// before each section.
pub fn read_txn(
    input: &mut dyn BufRead,
    mut prompts: Option<&mut dyn Write>,
) -> Result<TxnRequest, TxnParseError> {
    prompt(&mut prompts, "compares:")?;
    let compare = read_section(input, parse_compare)?;
    prompt(&mut prompts, "success requests (get, put, del):")?;
    let success = read_section(input, parse_op)?;
    prompt(&mut prompts, "failure requests (get, put, del):")?;
    let failure = read_section(input, parse_op)?;
    Ok(TxnRequest {
        compare,
        success,
        failure,
    })
}

fn prompt(prompts: &mut Option<&mut dyn Write>, text: &str) -> io::Result<()> {
    if let Some(out) = prompts {
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(())
}

/// Lines up to a blank line or the end of input, each parsed by `parse`.
fn read_section<T>(
    input: &mut dyn BufRead,
    parse: fn(&str) -> Result<T, TxnParseError>,
) -> Result<Vec<T>, TxnParseError> {
    let mut items = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(items);
        }
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Ok(items);
        }
        if items.len() == MAX_LINES_PER_SECTION {
            return Err(TxnParseError::TooLong);
        }
        items.push(parse(trimmed)?);
    }
}

/// One compare line: `target("key") op value` or `computed("binding"[, "argument"]) op value`.
pub fn parse_compare(line: &str) -> Result<Compare, TxnParseError> {
    let line = line.trim();
    let bad = |expected: String| TxnParseError::BadCompare {
        line: line.to_owned(),
        expected,
    };
    let mut cursor = Cursor::new(line);
    let name = cursor.ident();
    cursor.skip_ws();
    let open = cursor.eat('(');
    let target = match (Target::from_name(name), open) {
        (Some(target), true) => target,
        (Some(_), false) => return Err(bad(format!("\"(\" after the target \"{name}\""))),
        (None, true) if !name.is_empty() => {
            return Err(bad(format!("a target of {TARGETS}, found \"{name}\"")));
        }
        (None, _) => {
            return Err(bad(format!(
                "a target ({TARGETS}) and a quoted key, e.g. value(\"k\") = \"v\""
            )));
        }
    };
    let first = cursor.quoted().map_err(bad)?.ok_or_else(|| {
        bad(match target {
            Target::Computed => "a quoted binding name after \"(\"".to_owned(),
            _ => "a quoted key after \"(\"".to_owned(),
        })
    })?;
    let mut argument = None;
    if target == Target::Computed {
        cursor.skip_ws();
        if cursor.eat(',') {
            argument = Some(
                cursor
                    .quoted()
                    .map_err(bad)?
                    .ok_or_else(|| bad("a quoted argument after \",\"".to_owned()))?,
            );
        }
    }
    cursor.skip_ws();
    if !cursor.eat(')') {
        return Err(bad(match (target, &argument) {
            (Target::Computed, None) => {
                "\",\" and a quoted argument, or \")\", after the binding name"
            }
            (Target::Computed, Some(_)) => "\")\" after the argument",
            _ => "\")\" after the key",
        }
        .to_owned()));
    }
    cursor.skip_ws();
    let result = match cursor.operator() {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        "" => return Err(bad(format!("an operator ({OPERATORS}) after \")\""))),
        other => return Err(bad(format!("an operator ({OPERATORS}), found \"{other}\""))),
    };
    cursor.skip_ws();
    let value = cursor.value().map_err(bad)?;
    cursor.skip_ws();
    if !cursor.rest().is_empty() {
        return Err(bad(format!(
            "nothing after the value, found \"{}\"",
            cursor.rest()
        )));
    }
    target
        .compare(first, argument.unwrap_or_default(), result, value)
        .map_err(bad)
}

/// A compare's left side, by its etcdctl name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Value,
    Version,
    Create,
    Mod,
    Lease,
    Computed,
}

impl Target {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "value" | "val" => Self::Value,
            "version" | "ver" => Self::Version,
            "create" | "c" => Self::Create,
            "mod" | "m" => Self::Mod,
            "lease" => Self::Lease,
            "computed" => Self::Computed,
            _ => return None,
        })
    }

    /// The compare for `first` (a key, or a computed compare's binding) and its right side.
    fn compare(
        self,
        first: Vec<u8>,
        argument: Vec<u8>,
        result: CompareResult,
        value: Value,
    ) -> Result<Compare, String> {
        let (target, target_union) = match self {
            Self::Value => (CompareTarget::Value, TargetUnion::Value(value.bytes()?)),
            Self::Version => (
                CompareTarget::Version,
                TargetUnion::Version(value.integer("version")?),
            ),
            Self::Create => (
                CompareTarget::Create,
                TargetUnion::CreateRevision(value.integer("revision")?),
            ),
            Self::Mod => (
                CompareTarget::Mod,
                TargetUnion::ModRevision(value.integer("revision")?),
            ),
            Self::Lease => (
                CompareTarget::Lease,
                TargetUnion::Lease(value.integer("lease ID")?),
            ),
            Self::Computed => return computed_compare(first, argument, result, value),
        };
        Ok(Compare {
            result: result as i32,
            target: target as i32,
            key: first,
            target_union: Some(target_union),
            ..Compare::default()
        })
    }
}

/// Cairn's computed compare. The key carries the binding name too, so that anything that
/// looks only at a compare's key (logs, a proxy) sees which binding it reads.
fn computed_compare(
    binding: Vec<u8>,
    argument: Vec<u8>,
    result: CompareResult,
    value: Value,
) -> Result<Compare, String> {
    let name = String::from_utf8(binding.clone()).map_err(|_| "a UTF-8 binding name".to_owned())?;
    if name.is_empty() {
        return Err("a non-empty binding name".to_owned());
    }
    let expected = match value {
        Value::Quoted(bytes) => Expected::BytesValue(bytes),
        Value::Bare(word) => Expected::IntValue(word.parse().map_err(|_| {
            format!("an integer or a quoted value after the operator, found {word}")
        })?),
        Value::Missing => {
            return Err("an integer or a quoted value after the operator".to_owned());
        }
    };
    Ok(Compare {
        result: result as i32,
        target: CompareTarget::CairnComputed as i32,
        key: binding,
        computed: Some(CairnComputed {
            binding: name,
            argument,
            expected: Some(expected),
        }),
        ..Compare::default()
    })
}

/// A compare's right side as written.
enum Value {
    Quoted(Vec<u8>),
    Bare(String),
    Missing,
}

impl Value {
    /// Bytes, quoted as etcdctl wants them.
    fn bytes(self) -> Result<Vec<u8>, String> {
        match self {
            Value::Quoted(bytes) => Ok(bytes),
            Value::Bare(word) => Err(format!("a quoted value, e.g. \"v\", found {word}")),
            Value::Missing => Err("a quoted value after the operator".to_owned()),
        }
    }

    /// An integer, quoted as etcdctl wants it (`"3"`) or bare (`3`).
    fn integer(self, what: &str) -> Result<i64, String> {
        let text = match self {
            Value::Quoted(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Value::Bare(word) => word,
            Value::Missing => {
                return Err(format!("an integer {what} after the operator, e.g. \"3\""));
            }
        };
        text.parse()
            .map_err(|_| format!("an integer {what}, found \"{text}\""))
    }
}

/// One op line: `put <key> <value>`, `get <key> [<range_end>]`, `del <key> [<range_end>]`,
/// or `get`/`del` with `--prefix <key>`.
pub fn parse_op(line: &str) -> Result<RequestOp, TxnParseError> {
    let line = line.trim();
    let bad = |expected: String| TxnParseError::BadOp {
        line: line.to_owned(),
        expected,
    };
    let words = argify(line).map_err(bad)?;
    let Some((command, args)) = words.split_first() else {
        return Err(bad("put, get or del".to_owned()));
    };
    let command = match (command.quoted, command.text.as_slice()) {
        (false, b"put") => "put",
        (false, b"get") => "get",
        (false, b"del") => "del",
        _ => {
            return Err(bad(format!(
                "put, get or del, found \"{}\"",
                String::from_utf8_lossy(&command.text)
            )));
        }
    };
    let (flags, positional): (Vec<&Word>, Vec<&Word>) = args
        .iter()
        .partition(|word| !word.quoted && word.text.starts_with(b"--"));
    let mut prefix = false;
    for flag in flags {
        match (command, flag.text.as_slice()) {
            ("get" | "del", b"--prefix") => prefix = true,
            _ => {
                return Err(bad(format!(
                    "{} (get and del take --prefix; no other flags), found {}",
                    usage(command),
                    String::from_utf8_lossy(&flag.text)
                )));
            }
        }
    }
    let mut positional = positional.into_iter().map(|word| word.text.clone());
    let (Some(key), second, None) = (positional.next(), positional.next(), positional.next())
    else {
        return Err(bad(usage(command).to_owned()));
    };
    let request = match (command, second) {
        ("put", Some(value)) => Request::RequestPut(PutRequest {
            key,
            value,
            ..PutRequest::default()
        }),
        ("put", None) => return Err(bad(usage(command).to_owned())),
        (_, Some(_)) if prefix => {
            return Err(bad(format!(
                "{} or {command} --prefix <key>, not both",
                usage(command)
            )));
        }
        (_, range_end) => {
            let range_end = match range_end {
                Some(end) => end,
                None if prefix => prefix_range_end(&key),
                None => Vec::new(),
            };
            if command == "get" {
                Request::RequestRange(RangeRequest {
                    key,
                    range_end,
                    ..RangeRequest::default()
                })
            } else {
                Request::RequestDeleteRange(DeleteRangeRequest {
                    key,
                    range_end,
                    ..DeleteRangeRequest::default()
                })
            }
        }
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

fn usage(command: &str) -> &'static str {
    match command {
        "put" => "put <key> <value>",
        "get" => "get <key> [<range_end>]",
        _ => "del <key> [<range_end>]",
    }
}

/// One word of an op line; `quoted` words are never flags.
struct Word {
    text: Vec<u8>,
    quoted: bool,
}

/// Splits an op line as etcdctl's `argify`: whitespace-separated words, where a word may be
/// Go-quoted (`"a b\n"`, `` `raw` ``) or single-quoted (`'raw'`).
fn argify(line: &str) -> Result<Vec<Word>, String> {
    let mut cursor = Cursor::new(line);
    let mut words = Vec::new();
    loop {
        cursor.skip_ws();
        if cursor.rest().is_empty() {
            return Ok(words);
        }
        match cursor.quoted()? {
            Some(text) => words.push(Word { text, quoted: true }),
            None => words.push(Word {
                text: cursor.bare_word().as_bytes().to_vec(),
                quoted: false,
            }),
        }
    }
}

/// A position in one line of input.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn skip_ws(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.rest().starts_with(expected) {
            self.pos += expected.len_utf8();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn operator(&mut self) -> &'a str {
        self.take_while(|c| matches!(c, '=' | '!' | '<' | '>'))
    }

    fn bare_word(&mut self) -> &'a str {
        self.take_while(|c| !c.is_whitespace())
    }

    /// A compare's right side: a quoted string, a bare word, or nothing.
    fn value(&mut self) -> Result<Value, String> {
        if let Some(bytes) = self.quoted()? {
            return Ok(Value::Quoted(bytes));
        }
        let word = self.bare_word();
        Ok(if word.is_empty() {
            Value::Missing
        } else {
            Value::Bare(word.to_owned())
        })
    }

    /// A quoted string at the cursor (`"..."` with Go's escapes, `` `...` `` or `'...'` raw),
    /// or `None` if the cursor is not at a quote. The error is what was expected.
    fn quoted(&mut self) -> Result<Option<Vec<u8>>, String> {
        self.skip_ws();
        let Some(quote) = self.rest().chars().next() else {
            return Ok(None);
        };
        match quote {
            '"' => {
                self.pos += 1;
                self.escaped().map(Some)
            }
            '`' | '\'' => {
                self.pos += 1;
                let rest = self.rest();
                let end = rest
                    .find(quote)
                    .ok_or_else(|| format!("a closing {quote}"))?;
                self.pos += end + 1;
                Ok(Some(rest.as_bytes()[..end].to_vec()))
            }
            _ => Ok(None),
        }
    }

    /// The rest of a `"`-quoted string, after the opening quote, up to and past the closing one.
    fn escaped(&mut self) -> Result<Vec<u8>, String> {
        let mut bytes = Vec::new();
        let mut chars = self.rest().char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += at + 1;
                    return Ok(bytes);
                }
                '\\' => {
                    let escape = chars.next().map(|(_, e)| e).ok_or("a closing \"")?;
                    match escape {
                        'a' => bytes.push(0x07),
                        'b' => bytes.push(0x08),
                        'f' => bytes.push(0x0c),
                        'n' => bytes.push(b'\n'),
                        'r' => bytes.push(b'\r'),
                        't' => bytes.push(b'\t'),
                        'v' => bytes.push(0x0b),
                        '\\' | '"' | '\'' => bytes.push(escape as u8),
                        'x' => bytes.push(hex_digits(&mut chars, 2)? as u8),
                        'u' | 'U' => {
                            let digits = if escape == 'u' { 4 } else { 8 };
                            let code = hex_digits(&mut chars, digits)?;
                            let c = char::from_u32(code)
                                .ok_or_else(|| format!("a Unicode code point, found {code:#x}"))?;
                            let mut utf8 = [0; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                        }
                        '0'..='7' => {
                            let mut value = escape.to_digit(8).unwrap_or(0);
                            for _ in 0..2 {
                                let digit = chars
                                    .next()
                                    .and_then(|(_, d)| d.to_digit(8))
                                    .ok_or("three octal digits after \\")?;
                                value = value * 8 + digit;
                            }
                            let byte = u8::try_from(value).map_err(|_| {
                                format!("an octal escape up to \\377, found {value:#o}")
                            })?;
                            bytes.push(byte);
                        }
                        other => {
                            return Err(format!(
                                "a Go escape (\\n, \\t, \\\\, \\\", \\xNN, ...), found \\{other}"
                            ));
                        }
                    }
                }
                c => {
                    let mut utf8 = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        Err("a closing \"".to_owned())
    }
}

/// `count` hex digits from `chars`, as a number.
fn hex_digits(chars: &mut std::str::CharIndices<'_>, count: usize) -> Result<u32, String> {
    let mut value = 0u32;
    for _ in 0..count {
        let digit = chars
            .next()
            .and_then(|(_, d)| d.to_digit(16))
            .ok_or_else(|| format!("{count} hex digits in the escape"))?;
        value = value * 16 + digit;
    }
    Ok(value)
}
