#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine, as root (the integration tests create
# namespaces, mounts and cgroups for real). Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The microvm tier's guest kernel (cached under /var/cache/agentbox/kernel: minutes the first
# time, instant afterwards) and guest agent (a static binary the tests boot as the guest's PID 1).
scripts/build-guest-kernel.sh
cargo build --release -p agentbox-guest

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads=2
