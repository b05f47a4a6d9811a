#!/usr/bin/env bash
# Builds the example plugins (plugins/) and the hostile test plugins (tests/hostile/) as core
# wasm modules for wasm32-unknown-unknown, release profile, and prints where each .wasm is and
# how big it is. `cairnctl plugin install NAME FILE.wasm` turns a module into a component.
#
# Honours CARGO_TARGET_DIR (default: the workspace's target/); extra arguments go to cargo.
set -euo pipefail

caller_dir="$PWD"
cd "$(dirname "$0")/.."

target=wasm32-unknown-unknown
plugins=(json-schema-guard quota-guard count-compare tenant-policy change-freeze redact-filter json-field-filter index-reactor cascade-reactor)
hostile=(loop-guard memory-bomb-guard recursion-guard trap-guard huge-output-guard bad-import-guard echo-reactor)

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target" >/dev/null 2>&1 || {
        echo "build-plugins: could not add the $target target" >&2
        exit 1
    }
fi

# cargo resolves a relative CARGO_TARGET_DIR against its working directory, which is now the
# workspace root: pin it to where the caller meant.
target_dir="${CARGO_TARGET_DIR:-target}"
if [ -n "${CARGO_TARGET_DIR:-}" ] && [ "${CARGO_TARGET_DIR#/}" = "$CARGO_TARGET_DIR" ]; then
    target_dir="$caller_dir/$CARGO_TARGET_DIR"
    export CARGO_TARGET_DIR="$target_dir"
fi

# The release profile keeps line tables, which are 90% of a plugin's bytes (std's included);
# plugins travel through Raft and into every member's store, so drop them. Function names
# (the `name` section) stay, so traps still have readable backtraces. Set the variable to
# keep them.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="${CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS--C strip=debuginfo}"

packages=()
for crate in "${plugins[@]}" "${hostile[@]}"; do
    packages+=(-p "$crate")
done
cargo build --target "$target" --release "${packages[@]}" "$@"

echo "plugins (core wasm modules):"
for crate in "${plugins[@]}" "${hostile[@]}"; do
    wasm="$target_dir/$target/release/${crate//-/_}.wasm"
    if [ ! -f "$wasm" ]; then
        echo "build-plugins: $wasm is missing after the build" >&2
        exit 1
    fi
    printf '  %-20s %9s bytes  %s\n' "$crate" "$(wc -c <"$wasm" | tr -d ' ')" "$wasm"
done
