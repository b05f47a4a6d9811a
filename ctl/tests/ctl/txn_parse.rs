use std::io::Cursor;

use cairn_proto::etcdserverpb::{
    CairnComputed, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    cairn_computed::Expected,
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
};
use cairnctl::txn_parse::{parse_compare, parse_op, read_txn};

fn compare(
    target: CompareTarget,
    result: CompareResult,
    key: &[u8],
    value: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_vec(),
        target_union: Some(value),
        ..Compare::default()
    }
}

fn computed(binding: &str, argument: &[u8], result: CompareResult, expected: Expected) -> Compare {
    Compare {
        result: result as i32,
        target: CompareTarget::CairnComputed as i32,
        key: binding.as_bytes().to_vec(),
        computed: Some(CairnComputed {
            binding: binding.to_owned(),
            argument: argument.to_vec(),
            expected: Some(expected),
        }),
        ..Compare::default()
    }
}

fn put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutRequest::default()
        })),
    }
}

fn get(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..RangeRequest::default()
        })),
    }
}

fn del(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..DeleteRangeRequest::default()
        })),
    }
}

/// Every etcdctl compare target and operator, etcdctl's aliases and quoting, and Cairn's
/// computed compares (bare integer: int, quoted: bytes) parse to the Compare etcd expects.
#[test]
fn compares_parse_like_etcdctl() {
    use CompareResult::*;
    use CompareTarget::*;
    let cases = vec![
        (
            r#"value("k") = "v""#,
            compare(Value, Equal, b"k", TargetUnion::Value(b"v".to_vec())),
        ),
        (
            r#"val("k") != "v""#,
            compare(Value, NotEqual, b"k", TargetUnion::Value(b"v".to_vec())),
        ),
        (
            r#"  value( "a b" )  =  "x y"  "#,
            compare(Value, Equal, b"a b", TargetUnion::Value(b"x y".to_vec())),
        ),
        (
            r#"value("k") = """#,
            compare(Value, Equal, b"k", TargetUnion::Value(Vec::new())),
        ),
        (
            r#"value("k\x00\xff") = "\"q\"\n""#,
            compare(
                Value,
                Equal,
                b"k\0\xff",
                TargetUnion::Value(b"\"q\"\n".to_vec()),
            ),
        ),
        (
            r#"value(`raw\n`) = `a"b`"#,
            compare(
                Value,
                Equal,
                br"raw\n",
                TargetUnion::Value(b"a\"b".to_vec()),
            ),
        ),
        (
            r#"value("\u00e9\101") = "\t""#,
            compare(
                Value,
                Equal,
                "éA".as_bytes(),
                TargetUnion::Value(b"\t".to_vec()),
            ),
        ),
        (
            r#"version("k") > "3""#,
            compare(Version, Greater, b"k", TargetUnion::Version(3)),
        ),
        (
            r#"ver("k") < 3"#,
            compare(Version, Less, b"k", TargetUnion::Version(3)),
        ),
        (
            r#"create("k") < "5""#,
            compare(Create, Less, b"k", TargetUnion::CreateRevision(5)),
        ),
        (
            r#"c("k") = "0""#,
            compare(Create, Equal, b"k", TargetUnion::CreateRevision(0)),
        ),
        (
            r#"mod("k") != "2""#,
            compare(Mod, NotEqual, b"k", TargetUnion::ModRevision(2)),
        ),
        (
            r#"m("k") > "-1""#,
            compare(Mod, Greater, b"k", TargetUnion::ModRevision(-1)),
        ),
        (
            r#"lease("k") = "123""#,
            compare(Lease, Equal, b"k", TargetUnion::Lease(123)),
        ),
        (
            r#"computed("quota", "tenant-a") > 3"#,
            computed("quota", b"tenant-a", Greater, Expected::IntValue(3)),
        ),
        (
            r#"computed("quota","tenant-a")<-7"#,
            computed("quota", b"tenant-a", Less, Expected::IntValue(-7)),
        ),
        (
            r#"computed("schema", "doc") = "text""#,
            computed(
                "schema",
                b"doc",
                Equal,
                Expected::BytesValue(b"text".to_vec()),
            ),
        ),
        (
            r#"computed("count") != "3""#,
            computed("count", b"", NotEqual, Expected::BytesValue(b"3".to_vec())),
        ),
        (
            r#"computed("count", "") = 0"#,
            computed("count", b"", Equal, Expected::IntValue(0)),
        ),
        (
            r#"computed("b", "\xff") = "\x00""#,
            computed("b", b"\xff", Equal, Expected::BytesValue(vec![0])),
        ),
    ];
    for (line, expected) in cases {
        match parse_compare(line) {
            Ok(parsed) => assert_eq!(parsed, expected, "{line}"),
            Err(error) => panic!("{line}: {error}"),
        }
    }
}

/// A malformed compare names the line and what was expected at the point it went wrong.
#[test]
fn bad_compares_say_what_was_expected() {
    let cases = [
        (
            "k = v",
            r#"bad compare "k = v": expected a target (value, version, create, mod, lease or computed) and a quoted key, e.g. value("k") = "v""#,
        ),
        (
            r#"value "k" = "v""#,
            r#"expected "(" after the target "value""#,
        ),
        ("", "expected a target (value"),
        (
            r#"("k") = "v""#,
            r#"expected a target (value, version, create, mod, lease or computed)"#,
        ),
        (
            r#"size("k") = "1""#,
            r#"bad compare "size("k") = "1"": expected a target of value, version, create, mod, lease or computed, found "size""#,
        ),
        (r#"value(k) = "v""#, "expected a quoted key after \"(\""),
        (r#"value("k" = "v""#, r#"expected ")" after the key"#),
        (r#"value("k) = "v""#, r#"expected ")" after the key"#),
        (r#"value("k) = v"#, r#"expected a closing ""#),
        (
            r#"value("k")"#,
            "expected an operator (=, !=, <, >) after \")\"",
        ),
        (
            r#"value("k") == "v""#,
            r#"expected an operator (=, !=, <, >), found "==""#,
        ),
        (r#"value("k") =< "v""#, r#"found "=<""#),
        (
            r#"value("k") ="#,
            "expected a quoted value after the operator",
        ),
        (
            r#"value("k") = v"#,
            r#"expected a quoted value, e.g. "v", found v"#,
        ),
        (
            r#"value("k") = "v" extra"#,
            r#"expected nothing after the value, found "extra""#,
        ),
        (
            r#"value("\q") = "v""#,
            r#"expected a Go escape (\n, \t, \\, \", \xNN, ...), found \q"#,
        ),
        (
            r#"value("\x4") = "v""#,
            "expected 2 hex digits in the escape",
        ),
        (
            r#"value("\400") = "v""#,
            r"expected an octal escape up to \377",
        ),
        (
            r#"version("k") > "three""#,
            r#"expected an integer version, found "three""#,
        ),
        (
            r#"version("k") >"#,
            r#"expected an integer version after the operator, e.g. "3""#,
        ),
        (
            r#"mod("k") > 1.5"#,
            r#"expected an integer revision, found "1.5""#,
        ),
        (
            r#"lease("k") = "0x10""#,
            r#"expected an integer lease ID, found "0x10""#,
        ),
        (
            r#"computed(quota) > 3"#,
            "expected a quoted binding name after \"(\"",
        ),
        (
            r#"computed("quota", ) > 3"#,
            "expected a quoted argument after \",\"",
        ),
        (
            r#"computed("quota" "arg") > 3"#,
            r#"expected "," and a quoted argument, or ")", after the binding name"#,
        ),
        (
            r#"computed("quota", "a", "b") > 3"#,
            r#"expected ")" after the argument"#,
        ),
        (
            r#"computed("", "a") > 3"#,
            "expected a non-empty binding name",
        ),
        (
            r#"computed("\xff", "a") > 3"#,
            "expected a UTF-8 binding name",
        ),
        (
            r#"computed("quota", "a") > three"#,
            "expected an integer or a quoted value after the operator, found three",
        ),
        (
            r#"computed("quota", "a") > 99999999999999999999"#,
            "found 99999999999999999999",
        ),
        (
            r#"computed("quota", "a") >"#,
            "expected an integer or a quoted value after the operator",
        ),
    ];
    for (line, fragment) in cases {
        match parse_compare(line) {
            Ok(parsed) => panic!("{line} parsed as {parsed:?}"),
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with(&format!("bad compare \"{line}\": expected ")),
                    "{line}: {message}"
                );
                assert!(
                    message.contains(fragment),
                    "{line}: {message} lacks {fragment}"
                );
            }
        }
    }
}

/// Ops parse as etcdctl's put/get/del, with Go-quoted, single-quoted and bare words.
#[test]
fn ops_parse_like_etcdctl() {
    let cases = vec![
        ("put k v", put(b"k", b"v")),
        ("put  k   v  ", put(b"k", b"v")),
        (r#"put "a key" "a\nvalue""#, put(b"a key", b"a\nvalue")),
        ("put 'raw \\n' x", put(b"raw \\n", b"x")),
        (r#"put k "--prefix""#, put(b"k", b"--prefix")),
        ("get k", get(b"k", b"")),
        ("get a z", get(b"a", b"z")),
        ("get --prefix /app/", get(b"/app/", b"/app0")),
        ("get /app/ --prefix", get(b"/app/", b"/app0")),
        (r#"get --prefix """#, get(b"", b"\0")),
        ("del k", del(b"k", b"")),
        ("del a z", del(b"a", b"z")),
        ("del --prefix a", del(b"a", b"b")),
    ];
    for (line, expected) in cases {
        match parse_op(line) {
            Ok(parsed) => assert_eq!(parsed, expected, "{line}"),
            Err(error) => panic!("{line}: {error}"),
        }
    }
}

/// A malformed op names the line and the form it should have.
#[test]
fn bad_ops_say_what_was_expected() {
    let cases = [
        (
            "set k v",
            r#"bad op "set k v": expected put, get or del, found "set""#,
        ),
        (r#""put" k v"#, r#"expected put, get or del, found "put""#),
        ("put k", "expected put <key> <value>"),
        ("put k v w", "expected put <key> <value>"),
        ("put", "expected put <key> <value>"),
        ("get", "expected get <key> [<range_end>]"),
        ("get a b c", "expected get <key> [<range_end>]"),
        ("del", "expected del <key> [<range_end>]"),
        (
            "get --prefix a b",
            "expected get <key> [<range_end>] or get --prefix <key>, not both",
        ),
        (
            "get --limit 1 k",
            "(get and del take --prefix; no other flags), found --limit",
        ),
        ("put --lease 1 k v", "found --lease"),
        (r#"put "k v"#, r#"expected a closing ""#),
        ("put 'k v", "expected a closing '"),
    ];
    for (line, fragment) in cases {
        match parse_op(line) {
            Ok(parsed) => panic!("{line} parsed as {parsed:?}"),
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.starts_with(&format!("bad op \"{line}\": expected ")),
                    "{line}: {message}"
                );
                assert!(
                    message.contains(fragment),
                    "{line}: {message} lacks {fragment}"
                );
            }
        }
    }
}

/// The three sections end at blank lines (whitespace-only counts) or at the end of input.
#[test]
fn sections_end_at_blank_lines_or_eof() {
    let input = "value(\"k\") = \"v\"\ncomputed(\"q\", \"t\") < 10\n\nput k v2\nget k\n  \ndel k\n";
    let txn = read_txn(&mut Cursor::new(input), None).unwrap();
    assert_eq!(
        txn,
        TxnRequest {
            compare: vec![
                parse_compare(r#"value("k") = "v""#).unwrap(),
                computed("q", b"t", CompareResult::Less, Expected::IntValue(10)),
            ],
            success: vec![put(b"k", b"v2"), get(b"k", b"")],
            failure: vec![del(b"k", b"")],
        }
    );

    let cases = [
        ("", TxnRequest::default()),
        ("\n\n\n", TxnRequest::default()),
        (
            "\n\nget k",
            TxnRequest {
                failure: vec![get(b"k", b"")],
                ..TxnRequest::default()
            },
        ),
        (
            "\nput k v",
            TxnRequest {
                success: vec![put(b"k", b"v")],
                ..TxnRequest::default()
            },
        ),
        (
            "value(\"k\") = \"v\"",
            TxnRequest {
                compare: vec![parse_compare(r#"value("k") = "v""#).unwrap()],
                ..TxnRequest::default()
            },
        ),
        // Windows line ends and trailing lines after the third section are ignored.
        (
            "\r\nput k v\r\n\r\nget k\r\n\r\nignored\n",
            TxnRequest {
                success: vec![put(b"k", b"v")],
                failure: vec![get(b"k", b"")],
                ..TxnRequest::default()
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            read_txn(&mut Cursor::new(input), None).unwrap(),
            expected,
            "{input:?}"
        );
    }
}

/// Interactive mode prints etcdctl's three prompts; an error in a section stops the reading.
#[test]
fn interactive_prompts_and_errors() {
    let mut prompts = Vec::new();
    read_txn(&mut Cursor::new("\nput k v\n\n"), Some(&mut prompts)).unwrap();
    assert_eq!(
        String::from_utf8(prompts).unwrap(),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"
    );

    let error = read_txn(&mut Cursor::new("value(\"k\") = \"v\"\n\nput k\n"), None).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"bad op "put k": expected put <key> <value>"#
    );
}
