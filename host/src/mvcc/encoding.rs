//! On-disk encodings of the MVCC keyspaces (see `storage.rs` for the layout).
//!
//! Revisions are big-endian so that byte order is revision order. User keys inside
//! `kv_index` are escaped (`0x00` → `0x00 0xFF`, then a `0x00 0x01` terminator) so that
//! "key, then revision" sorts by key first for keys of any length and content.

use serde::{Deserialize, Serialize};

use super::types::{EventKind, KeyValue, Revision};

/// A position in history: the request's revision and the op's index within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rev {
    pub main: Revision,
    pub sub: i64,
}

impl Rev {
    pub fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Rev> {
        let main = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let sub = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Rev {
            main: main as i64,
            sub: sub as i64,
        })
    }
}

/// Latest state of a live key, without its value (`kv_meta`); the value is in history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub lease: i64,
    /// Sub-revision of the latest version: with `mod_revision`, where its value lives in
    /// `kv_revs`.
    pub mod_sub: i64,
}

impl KeyMeta {
    /// Where the latest version (and so the value) is in `kv_revs`.
    pub fn at(&self) -> Rev {
        Rev {
            main: self.mod_revision,
            sub: self.mod_sub,
        }
    }

    pub fn to_kv(self, key: Vec<u8>, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value,
            lease: self.lease,
        }
    }
}

/// One entry of history (`kv_revs`). For a delete, everything but `key` is zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub kind: EventKind,
    pub create_revision: Revision,
    pub version: i64,
    pub lease: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl StoredEvent {
    pub fn to_kv(&self, rev: Rev) -> KeyValue {
        KeyValue {
            key: self.key.clone(),
            create_revision: self.create_revision,
            mod_revision: rev.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

pub const INDEX_PUT: u8 = 1;
pub const INDEX_DELETE: u8 = 0;

/// Writes `key` escaped and terminated into `out`.
fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The `kv_index` key of `key` at `rev`.
pub fn index_key(key: &[u8], rev: Rev) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 18);
    escape_into(key, &mut out);
    out.extend_from_slice(&rev.encode());
    out
}

/// The smallest `kv_index` key of `key` (below every revision of it).
pub fn index_key_start(key: &[u8]) -> Vec<u8> {
    index_key(key, Rev { main: 0, sub: 0 })
}

/// Splits a `kv_index` key back into the user key and the revision.
pub fn decode_index_key(raw: &[u8]) -> Option<(Vec<u8>, Rev)> {
    let split = raw.len().checked_sub(16)?;
    let (escaped, rev) = raw.split_at(split);
    let escaped = escaped.strip_suffix(&[0x00, 0x01])?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        key.push(escaped[i]);
        if escaped[i] == 0 {
            i += 1; // skip the 0xFF escape byte
        }
        i += 1;
    }
    Some((key, Rev::decode(rev)?))
}

/// The `kv_lease` key recording that `lease` holds `key`.
pub fn lease_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&(lease as u64).to_be_bytes());
    out.extend_from_slice(key);
    out
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs of integers and byte vectors into a Vec cannot fail.
    postcard::to_stdvec(value).expect("postcard encoding of an in-memory record")
}

/// Decodes a record this module wrote. Corrupt bytes are a storage failure, not a client
/// error: the caller stops the node.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CorruptRecord> {
    postcard::from_bytes(bytes).map_err(|e| CorruptRecord(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt record on disk: {0}")]
pub struct CorruptRecord(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_fields_keep_their_on_disk_encoding() {
        // Proves `serde_bytes` (fast decoding of keys and values) writes exactly what a plain
        // `Vec<u8>` wrote, so data written before the change still decodes.
        #[derive(Serialize)]
        struct Plain {
            key: Vec<u8>,
            kind: EventKind,
            create_revision: Revision,
            version: i64,
            lease: i64,
            value: Vec<u8>,
        }
        let stored = StoredEvent {
            key: b"k\x00\xff".to_vec(),
            kind: EventKind::Put,
            create_revision: 7,
            version: 2,
            lease: -1,
            value: vec![0, 1, 200, 255],
        };
        let plain = Plain {
            key: stored.key.clone(),
            kind: stored.kind,
            create_revision: 7,
            version: 2,
            lease: -1,
            value: stored.value.clone(),
        };
        assert_eq!(encode(&stored), encode(&plain));
    }

    #[test]
    fn index_keys_sort_by_key_then_revision() {
        // Proves the escaping keeps all versions of a key together and in revision order.
        let r = |m| Rev { main: m, sub: 0 };
        let mut keys = [
            index_key(b"a\x00", r(1)),
            index_key(b"a", r(7)),
            index_key(b"ab", r(2)),
            index_key(b"a", r(3)),
            index_key(b"", r(9)),
            index_key(b"a\x00\x00", r(1)),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| decode_index_key(k).unwrap()).collect();
        let expect: Vec<(Vec<u8>, Rev)> = vec![
            (b"".to_vec(), r(9)),
            (b"a".to_vec(), r(3)),
            (b"a".to_vec(), r(7)),
            (b"a\x00".to_vec(), r(1)),
            (b"a\x00\x00".to_vec(), r(1)),
            (b"ab".to_vec(), r(2)),
        ];
        assert_eq!(decoded, expect);
    }

    #[test]
    fn rev_round_trips() {
        // Proves revision encoding is lossless and ordered.
        let a = Rev { main: 5, sub: 2 };
        assert_eq!(Rev::decode(&a.encode()), Some(a));
        assert!(a.encode() < Rev { main: 6, sub: 0 }.encode());
    }
}
