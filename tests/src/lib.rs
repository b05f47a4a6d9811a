//! Cairn's test harness: start real `cairn` and `etcd` processes on free loopback ports,
//! drive them with `etcdctl` or the `etcd-client` crate, kill them, and clean up by PID.
//!
//! Every process started here is killed when its handle drops, so a failing test never
//! leaves a server behind. Tests bound their own time with [`with_timeout`].

pub mod cluster;
pub mod converge;
pub mod diff;
pub mod inproc;
pub mod linearizability;
pub mod pki;
pub mod plugins;
pub mod process;
pub mod recorder;
pub mod workload;

pub use cluster::{Cluster, Flavor, Member};
pub use process::{
    CairnNode, EtcdNode, Etcdctl, binary_path, cairnctl_ok, free_port, grpc_message,
    install_plugin, plugin_wasm, raw_watch, with_timeout,
};
