#!/usr/bin/env bash
# Runs every Cairn test, installing what the tests need first:
#   - Debian's etcd-server and etcd-client (the differential tests compare against real etcd),
#   - protobuf-compiler (the etcd-client crate's build script needs protoc; Cairn itself does not),
#   - the wasm32-unknown-unknown target, rustfmt and clippy.
# Then: cargo fmt --check, clippy with -D warnings, build the binaries, run all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "==> rust components"
rustup target add wasm32-unknown-unknown
rustup component add rustfmt clippy

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> build"
cargo build --workspace --bins

echo "==> tests"
cargo test --workspace
