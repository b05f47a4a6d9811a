//! openraft's type configuration for Cairn.

use serde::{Deserialize, Serialize};

use crate::state_machine::{Command, CommandResponse};

/// A member as Raft knows it: enough to reach it and to answer MemberList.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// A member as MemberList shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub info: MemberInfo,
    pub is_learner: bool,
}

/// A membership change, as the API asks for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    Add {
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove {
        id: u64,
    },
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
    Promote {
        id: u64,
    },
    /// A started member records its name and client URLs (etcd's attribute publish).
    Publish {
        id: u64,
        info: MemberInfo,
    },
}

openraft::declare_raft_types!(
    /// Cairn's Raft types: etcd-style terms (one leader per term), u64 member ids.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = MemberInfo,
        LeaderId = openraft::impls::leader_id_std::LeaderId<Self::Term, Self::NodeId>,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
