#!/usr/bin/env bash
# Runs every Cairn test, installing what the tests need first:
#   - Debian's etcd-server and etcd-client (the differential tests compare against real etcd),
#   - protobuf-compiler (the etcd-client crate's build script needs protoc; Cairn itself does not),
#   - iproute2 and util-linux (the doc tests run examples in a network namespace), curl and
#     openssl (some of those examples use them),
#   - the wasm32-unknown-unknown target, rustfmt and clippy.
# Then: cargo fmt --check, clippy with -D warnings, build the binaries and the wasm plugins,
# run all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
# The doc tests run the docs' examples in network and PID namespaces of their own (`ip`, `unshare`).
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# docs/security.md's examples talk to the HTTP gateway with curl.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# docs/security.md's TLS example makes its certificates with openssl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# A cold clone gains nothing from incremental compilation, and its files cost gigabytes of disk.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi
echo "==> disk before the build: $(df -h --output=avail . | tail -1 | tr -d ' ') free"

echo "==> rust components"
rustup target add wasm32-unknown-unknown
rustup component add rustfmt clippy

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "==> build"
cargo build --workspace --bins

echo "==> plugins (wasm32-unknown-unknown)"
./scripts/build-plugins.sh

echo "==> tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
echo "==> disk after the tests: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
# One closing line for the whole run (cargo prints one summary per test binary, the last of
# them often a doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "workspace: %d passed, %d failed\n", p, f }' "$log"
