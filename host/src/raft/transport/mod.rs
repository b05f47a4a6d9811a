//! The peer transport: how Raft's messages and the requests only the leader serves travel
//! between members. Consensus itself (`RaftNode`, the log store, the state machine adapter,
//! membership, purging) is the parent module; this one moves bytes and knows who is who.
//!
//! - `network.rs`: openraft's RPCs out (replication streamed per follower, heartbeats over
//!   `Calls`, votes, snapshots in chunks);
//! - `service.rs`: the `cairn.raft.v1.Peer` gRPC service in;
//! - `calls.rs`: id-tagged request/answer messages on one long-lived stream per peer;
//! - `forward.rs`: leader-only requests (writes, read indexes, membership changes, the
//!   lessor's questions) sent to the leader from any member;
//! - `peers.rs`: one channel per peer, the cluster-ID check;
//! - `filter.rs`: the link filter tests use to delay, drop and cut messages in-process;
//! - `peer_error.rs`: the peer protocol's failures and their gRPC codes.

pub mod calls;
pub mod filter;
pub mod forward;
pub mod network;
pub mod peer_error;
pub mod peers;
pub mod service;
