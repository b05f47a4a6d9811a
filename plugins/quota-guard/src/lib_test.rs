use cairn_sdk::testing::{self, Harness, MemStore};
use cairn_sdk::{Level, Op, Put};

use super::*;

const CONFIG: &[u8] = br#"{"prefix": "/jobs/", "max_keys": 3}"#;
const DENIED: &str = "quota: /jobs/ holds at most 3 keys";

fn check(store: &MemStore, ops: &[Op]) -> Decision {
    testing::check::<QuotaGuard>(store, CONFIG, ops)
}

fn jobs(names: &[&str]) -> MemStore {
    names
        .iter()
        .map(|name| (format!("/jobs/{name}"), "x"))
        .collect()
}

/// New keys are allowed up to the quota; the one past it is denied with the quota's message.
#[test]
fn new_keys_up_to_the_quota() {
    let store = jobs(&["a", "b"]);
    assert_eq!(check(&store, &[Op::put("/jobs/c", "x")]), Decision::Allow);
    assert_eq!(
        check(&store, &[Op::put("/jobs/c", "x"), Op::put("/jobs/d", "x")]),
        Decision::deny(DENIED)
    );
}

/// Overwriting an existing key at the quota adds nothing; neither does putting one key
/// twice.
#[test]
fn overwrites_are_not_new_keys() {
    let store = jobs(&["a", "b", "c"]);
    assert_eq!(check(&store, &[Op::put("/jobs/a", "y")]), Decision::Allow);
    let store = jobs(&["a", "b"]);
    let twice = [Op::put("/jobs/c", "1"), Op::put("/jobs/c", "2")];
    assert_eq!(check(&store, &twice), Decision::Allow);
}

/// A delete in the same request makes room; ops count in request order.
#[test]
fn deletes_in_the_request_make_room() {
    let store = jobs(&["a", "b", "c"]);
    let swap = [Op::delete("/jobs/a"), Op::put("/jobs/d", "x")];
    assert_eq!(check(&store, &swap), Decision::Allow);
    // Deleting a key that does not exist makes no room.
    let no_room = [Op::delete("/jobs/zz"), Op::put("/jobs/d", "x")];
    assert_eq!(check(&store, &no_room), Decision::deny(DENIED));
    // A key deleted and put again still exists.
    let recreate = [
        Op::delete("/jobs/a"),
        Op::put("/jobs/a", "y"),
        Op::put("/jobs/d", "x"),
    ];
    assert_eq!(check(&store, &recreate), Decision::deny(DENIED));
    // A new key put and then deleted does not exist afterwards.
    let transient = [Op::put("/jobs/d", "x"), Op::delete("/jobs/d")];
    assert_eq!(check(&store, &transient), Decision::Allow);
}

/// Range deletes count the store's keys they cover, once, however they overlap.
#[test]
fn range_deletes_are_counted_once() {
    let store = jobs(&["a", "b", "c"]);
    let clear = [
        Op::delete_range("/jobs/a", "/jobs/c"),
        Op::delete_range("/jobs/b", "/jobs/z"),
        Op::put("/jobs/x", "1"),
        Op::put("/jobs/y", "1"),
        Op::put("/jobs/z", "1"),
    ];
    assert_eq!(check(&store, &clear), Decision::Allow);
    // A prefix delete that reaches past the quota's prefix.
    let everything = [
        Op::delete_range("/", "\0"),
        Op::put("/jobs/x", "1"),
        Op::put("/jobs/y", "1"),
        Op::put("/jobs/z", "1"),
    ];
    assert_eq!(check(&store, &everything), Decision::Allow);
    // Keys re-put after the range delete exist again.
    let refill = [
        Op::delete_range("/jobs/", "/jobs0"),
        Op::put("/jobs/a", "1"),
        Op::put("/jobs/b", "1"),
        Op::put("/jobs/c", "1"),
        Op::put("/jobs/d", "1"),
    ];
    assert_eq!(check(&store, &refill), Decision::deny(DENIED));
}

/// Keys outside the prefix never count.
#[test]
fn other_keys_do_not_count() {
    let store = jobs(&["a", "b", "c"])
        .with("/jobsx", "1")
        .with("/other", "1");
    assert_eq!(
        check(&store, &[Op::put("/jobs-archive/1", "x")]),
        Decision::Allow
    );
    assert_eq!(
        check(&store, &[Op::put("/jobs/d", "x")]),
        Decision::deny(DENIED)
    );
}

/// A prefix already over quota can be updated and shrunk, but not grown.
#[test]
fn over_quota_prefix_can_shrink() {
    let store = jobs(&["a", "b", "c", "d", "e"]);
    assert_eq!(check(&store, &[Op::put("/jobs/a", "y")]), Decision::Allow);
    assert_eq!(check(&store, &[Op::delete("/jobs/a")]), Decision::Allow);
    let keep_value = Op::Put(Put {
        key: b"/jobs/a".to_vec(),
        ignore_value: true,
        ..Put::default()
    });
    assert_eq!(check(&store, &[keep_value]), Decision::Allow);
    assert_eq!(
        check(&store, &[Op::put("/jobs/f", "x")]),
        Decision::deny(DENIED)
    );
}

/// A bad config denies every write and warns.
#[test]
fn bad_config_fails_closed() {
    let store = MemStore::new();
    for config in [
        &br#"{"prefix": "/jobs/"}"#[..],
        b"not json",
        br#"{"prefix": "/a/", "max_keys": -1}"#,
    ] {
        let harness = Harness::new(&store, config);
        let decision = harness.check::<QuotaGuard>(&[Op::put("/jobs/a", "x")]);
        let Decision::Deny(reason) = decision else {
            panic!("bad config {config:?} allowed a write");
        };
        assert!(
            reason.starts_with("quota-guard: bad binding config"),
            "{reason}"
        );
        assert_eq!(harness.logs()[0].level, Level::Warn);
    }
}

/// Spans intersect, merge and translate to etcd ranges correctly at the edges.
#[test]
fn spans() {
    let prefix = Span::prefix(b"/jobs/");
    assert_eq!(prefix.end_for_store(), b"/jobs0");
    let one = Span::from_range(b"/jobs/a", b"");
    assert_eq!(one.end_for_store(), b"");
    assert!(one.contains(b"/jobs/a") && !one.contains(b"/jobs/a0"));
    let everything = Span::from_range(b"", b"\0");
    assert_eq!(everything.intersect(&prefix), Some(prefix.clone()));
    assert_eq!(Span::from_range(b"/a", b"/b").intersect(&prefix), None);
    let store: MemStore = [("/jobs/a", "1"), ("/jobs/b", "1"), ("/jobs/c", "1")]
        .into_iter()
        .collect();
    let overlapping = [
        Span::from_range(b"/jobs/a", b"/jobs/c"),
        Span::from_range(b"/jobs/b", b""),
        Span::from_range(b"/jobs/c", b"/jobs/d"),
    ];
    assert_eq!(count_union(&store, overlapping.into_iter()), 3);
}
