use std::time::Duration;

use cairnctl::units::{human_bytes, parse_bytes, parse_duration};

/// Durations parse as Go's (etcdctl's flags are Go durations).
#[test]
fn durations_parse_as_go() {
    let cases = [
        ("2s", Duration::from_secs(2)),
        ("500ms", Duration::from_millis(500)),
        ("1m30s", Duration::from_secs(90)),
        ("1.5s", Duration::from_millis(1500)),
        ("1h", Duration::from_secs(3600)),
        ("0", Duration::ZERO),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
    for bad in ["", "2", "s", "2x", "1.2.3s", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad} should not parse");
    }
}

/// Sizes take plain bytes or binary and decimal suffixes.
#[test]
fn sizes_parse_with_suffixes() {
    let cases = [
        ("1048576", 1 << 20),
        ("1MiB", 1 << 20),
        ("1M", 1 << 20),
        ("512KiB", 512 << 10),
        ("64MB", 64_000_000),
        ("2GiB", 2 << 30),
        ("0", 0),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_bytes(text), Ok(expected), "{text}");
    }
    for bad in [
        "",
        "MiB",
        "1 furlong",
        "-1",
        "99999999999999999999",
        "18446744073709551615GiB",
    ] {
        assert!(parse_bytes(bad).is_err(), "{bad} should not parse");
    }
}

/// Sizes print as etcdctl prints them (go-humanize's `Bytes`).
#[test]
fn sizes_print_as_go_humanize_prints_them() {
    for (n, text) in [
        (0, "0 B"),
        (9, "9 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (20_480, "20 kB"),
        (2_125_824, "2.1 MB"),
        (3_000_000_000, "3.0 GB"),
    ] {
        assert_eq!(human_bytes(n), text, "{n}");
    }
}
