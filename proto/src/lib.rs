//! etcd's v3 wire protocol and Cairn's peer protocol, generated from the `.proto` files beside
//! this crate.
//!
//! Module names are the protobuf packages (`etcdserverpb`, `mvccpb`, …) so that code reads like
//! etcd's. This crate holds generated code only: no behaviour lives here. etcd's messages also
//! implement serde's traits with proto3's JSON mapping (pbjson), for the HTTP gateway.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Cairn's own packages, nested as protobuf nests them (`cairn.plugin.v1` refers to
/// `etcdserverpb` by relative path).
pub mod cairn {
    pub mod plugin {
        pub mod v1 {
            tonic::include_proto!("cairn.plugin.v1");
            include!(concat!(env!("OUT_DIR"), "/cairn.plugin.v1.serde.rs"));
        }
    }
}

/// Cairn's plugin registry (`cairn.plugin.v1`), not part of etcd's API.
pub use cairn::plugin::v1 as cairn_plugin;

/// Cairn's own member-to-member protocol (`cairn.raft.v1`), not part of etcd's API.
pub mod cairn_raft {
    tonic::include_proto!("cairn.raft.v1");
}
