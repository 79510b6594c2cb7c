#!/usr/bin/env bash
# Builds the microvm tier's guest kernel: Debian's linux-source-6.1, `make tinyconfig` plus the
# fragment guest/kernel.config, an uncompressed `vmlinux` booted through its PVH entry point.
#
#   scripts/build-guest-kernel.sh        -> last stdout line: <cache>/<hash>/vmlinux
#
# Cache layout (root: $AGENTBOX_KERNEL_CACHE, default /var/cache/agentbox/kernel):
#   <hash>/vmlinux  <hash>/config  <hash>/version     one finished build (never modified again)
#   current -> <hash>                                  the build of the current fragment
#   build-<hash>/                                      build tree (removed after success unless KEEP_BUILD=1;
#                                                      a kept or interrupted tree is reused incrementally)
# <hash> = sha256 over the linux-source-6.1 package version, the build settings below and the
# fragment's content. If <hash>/vmlinux exists, nothing is built (cache hit).
#
# Environment: AGENTBOX_KERNEL_CACHE (cache root), KEEP_BUILD=1 (keep the build tree).
# Needs root to install missing packages with apt.
set -euo pipefail

prog=build-guest-kernel
die() { echo "$prog: error: $*" >&2; exit 1; }
log() { echo "$prog: $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fragment=$repo/guest/kernel.config
cache=${AGENTBOX_KERNEL_CACHE:-/var/cache/agentbox/kernel}
src_pkg=linux-source-6.1
src_tar=/usr/src/linux-source-6.1.tar.xz
# Everything below that changes the result is part of this string (and so of the hash).
settings="format=1 arch=x86_64 base=tinyconfig merge=merge_config.sh-m+olddefconfig target=vmlinux"
build_pkgs=(build-essential bc flex bison libelf-dev cpio xz-utils qemu-system-x86)

[[ -r $fragment ]] || die "fragment not found: $fragment"

# Installs the named packages that are missing (apt-get update only if something is missing).
ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}) and not root: install them or rerun as root"
    log "installing ${missing[*]}"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# Points <cache>/current at $1 (atomically; nothing to do if it already does).
set_current() {
    [[ $(readlink "$cache/current" 2>/dev/null || true) == "$1" ]] && return 0
    ln -sfn "$1" "$cache/current.tmp.$$" && mv -T "$cache/current.tmp.$$" "$cache/current" \
        || die "cannot update $cache/current"
}

ensure_pkgs "$src_pkg"
[[ -r $src_tar ]] || die "$src_tar missing although $src_pkg is installed"
src_ver=$(dpkg-query -W -f='${Version}' "$src_pkg")
hash=$({
    printf '%s=%s\n%s\n' "$src_pkg" "$src_ver" "$settings"
    cat "$fragment"
} | sha256sum | cut -d' ' -f1)
out=$cache/$hash

# Cache hit: nothing to build.
if [[ -f $out/vmlinux ]]; then
    set_current "$hash"
    echo "$out/vmlinux"
    exit 0
fi

mkdir -p "$cache" || die "cannot create cache root $cache"
# One build per cache at a time; a second caller waits, then finds the cache hit.
exec 9>"$cache/.lock"
flock 9 || die "cannot lock $cache/.lock"
if [[ -f $out/vmlinux ]]; then
    set_current "$hash"
    echo "$out/vmlinux"
    exit 0
fi

ensure_pkgs "${build_pkgs[@]}"

# Settings that would leak from the caller's environment into kbuild.
unset ARCH CROSS_COMPILE KCONFIG_CONFIG KBUILD_OUTPUT O LOCALVERSION KCFLAGS KCPPFLAGS
export KBUILD_BUILD_USER=agentbox KBUILD_BUILD_HOST=agentbox
mk() { make -C "$build" ARCH=x86_64 "$@"; }

build=$cache/build-$hash
buildlog=$build.log
start=$SECONDS
if [[ ! -f $build/.agentbox-unpacked ]]; then
    rm -rf "$build"
    mkdir -p "$build"
    log "unpacking $src_pkg $src_ver into $build"
    tar -xf "$src_tar" -C "$build" --strip-components=1 || die "cannot unpack $src_tar"
    touch "$build/.agentbox-unpacked"
else
    log "reusing build tree $build"
fi

log "configuring (tinyconfig + $fragment); log: $buildlog"
{
    mk tinyconfig &&
        (cd "$build" && scripts/kconfig/merge_config.sh -m .config "$fragment") &&
        mk olddefconfig
} >"$buildlog" 2>&1 || die "configuration failed, see $buildlog"

# Kconfig drops options whose dependencies are unmet without a word: check every line.
bad=0
while IFS= read -r line; do
    [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || continue
    name=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
    got=$(grep -E "^$name=" "$build/.config" || true)
    if [[ $want == n ]]; then
        [[ -z $got ]] && continue
    else
        [[ $got == "$line" ]] && continue
    fi
    echo "$prog: error: $name: fragment asks $want, final .config has ${got:-"it unset"} (unmet dependency or selected by another option?)" >&2
    bad=1
done <"$fragment"
((bad == 0)) || die "the final .config does not match $fragment (see above)"

log "building vmlinux with -j$(nproc)"
mk -j"$(nproc)" vmlinux >>"$buildlog" 2>&1 || {
    tail -n 30 "$buildlog" >&2
    die "kernel build failed, see $buildlog"
}
release=$(mk -s kernelrelease 2>>"$buildlog") || die "make kernelrelease failed"
# The PVH entry point is an ELF note (owner "Xen", XEN_ELFNOTE_PHYS32_ENTRY): QEMU needs it to boot vmlinux.
notes=$(readelf -n "$build/vmlinux") || die "readelf failed on $build/vmlinux"
[[ $notes == *Xen* ]] || die "$build/vmlinux has no PVH entry note (CONFIG_PVH?)"

tmp=$(mktemp -d "$cache/.install-$hash.XXXXXX")
cp "$build/vmlinux" "$tmp/vmlinux"
cp "$build/.config" "$tmp/config"
echo "$release" >"$tmp/version"
rm -rf "$out"
mv -T "$tmp" "$out" || die "cannot install into $out"
chmod 755 "$out"
set_current "$hash"
log "built $release in $((SECONDS - start)) s"

if [[ ${KEEP_BUILD:-0} == 1 ]]; then
    log "keeping build tree $build"
else
    rm -rf "$build" "$buildlog"
fi
echo "$out/vmlinux"
