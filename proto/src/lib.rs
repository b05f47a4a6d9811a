//! etcd's v3 wire protocol and Cairn's peer protocol, generated from the `.proto` files beside
//! this crate.
//!
//! Module names are the protobuf packages (`etcdserverpb`, `mvccpb`, …) so that code reads like
//! etcd's. This crate holds generated code only: no behaviour lives here.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Cairn's own member-to-member protocol (`cairn.raft.v1`), not part of etcd's API.
pub mod cairn_raft {
    tonic::include_proto!("cairn.raft.v1");
}
