//! The state machine gives the same responses and the same state however the log is cut into
//! apply chunks (one entry at a time, or many per batch).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::mvcc::{
    CompactRequest, Compare, CompareOperand, CompareResult, CompareTarget, DeleteRangeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};

fn key(rng: &mut StdRng) -> Vec<u8> {
    format!("k{}", rng.random_range(0..12)).into_bytes()
}

/// A random request of every kind, including ones that fail with etcd errors.
fn request(rng: &mut StdRng, rev_hint: i64) -> WriteRequest {
    let put = |rng: &mut StdRng| PutRequest {
        key: key(rng),
        value: format!("v{}", rng.random_range(0..1000)).into_bytes(),
        prev_kv: rng.random_bool(0.3),
        ignore_value: rng.random_bool(0.05),
        ..Default::default()
    };
    match rng.random_range(0..10) {
        0..=3 => {
            let mut p = put(rng);
            if p.ignore_value {
                p.value.clear();
            }
            WriteRequest::Put(p)
        }
        4 => WriteRequest::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: if rng.random_bool(0.5) {
                b"k5".to_vec()
            } else {
                Vec::new()
            },
            prev_kv: rng.random_bool(0.5),
        }),
        5 => WriteRequest::Compact(CompactRequest {
            revision: rng.random_range(0..rev_hint + 3),
            physical: false,
        }),
        _ => {
            let range = |rng: &mut StdRng| {
                RequestOp::Range(RangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"l".to_vec(),
                    revision: if rng.random_bool(0.5) {
                        0
                    } else {
                        rng.random_range(0..rev_hint + 2)
                    },
                    ..Default::default()
                })
            };
            let mut p = put(rng);
            p.ignore_value = false;
            WriteRequest::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::Version,
                    key: key(rng),
                    range_end: Vec::new(),
                    operand: Some(CompareOperand::Version(rng.random_range(0..3))),
                }],
                success: vec![RequestOp::Put(p), range(rng)],
                failure: vec![
                    range(rng),
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key: key(rng),
                        ..Default::default()
                    }),
                ],
            })
        }
    }
}

fn run(seed: u64, max_chunk: usize) -> (Vec<CommandResponse>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = StateMachine::new(Storage::open(dir.path()).expect("open")).expect("state machine");
    let mut rng = StdRng::seed_from_u64(seed);
    let commands: Vec<Command> = (0..400)
        .map(|i| Command::Kv(request(&mut rng, i / 2)))
        .collect();
    let markers: Vec<AppliedMarker> = (0..commands.len())
        .map(|i| AppliedMarker {
            applied: (i as u64).to_be_bytes().to_vec(),
            membership: None,
        })
        .collect();
    let mut chunks = StdRng::seed_from_u64(seed ^ 0xC0FFEE);
    let mut responses = Vec::new();
    let mut i = 0;
    while i < commands.len() {
        let n = chunks.random_range(1..=max_chunk).min(commands.len() - i);
        let entries = (i..i + n).map(|j| (Some(&commands[j]), &markers[j]));
        responses.extend(sm.apply(entries).expect("apply"));
        i += n;
    }
    let mut state = Vec::new();
    sm.view().export(&mut state).expect("export");
    assert_eq!(
        sm.applied_marker().expect("marker").applied,
        markers.last().expect("entries").applied
    );
    (responses, state)
}

#[test]
fn chunked_apply_matches_one_by_one() {
    // Proves batching entries into one fjall batch changes neither responses nor state.
    for seed in [1, 2, 3] {
        let (one_by_one, state) = run(seed, 1);
        assert!(
            one_by_one
                .iter()
                .any(|r| matches!(r, CommandResponse::Kv(Err(_)))),
            "seed {seed}: no etcd error exercised"
        );
        for max_chunk in [7, 64] {
            let (chunked, chunked_state) = run(seed, max_chunk);
            for (i, (a, b)) in one_by_one.iter().zip(&chunked).enumerate() {
                assert_eq!(
                    a, b,
                    "seed {seed}, chunks up to {max_chunk}: response {i} differs"
                );
            }
            assert!(
                state == chunked_state,
                "seed {seed}, chunks up to {max_chunk}: state differs"
            );
        }
    }
}
