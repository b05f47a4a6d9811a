use std::collections::BTreeMap;

use super::*;

/// A store with a few records in several keyspaces, shaped like the real ones where the
/// snapshot reads them (position, membership, users, plugins), plus a value big enough to be
/// stored apart from its key.
fn sample_store(dir: &Path) -> Storage {
    let storage = Storage::open(&dir.join("db")).expect("open storage");
    let mut position = Vec::new();
    position.extend_from_slice(&42i64.to_be_bytes());
    position.extend_from_slice(&7i64.to_be_bytes());
    position.extend_from_slice(b"applied log id");
    storage
        .meta
        .insert(crate::mvcc::POSITION, position)
        .expect("insert");
    storage
        .meta
        .insert(storage::MEMBERSHIP, b"old membership".to_vec())
        .expect("insert");
    for key in ["a", "b", "c"] {
        storage
            .kv_meta
            .insert(key, b"meta".to_vec())
            .expect("insert");
    }
    storage
        .kv_revs
        .insert(1u64.to_be_bytes(), vec![7u8; 100_000])
        .expect("insert");
    storage
        .kv_revs
        .insert(2u64.to_be_bytes(), b"small".to_vec())
        .expect("insert");
    storage
        .auth
        .insert("user/root", b"u".to_vec())
        .expect("insert");
    storage
        .auth
        .insert("role/root", b"r".to_vec())
        .expect("insert");
    storage
        .auth
        .insert("revision", b"1".to_vec())
        .expect("insert");
    storage
        .plugins
        .insert("plugin/schema", b"p".to_vec())
        .expect("insert");
    storage
        .plugins
        .insert("binding/config", b"b".to_vec())
        .expect("insert");
    storage
        .leases
        .insert(5u64.to_be_bytes(), b"ttl".to_vec())
        .expect("insert");
    storage
}

fn header() -> Header {
    Header {
        cairn_version: "test".to_string(),
        cluster_id: 1,
        member_id: 2,
        revision: 42,
        compact_revision: 7,
        created_unix_ms: 0,
    }
}

fn snapshot_bytes(storage: &Storage) -> Vec<u8> {
    let view = StateView::of(storage);
    let mut out = Vec::new();
    let written = write(&view, &header(), &mut out).expect("write");
    assert_eq!(written, out.len() as u64);
    assert_eq!(
        size(&view, &header()).expect("size"),
        written,
        "size() is exact"
    );
    out
}

fn records_of(storage: &Storage) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
    let mut records = Vec::new();
    StateView::of(storage)
        .for_each_record(|ks, k, v| {
            records.push((ks, k.to_vec(), v.to_vec()));
            Ok(())
        })
        .expect("records");
    records
}

#[test]
fn a_snapshot_reads_back_record_for_record_and_counts_what_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = sample_store(dir.path());
    let bytes = snapshot_bytes(&storage);
    let mut read_back = Vec::new();
    let summary = read(bytes.as_slice(), |ks, k, v| {
        read_back.push((ks, k.to_vec(), v.to_vec()));
        Ok(())
    })
    .expect("a whole snapshot reads");
    assert_eq!(read_back, records_of(&storage));
    assert_eq!(summary.header, header());
    assert_eq!(summary.size, bytes.len() as u64);
    assert_eq!(bytes.len() % 512, 32, "sized like etcd's snapshots");
    assert_eq!(
        summary.sha256,
        hex(&Sha256::digest(&bytes[..bytes.len() - 32]))
    );
    assert_eq!((summary.keys, summary.history, summary.leases), (3, 2, 1));
    assert_eq!(summary.users, ["root"]);
    assert_eq!(summary.roles, ["root"]);
    assert_eq!(summary.plugins, ["schema"]);
    assert_eq!(summary.bindings, ["config"]);
}

#[test]
fn damaged_snapshots_are_refused_whatever_the_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = snapshot_bytes(&sample_store(dir.path()));
    let refuse = |bytes: &[u8]| read(bytes, |_, _, _| Ok(())).expect_err("refused");
    // Any byte changed, in the header, a record, the end marker or the checksum.
    for at in [
        9,
        20,
        60,
        bytes.len() / 2,
        bytes.len() - 40,
        bytes.len() - 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        assert!(
            !matches!(
                read(damaged.as_slice(), |_, _, _| Ok(())),
                Ok(_) | Err(SnapshotFileError::Io(_))
            ),
            "a flipped bit at {at} is found"
        );
    }
    // Cut anywhere.
    for len in [
        0,
        5,
        8,
        14,
        100,
        bytes.len() / 2,
        bytes.len() - 33,
        bytes.len() - 1,
    ] {
        let err = refuse(&bytes[..len]);
        assert!(
            matches!(
                err,
                SnapshotFileError::Truncated | SnapshotFileError::NotASnapshot
            ),
            "cut at {len}: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(refuse(&longer), SnapshotFileError::Corrupt(_)));
    assert!(matches!(
        refuse(b"not a snapshot at all"),
        SnapshotFileError::NotASnapshot
    ));
    let mut future = bytes.clone();
    future[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        refuse(&future),
        SnapshotFileError::UnsupportedFormat(2)
    ));
}

fn plan(dir: &Path, name: &str) -> RestorePlan {
    let member = |n: &str, port: u16| (n.to_string(), vec![format!("http://127.0.0.1:{port}")]);
    RestorePlan {
        name: name.to_string(),
        data_dir: dir.join(name),
        initial_cluster: vec![member("m1", 1), member("m2", 2), member("m3", 3)],
        initial_cluster_token: "restored".to_string(),
        initial_advertise_peer_urls: vec![format!("http://127.0.0.1:{}", &name[1..])],
    }
}

#[test]
fn restore_writes_the_state_with_a_new_identity_and_no_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = sample_store(&dir.path().join("source"));
    let file = dir.path().join("snap.db");
    fs::write(&file, snapshot_bytes(&source)).expect("write file");
    let mut ids = BTreeMap::new();
    for name in ["m1", "m2", "m3"] {
        let plan = plan(dir.path(), name);
        let restored = restore(&file, &plan).expect("restore");
        ids.insert(restored.member_id, restored.cluster_id);
        let storage = Storage::open(&plan.data_dir.join("db")).expect("open restored");
        let identity = crate::identity::Identity::load(&storage)
            .expect("load")
            .expect("an identity");
        assert_eq!(identity.name, name);
        assert_eq!(identity.member_id, restored.member_id);
        assert_eq!(identity.cluster_id, restored.cluster_id);
        assert_eq!(
            identity.member_id,
            crate::identity::member_id(&plan.initial_advertise_peer_urls, "restored"),
            "the ID a member started with the same flags would have"
        );
        let founding = crate::identity::founding(&storage)
            .expect("load")
            .expect("founding");
        assert_eq!(founding.len(), 3);
        assert!(founding.contains_key(&identity.member_id));
        // The same data, except that nothing of a log has been applied and the old
        // cluster's membership is gone.
        let mut expected = records_of(&source);
        let meta = storage::STATE_KEYSPACES
            .iter()
            .position(|n| *n == storage::META)
            .expect("meta") as u8;
        expected.retain(|(ks, k, _)| !(*ks == meta && k == storage::MEMBERSHIP));
        for (ks, k, v) in &mut expected {
            if *ks == meta && k == crate::mvcc::POSITION {
                v.truncate(16);
            }
        }
        assert_eq!(records_of(&storage), expected);
        let revisions = StateView::of(&storage).revisions().expect("revisions");
        assert_eq!((revisions.current, revisions.compact), (42, 7));
        assert!(
            StateView::of(&storage)
                .marker()
                .expect("marker")
                .applied
                .is_empty(),
            "no applied log entry"
        );
        assert!(!dir.path().join(format!("{name}.restoring")).exists());
    }
    assert_eq!(ids.len(), 3, "three members, three IDs");
    assert_eq!(
        ids.values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1,
        "one cluster ID"
    );
}

#[test]
fn restore_writes_nothing_from_a_damaged_file_or_a_bad_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = snapshot_bytes(&sample_store(&dir.path().join("source")));
    let file = dir.path().join("snap.db");
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x80;
    for broken in [&bytes[..bytes.len() - 10], damaged.as_slice()] {
        fs::write(&file, broken).expect("write file");
        let plan = plan(dir.path(), "m1");
        let err = restore(&file, &plan).expect_err("refused");
        assert!(matches!(err, RestoreError::File(_)), "{err}");
        assert!(!plan.data_dir.exists(), "nothing written");
        assert!(!dir.path().join("m1.restoring").exists());
    }
    fs::write(&file, &bytes).expect("write file");
    let mut stranger = plan(dir.path(), "m1");
    stranger.name = "m9".to_string();
    assert!(matches!(
        restore(&file, &stranger),
        Err(RestoreError::Plan(_))
    ));
    let mut elsewhere = plan(dir.path(), "m1");
    elsewhere.initial_advertise_peer_urls = vec!["http://127.0.0.1:9".to_string()];
    assert!(matches!(
        restore(&file, &elsewhere),
        Err(RestoreError::Plan(_))
    ));
    let occupied = plan(dir.path(), "m2");
    fs::create_dir_all(&occupied.data_dir).expect("mkdir");
    fs::write(occupied.data_dir.join("keep"), b"mine").expect("write");
    assert!(matches!(
        restore(&file, &occupied),
        Err(RestoreError::DataDirExists(_))
    ));
    assert_eq!(
        fs::read(occupied.data_dir.join("keep")).expect("read"),
        b"mine",
        "an occupied data dir is left alone"
    );
    // An empty directory is fine (etcd's operators often create it first).
    let empty = plan(dir.path(), "m3");
    fs::create_dir_all(&empty.data_dir).expect("mkdir");
    restore(&file, &empty).expect("restore into an empty directory");
}
