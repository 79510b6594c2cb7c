#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine, as root (the integration tests create
# namespaces, mounts and cgroups for real). Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads=2
