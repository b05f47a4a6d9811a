use cairnctl::key_range::{display_range, prefix_range_end};

/// The prefix range end is etcd's: increment the last byte below 0xff, dropping trailing 0xff
/// bytes; no such byte means "every key" ("\0").
#[test]
fn prefix_range_end_matches_etcd() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"a", b"b"),
        (b"/app/", b"/app0"),
        (b"abc", b"abd"),
        (b"a\xff", b"b"),
        (b"a\xfe\xff\xff", b"a\xff"),
        (b"\xff", b"\0"),
        (b"\xff\xff", b"\0"),
        (b"", b"\0"),
    ];
    for (key, end) in cases {
        assert_eq!(prefix_range_end(key), *end, "key {key:?}");
    }
}

/// A range reads as one short column, and binary bytes never reach the terminal raw.
#[test]
fn ranges_display_compactly() {
    let cases: &[(&[u8], &[u8], &str)] = &[
        (b"k", b"", "k"),
        (b"/app/", b"/app0", "/app/*"),
        (b"", b"\0", "*"),
        (b"a", b"\0", "[a, +inf)"),
        (b"a", b"m", "[a, m)"),
        (b"\x1b[31m", b"", "\\x1b[31m"),
    ];
    for (key, end, text) in cases {
        assert_eq!(display_range(key, end), *text, "key {key:?} end {end:?}");
    }
}
