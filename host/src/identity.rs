//! Who a member is: its name, member ID, peer URLs, and its cluster's ID and token.
//!
//! The identity is decided once, from the `--initial-*` flags, when a data dir first enters a
//! cluster, and written into that data dir (`raft_meta`) before the member takes part. Every
//! later start reads it back and ignores the `--initial-*` flags, as etcd does: a restart
//! needs only `--name` and `--data-dir`, and flags that changed since cannot give the member a
//! new ID behind the cluster's back. A `--name` that contradicts the stored one is a startup
//! error rather than a silent rename.
//!
//! IDs are derived as etcd derives them, so the same flags give the same IDs on etcd and Cairn:
//! - member ID: the first 8 bytes (big-endian) of SHA-1 over the member's peer URLs, sorted and
//!   concatenated, followed by the cluster token;
//! - cluster ID: the first 8 bytes of SHA-1 over the founding members' IDs, sorted, each as 8
//!   big-endian bytes.
//!
//! (etcd's `member add` also hashes the current time into the new ID; Cairn does not, so that
//! the member that is added computes the same ID from its own flags without asking anyone.)

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::raft::MemberInfo;
use crate::storage::Storage;

/// The `raft_meta` record holding the identity.
const IDENTITY: &[u8] = b"identity";

/// A member's identity, as stored in its data dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    /// The peer URLs the member was created with (`member update` may change the cluster's
    /// record of them later; the membership is the authority on those).
    pub peer_urls: Vec<String>,
    pub cluster_id: u64,
    /// `--initial-cluster-token`: part of the ID of every member added later.
    pub cluster_token: String,
}

impl Identity {
    /// The identity stored in this data dir, if it has entered a cluster.
    pub fn load(storage: &Storage) -> io::Result<Option<Identity>> {
        read_record(storage, IDENTITY, "member identity")
    }

    /// Writes the identity durably, before the member takes part in its cluster.
    pub fn save(&self, storage: &Storage) -> io::Result<()> {
        write_record(storage, IDENTITY, self)?;
        storage
            .log_db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(to_io)
    }
}

/// The `raft_meta` record holding the membership a restored data dir founds its cluster with.
const FOUNDING: &[u8] = b"founding";

/// Records the membership this data dir founds its cluster with on its first start
/// (written by `backup::restore`, whose data dirs carry state but no Raft log yet). Durable
/// with the next [`Identity::save`].
pub fn save_founding(storage: &Storage, members: &BTreeMap<u64, MemberInfo>) -> io::Result<()> {
    write_record(storage, FOUNDING, members)
}

/// The founding membership [`save_founding`] recorded, if any.
pub fn founding(storage: &Storage) -> io::Result<Option<BTreeMap<u64, MemberInfo>>> {
    read_record(storage, FOUNDING, "founding membership")
}

/// A postcard-encoded `raft_meta` record, if present; `what` names it in the error.
fn read_record<T: serde::de::DeserializeOwned>(
    storage: &Storage,
    key: &[u8],
    what: &str,
) -> io::Result<Option<T>> {
    match storage.raft_meta.get(key).map_err(to_io)? {
        None => Ok(None),
        Some(raw) => postcard::from_bytes(&raw).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the stored {what} is unreadable: {e}"),
            )
        }),
    }
}

/// Writes a postcard-encoded `raft_meta` record (not yet durable).
fn write_record(storage: &Storage, key: &[u8], value: &impl Serialize) -> io::Result<()> {
    let raw = postcard::to_stdvec(value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    storage.raft_meta.insert(key, raw).map_err(to_io)
}

fn to_io(e: fjall::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The first 8 bytes of a SHA-1 digest, big-endian, as etcd turns hashes into IDs.
fn sha1_id(bytes: &[u8]) -> u64 {
    let digest = Sha1::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The ID of the member with `peer_urls` in the cluster with `token` (etcd's
/// `computeMemberId` without a timestamp).
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    sha1_id(&bytes)
}

/// The founding membership `--initial-cluster` (name → peer URLs) describes, by member ID
/// under `token`. Client URLs are left empty: identical on every founding member, each
/// publishes its own once it runs.
pub fn founding_members(
    initial_cluster: &[(String, Vec<String>)],
    token: &str,
) -> BTreeMap<u64, MemberInfo> {
    initial_cluster
        .iter()
        .map(|(name, urls)| {
            let info = MemberInfo {
                name: name.clone(),
                peer_urls: urls.clone(),
                client_urls: Vec::new(),
            };
            (member_id(urls, token), info)
        })
        .collect()
}

/// The ID of the cluster founded by `member_ids` (etcd's `genID`).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_id(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_etcds() {
        // Proves member and cluster IDs equal the ones etcd 3.4 reports for the same flags
        // (`etcd --name n1 --initial-advertise-peer-urls http://127.0.0.1:23801`, default
        // token: member bdae9bbc11dd390d in cluster d1cfaf999eb97a2a).
        let id = member_id(&["http://127.0.0.1:23801".to_string()], "etcd-cluster");
        assert_eq!(id, 0xbdae_9bbc_11dd_390d);
        assert_eq!(cluster_id(&[id]), 0xd1cf_af99_9eb9_7a2a);
        // Order of URLs and of members does not matter.
        let a = member_id(&["http://b:2".into(), "http://a:1".into()], "t");
        let b = member_id(&["http://a:1".into(), "http://b:2".into()], "t");
        assert_eq!(a, b);
        assert_eq!(cluster_id(&[1, 2]), cluster_id(&[2, 1]));
    }

    #[test]
    fn identity_round_trips_through_the_data_dir() {
        // Proves a stored identity reads back whole, and an empty data dir has none.
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open(dir.path()).expect("open");
        assert_eq!(Identity::load(&storage).expect("load"), None);
        let identity = Identity {
            name: "n1".into(),
            member_id: 7,
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            cluster_id: 9,
            cluster_token: "tok".into(),
        };
        identity.save(&storage).expect("save");
        assert_eq!(Identity::load(&storage).expect("load"), Some(identity));
    }
}
