use super::*;
use crate::mvcc::KeyValue;
use crate::watch::{Filter, SharedEvent};

fn kv(key: &str, value_len: usize, rev: i64) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        create_revision: 2,
        mod_revision: rev,
        version: rev - 1,
        value: vec![b'v'; value_len],
        lease: 0,
    }
}

fn shared(i: usize) -> SharedEvent {
    let rev = 10 + i as i64;
    SharedEvent::new(Event {
        kind: if i % 5 == 4 {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        kv: kv(&format!("k{i}"), 50 + 37 * (i % 7), rev),
        prev_kv: (!i.is_multiple_of(3)).then(|| kv(&format!("k{i}"), 20, rev - 1)),
    })
}

fn filter(prev_kv: bool) -> Filter {
    Filter {
        range: crate::mvcc::KeyRange::all(),
        no_put: false,
        no_delete: false,
        prev_kv,
    }
}

fn head(watch_id: i64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(pb::ResponseHeader {
            cluster_id: 7,
            member_id: 9,
            revision: 50,
            raft_term: 3,
        }),
        watch_id,
        ..Default::default()
    }
}

fn encoded(frame: &WatchFrame) -> Vec<u8> {
    let mut buf = Vec::new();
    frame.encode(&mut buf);
    buf
}

#[test]
fn a_frame_encodes_as_prost_encodes_the_whole_response() {
    // Proves the frame's bytes and length are prost's for the same WatchResponse, for
    // watchers with and without prev_kv sharing one set of events, and for responses
    // without events.
    let events: Vec<SharedEvent> = (0..12).map(shared).collect();
    for prev_kv in [false, true] {
        let frame = WatchFrame {
            head: head(4),
            events: events.iter().map(|e| filter(prev_kv).shape(e)).collect(),
        };
        let bytes = encoded(&frame);
        assert_eq!(bytes.len(), frame.encoded_len());
        let whole = frame.into_pb();
        assert_eq!(
            whole.events.iter().filter(|e| e.prev_kv.is_some()).count() > 0,
            prev_kv
        );
        assert_eq!(bytes, whole.encode_to_vec(), "prev_kv {prev_kv}");
        assert_eq!(
            pb::WatchResponse::decode(&bytes[..]).expect("decodes"),
            whole
        );
    }
    let created = WatchFrame::from(pb::WatchResponse {
        created: true,
        ..head(1)
    });
    assert_eq!(encoded(&created), created.into_pb().encode_to_vec());
}

#[test]
fn an_event_is_encoded_once_for_every_watcher() {
    // Proves watchers shaped alike get the very same bytes (one encoding shared), and a
    // watcher with prev_kv its own.
    let event = shared(1);
    let (a, b) = (filter(false).shape(&event), filter(false).shape(&event));
    let with_prev = filter(true).shape(&event);
    assert!(std::ptr::eq(wire(&a).as_ptr(), wire(&b).as_ptr()));
    assert_ne!(wire(&a), wire(&with_prev));
    assert!(wire(&with_prev).len() > wire(&a).len());
}

#[test]
fn fragments_follow_etcds_rule() {
    // Proves every part but the last is as full as etcd makes it: under the limit, and the
    // next event would reach it; events keep their order, and only the last part is final.
    let events: Vec<Shaped> = (0..40).map(|i| filter(true).shape(&shared(i))).collect();
    let whole = WatchFrame {
        head: head(3),
        events: events.clone(),
    };
    let limit = 1000;
    let parts = whole.fragments(limit);
    assert!(parts.len() > 2);
    let joined: Vec<Shaped> = parts.iter().flat_map(|p| p.events.clone()).collect();
    assert_eq!(joined, events);
    let mut next = 0;
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        assert_eq!(part.head.fragment, !last);
        assert!(part.events.len() == 1 || part.encoded_len() < limit);
        next += part.events.len();
        if !last {
            let fuller = WatchFrame {
                head: part.head.clone(),
                events: part
                    .events
                    .iter()
                    .cloned()
                    .chain([events[next].clone()])
                    .collect(),
            };
            assert!(
                fuller.encoded_len() >= limit,
                "part {i} could hold one more event"
            );
        }
    }
    // A small response, or a single event, goes whole.
    let small = WatchFrame {
        head: head(3),
        events: events[..2].to_vec(),
    };
    assert_eq!(small.fragments(limit).len(), 1);
}
