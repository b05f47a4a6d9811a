//! Compiles the `.proto` files with protox (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost messages and tonic clients and servers, plus
//! proto3-JSON serde impls (pbjson) for etcd's packages, which the HTTP gateway speaks.

use std::path::Path;

const PROTOS: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "etcd/v3lockpb/v3lock.proto",
    "etcd/v3electionpb/v3election.proto",
    "cairn/raft/v1/raft.proto",
    "cairn/plugin/v1/plugin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let fds = protox::compile(PROTOS, ["etcd", "."])?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    // The gateway's JSON is grpc-gateway's: proto field names on output (`create_revision`,
    // `ID`), either spelling on input, unknown fields ignored.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
            ".cairn.plugin.v1",
        ])?;
    Ok(())
}
