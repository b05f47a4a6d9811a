//! Hashes of the store, to prove members hold the same data (Maintenance.Hash and HashKV).
//!
//! The values are not etcd's (etcd hashes its bbolt pages, Cairn its own encoding) but have
//! the property that matters: members that applied the same log give the same hash. CRC-32C,
//! as etcd uses, over history in revision order.

use fjall::Readable;

use super::encoding::Rev;
use super::error::{Error, MvccError};
use super::read::ReadView;
use super::types::Revision;

/// CRC-32C (Castagnoli), bit-reflected, as etcd's `crc32.MakeTable(crc32.Castagnoli)`.
#[derive(Clone, Copy, Debug)]
pub struct Crc32c(u32);

impl Crc32c {
    const POLY: u32 = 0x82f6_3b78;

    pub fn new() -> Self {
        Crc32c(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            for _ in 0..8 {
                let mask = (self.0 & 1).wrapping_neg();
                self.0 = (self.0 >> 1) ^ (Self::POLY & mask);
            }
        }
    }

    pub fn finish(self) -> u32 {
        !self.0
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadView<'_> {
    /// HashKV: the hash of every history entry up to `revision` (0: the current revision),
    /// with the compact revision it covers from. etcd's errors for compacted and future
    /// revisions apply.
    pub fn hash_kv(&self, revision: Revision) -> Result<(u32, Revision), Error> {
        let rev = if revision <= 0 { self.rev } else { revision };
        if rev > self.rev {
            return Err(MvccError::FutureRevision.into());
        }
        if rev < self.compact_rev {
            return Err(MvccError::Compacted.into());
        }
        let mut crc = Crc32c::new();
        let end = Rev {
            main: rev + 1,
            sub: 0,
        };
        for guard in self.snap.range(&self.storage.kv_revs, ..end.encode()) {
            let (k, v) = guard.into_inner()?;
            crc.update(&k);
            crc.update(&v);
        }
        Ok((crc.finish(), self.compact_rev.max(0)))
    }

    /// Hash: every state keyspace (data, history, leases and positions), in a fixed order.
    pub fn hash_all(&self) -> Result<u32, Error> {
        let mut crc = Crc32c::new();
        for name in crate::storage::STATE_KEYSPACES {
            let ks = self
                .storage
                .state_keyspace(name)
                .expect("listed state keyspace");
            crc.update(name.as_bytes());
            for guard in self.snap.iter(ks) {
                let (k, v) = guard.into_inner()?;
                crc.update(&k);
                crc.update(&v);
            }
        }
        Ok(crc.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // Proves the polynomial and reflection: CRC-32C("123456789") is 0xE3069283.
        let mut crc = Crc32c::new();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xE306_9283);
    }

    #[test]
    fn equal_history_equal_hashes() {
        // Proves Hash and HashKV depend only on the applied history.
        use crate::mvcc::{ApplyBatch, Mvcc, NoLeases, PutRequest, WriteRequest};
        use crate::storage::Storage;
        let store = |writes: &[(&str, &str)]| {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = Storage::open(dir.path()).expect("open");
            let mut batch =
                ApplyBatch::new(&storage, Mvcc::revisions(&storage).expect("revisions"));
            for (k, v) in writes {
                let put = PutRequest {
                    key: k.as_bytes().to_vec(),
                    value: v.as_bytes().to_vec(),
                    ..Default::default()
                };
                batch
                    .apply(&WriteRequest::Put(put), &NoLeases)
                    .expect("apply")
                    .expect("the put succeeds");
            }
            batch.set_position(b"same");
            batch.commit().expect("commit");
            let view = Mvcc::read_view(&storage).expect("view");
            let hashes = (
                view.hash_all().expect("hash"),
                view.hash_kv(0).expect("hashkv"),
                view.hash_kv(2).expect("hashkv@2"),
            );
            drop(view);
            (dir, hashes)
        };
        let (_a, a) = store(&[("a", "1"), ("b", "2")]);
        let (_b, b) = store(&[("a", "1"), ("b", "2")]);
        let (_c, c) = store(&[("a", "1"), ("b", "3")]);
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
        assert_ne!(a.1, c.1);
        assert_eq!(a.2, c.2, "the histories agree up to revision 2");
    }
}
