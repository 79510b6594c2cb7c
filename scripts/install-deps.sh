#!/usr/bin/env bash
# Installs the Debian packages agentbox's tests and benchmarks use, when missing:
# python3 (the probes run it inside sandboxes), bubblewrap and util-linux (peers in the
# benchmark), hyperfine (the benchmark driver), iproute2 and nftables (network mode open),
# curl and openssl (the network tests' clients and test certificate), chromium (headless, renders
# the `agentbox eval` HTML report in crates/eval/tests/html_render.rs), clang + lld + wasi-libc +
# libclang-rt-dev-wasm32 (compiler-rt builtins for wasm32: `clang --target=wasm32-wasi` builds the
# C programs of crates/wasm/tests and bench/wasm.sh); the engines of the oci, gvisor, nspawn and
# docker tiers (runc, crun, runsc, systemd-container, docker.io) and debootstrap (`agentbox image
# build`), which the conformance suite and the image tests run for real; QEMU, qemu-img and
# mkfs.ext4 for the microvm tier (its guest kernel is built by scripts/build-guest-kernel.sh,
# which installs linux-source-6.1 and the kernel's build tools itself).
set -euo pipefail
missing=()
for pkg in python3 bubblewrap hyperfine util-linux iproute2 nftables curl openssl chromium clang lld wasi-libc libclang-rt-dev-wasm32 \
    runc crun runsc systemd-container docker.io debootstrap busybox-static \
    qemu-system-x86 qemu-utils e2fsprogs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi
