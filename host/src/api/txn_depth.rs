//! How deeply a Txn request nests, read from its protobuf bytes before anything decodes it.
//!
//! etcd accepts nested txns up to its op limit (each level costs its parent one op, so a
//! request nests at most `--max-txn-ops` deep) and refuses deeper ones with "too many
//! operations in txn request". prost, with its default recursion limit of 100 messages, failed
//! such requests at about 50 txns deep with an internal decode error instead. Cairn builds prost
//! without that limit and bounds the depth here instead: this scan walks the bytes with an
//! explicit stack (so no request can exhaust the thread's stack) and knows just enough of the
//! schema to follow `TxnRequest.success/failure` → `RequestOp.request_txn`.

/// The deepest txn nesting in an encoded `TxnRequest` (1 for a txn with no nested txn), or
/// `None` when the bytes are not a well-formed message (the decoder then says so).
pub fn txn_depth(encoded: &[u8]) -> Option<usize> {
    #[derive(Clone, Copy)]
    enum Kind {
        Txn,
        Op,
    }
    let mut stack: Vec<(&[u8], Kind, usize)> = vec![(encoded, Kind::Txn, 1)];
    let mut deepest = 1;
    while let Some((mut bytes, kind, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        while !bytes.is_empty() {
            let key = varint(&mut bytes)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    varint(&mut bytes)?;
                }
                1 => bytes = bytes.get(8..)?,
                5 => bytes = bytes.get(4..)?,
                2 => {
                    let len = usize::try_from(varint(&mut bytes)?).ok()?;
                    let body = bytes.get(..len)?;
                    bytes = &bytes[len..];
                    match (kind, field) {
                        // TxnRequest.success, TxnRequest.failure: RequestOp.
                        (Kind::Txn, 2 | 3) => stack.push((body, Kind::Op, depth)),
                        // RequestOp.request_txn: a nested TxnRequest.
                        (Kind::Op, 4) => stack.push((body, Kind::Txn, depth + 1)),
                        _ => {}
                    }
                }
                _ => return None,
            }
        }
    }
    Some(deepest)
}

/// Reads a protobuf varint from the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb::request_op::Request;
    use cairn_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};
    use prost::Message;

    use super::*;

    fn nested(depth: usize) -> TxnRequest {
        let mut txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        for _ in 1..depth {
            txn = TxnRequest {
                failure: vec![RequestOp {
                    request: Some(Request::RequestTxn(txn)),
                }],
                ..Default::default()
            };
        }
        txn
    }

    #[test]
    fn measures_nesting_without_recursion() {
        // Proves the depth of nested txns is read from the bytes, at any depth (10,000
        // levels would overflow a recursive reader's stack), and malformed bytes are left to
        // the decoder.
        for depth in [1, 2, 50, 129] {
            assert_eq!(txn_depth(&nested(depth).encode_to_vec()), Some(depth));
        }
        // A deep chain built by hand: each level is RequestOp{request_txn: TxnRequest{
        // success: [..]}} wrapped in length prefixes.
        let mut bytes: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            let mut op = vec![0x22]; // RequestOp.request_txn, length-delimited
            prost::encoding::encode_varint(bytes.len() as u64, &mut op);
            op.extend_from_slice(&bytes);
            let mut txn = vec![0x12]; // TxnRequest.success
            prost::encoding::encode_varint(op.len() as u64, &mut txn);
            txn.extend_from_slice(&op);
            bytes = txn;
        }
        assert_eq!(txn_depth(&bytes), Some(10_001));
        assert_eq!(txn_depth(&[0x12, 0x05, 0x00]), None);
    }
}
