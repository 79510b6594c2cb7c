#!/usr/bin/env bash
# The engine tiers against the raw engines they drive: for each of runc, crun, runsc (gVisor),
# systemd-nspawn and Docker, one hyperfine run holds `agentbox run --tier T -- /bin/true` (and
# `python3 -c pass`), the raw tool running the same workload on an equivalent root with
# equivalent confinement, and `agentbox run --tier ns` as the reference point. Then agentbox's
# own phases (AGENTBOX_TIMING=1) per engine tier. Writes docs/benchmarks-engines.md (set OUT to
# write elsewhere). Run as root: sudo bench/engines.sh (about 6 minutes with the defaults).
#
# The raw rows get the same root as agentbox's default `host` image (a skeleton directory with
# the host's /usr, /etc/ld.so.cache, ... bound read-only and /bin, /lib64 ... as symlinks), the
# same namespaces, user-namespace mapping (a private 65536-id range), limits, masked paths,
# capabilities (none), no_new_privs and the very seccomp filter agentbox generates (copied from a
# live agentbox bundle); the doc lists what still differs.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-50}          # oci (runc, crun) and nspawn
SLOW_RUNS=${SLOW_RUNS:-30} # gvisor and docker
WARMUP=${WARMUP:-3}
TIMING_RUNS=${TIMING_RUNS:-10}
OUT=${OUT:-docs/benchmarks-engines.md}
scripts/install-deps.sh
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet # NO_BUILD=1: time the binary already built
# BIN=/path/to/agentbox: time that binary instead (e.g. a copy, while the tree is being rebuilt).
BIN=${BIN:-"$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/agentbox"}
PY=/usr/bin/python3 # the workload, the same binary in every root (the host's python3 may be a shim)

work=$(mktemp -d /var/tmp/bench-engines.XXXXXX)
chmod 755 "$work"
cut -d' ' -f1-3 /proc/loadavg >"$work/loadavg"
RAW_BASE=$((0x30000000))  # the raw rows' uid/gid range (agentbox's slots are 0x10000000-0x1fffffff)
DOCKER_BASE=$((0x31000000)) # userns-remap range of the private dockerd
DK_USER=agentbox-bench-dk
DK_RUN=/run/agentbox-bench
DK_SOCK=$DK_RUN/docker.sock
DK_DATA=$work/docker
dockerd_pid=
cleanup() {
    set +e
    for id in raw-runc raw-crun; do
        runc --root "$work/state-runc" delete --force "$id" >/dev/null 2>&1
        crun --root "$work/state-crun" delete --force "$id" >/dev/null 2>&1
    done
    runsc --root "$work/state-runsc" delete --force raw-runsc >/dev/null 2>&1
    if [ -n "$dockerd_pid" ]; then
        docker -H "unix://$DK_SOCK" rm -f $(docker -H "unix://$DK_SOCK" ps -aq 2>/dev/null) >/dev/null 2>&1
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$dockerd_pid" 2>/dev/null
        wait "$dockerd_pid" 2>/dev/null
    fi
    # Whatever dockerd left mounted under its data root (overlays, its own binds).
    grep -o " $work/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$work" "$DK_RUN"
    if id "$DK_USER" >/dev/null 2>&1; then userdel "$DK_USER"; fi
    sed -i "/^$DK_USER:/d" /etc/subuid /etc/subgid
    for d in /sys/fs/cgroup/*/agentbox-bench; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
    # crun, run where /sys/fs/cgroup/unified is unmounted, makes plain directories on the tmpfs
    # under it (hidden again by the cgroup2 mount outside): remove the raw crun rows' ones.
    unshare -m sh -c 'umount /sys/fs/cgroup/unified && rm -rf /sys/fs/cgroup/unified/agentbox-bench' 2>/dev/null
}
trap cleanup EXIT

# --- The raw rows' roots and bundles -------------------------------------------------------------
# The seccomp filter agentbox gives its oci sandboxes, read from the bundle of a live one.
"$BIN" run --tier oci --runtime runc -- sleep 3.14159 >/dev/null &
python3 - "$work/seccomp.json" <<'PY'
import glob, json, sys, time
for _ in range(200):
    for f in glob.glob("/run/agentbox/engines/*/config.json"):
        try:
            c = json.load(open(f))
        except (OSError, ValueError):
            continue
        if c["process"]["args"] == ["sleep", "3.14159"]:
            json.dump(c["linux"]["seccomp"], open(sys.argv[1], "w"))
            json.dump(c, open(sys.argv[1] + ".agentbox-config.json", "w"), indent=1)
            sys.exit(0)
    time.sleep(0.025)
sys.exit("could not read the config.json of a live agentbox oci sandbox")
PY
wait

python3 - "$work" "$RAW_BASE" "$PY" <<'PY'
import json, os, sys
work, base, py = sys.argv[1], int(sys.argv[2]), sys.argv[3]
SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]  # plan::HOST_SYSTEM_DIRS
ETC = ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
       "/etc/nsswitch.conf", "/etc/localtime", "/etc/os-release", "/etc/ssl"]  # plan::HOST_ETC_ENTRIES
seccomp = json.load(open(f"{work}/seccomp.json"))

def skeleton(root):
    """The `host` image: symlinks as on the host, empty mount points for what is bound."""
    binds = []
    for d in ["etc", "proc", "dev", "sys", "tmp", "var/tmp", "root", "workspace"]:
        os.makedirs(f"{root}/{d}", exist_ok=True)
    os.chmod(f"{root}/tmp", 0o1777); os.chmod(f"{root}/var/tmp", 0o1777); os.chmod(f"{root}/root", 0o700)
    for p in SYSTEM + ETC:
        dst = root + p
        if os.path.islink(p):
            os.symlink(os.readlink(p), dst)
        elif os.path.isdir(p):
            os.makedirs(dst, exist_ok=True); binds.append(p)
        elif os.path.exists(p):
            open(dst, "w").close(); binds.append(p)
    open(f"{root}/etc/passwd", "w").write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    open(f"{root}/etc/group", "w").write("root:x:0:\nnogroup:x:65534:\n")
    open(f"{root}/etc/hostname", "w").write("agentbox\n")
    return binds

def chown_tree(root, uid):
    for d, dirs, files in os.walk(root):
        for n in [d] + [os.path.join(d, x) for x in dirs + files]:
            os.lchown(n, uid, uid)

def m(dst, typ, src, opts):
    return {"destination": dst, "type": typ, "source": src, "options": opts}

def bundle(name, root, binds, gvisor):
    mounts = [
        m("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        m("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        m("/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        m("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
        m("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    ] + [m(p, "bind", p, ["rbind", "rprivate", "nosuid", "nodev", "ro"]) for p in binds]
    if gvisor:  # as agentbox: the root's /tmp bound over the sentry's own unbounded tmpfs
        mounts.append(m("/tmp", "bind", f"{root}/tmp", ["rbind", "rprivate", "nosuid", "nodev"]))
    ns = ["pid", "ipc", "uts", "mount", "network", "cgroup"] + ([] if gvisor else ["user"])
    resources = {"memory": {"limit": 1 << 30, "swap": 1 << 30}, "pids": {"limit": 1024 + (128 if gvisor else 0)}}
    linux = {
        "namespaces": [{"type": t} for t in ns], "resources": resources,
        "cgroupsPath": f"/agentbox-bench/{name}",
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/sysrq-trigger", "/proc/timer_list",
                        "/proc/sched_debug", "/proc/kallsyms", "/proc/kmsg", "/proc/kpagecount",
                        "/proc/kpageflags", "/proc/kpagecgroup", "/proc/latency_stats", "/proc/timer_stats",
                        "/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware"],
        "readonlyPaths": ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger"],
        "rootfsPropagation": "rprivate", "seccomp": seccomp,
    }
    if not gvisor:
        linux["uidMappings"] = linux["gidMappings"] = [{"containerID": 0, "hostID": base, "size": 65536}]
        resources["devices"] = [{"allow": False, "access": "rwm"}]
    caps = {k: [] for k in ["bounding", "effective", "inheritable", "permitted", "ambient"]}
    for workload, args in [("true", ["/bin/true"]), ("python", [py, "-c", "pass"])]:
        d = f"{work}/bundle-{name}-{workload}"
        os.makedirs(d)
        json.dump({
            "ociVersion": "1.0.2", "root": {"path": root, "readonly": False}, "hostname": "agentbox",
            "mounts": mounts, "linux": linux,
            "process": {
                "terminal": False, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/workspace",
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "HOME=/root", "LANG=C.UTF-8", "TERM=xterm"],
                "capabilities": caps, "noNewPrivileges": True,
                "rlimits": [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                            {"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            },
        }, open(f"{d}/config.json", "w"), indent=1)

# runc, crun and nspawn: a root owned by the mapped root, as agentbox's is.
binds = skeleton(f"{work}/root-mapped")
chown_tree(f"{work}/root-mapped", base)
# runsc: no user namespace in the spec (the sentry is the boundary), a root owned by host root.
skeleton(f"{work}/root-gvisor")
for name, root, gvisor in [("runc", "root-mapped", False), ("crun", "root-mapped", False), ("runsc", "root-gvisor", True)]:
    bundle(name, f"{work}/{root}", binds, gvisor)
open(f"{work}/binds", "w").write("\n".join(binds) + "\n")
PY
mapfile -t BINDS <"$work/binds"

# Sanity: every raw command must succeed once before it is timed.
runc_raw() { echo "runc --root $work/state-runc run --bundle $work/bundle-runc-$1 raw-runc"; }
crun_raw() { echo "crun --root $work/state-crun --cgroup-manager=cgroupfs run --bundle $work/bundle-crun-$1 raw-crun"; }
runsc_raw() { echo "runsc --root $work/state-runsc --platform=ptrace --network=none --oci-seccomp run --bundle $work/bundle-runsc-$1 raw-runsc"; }
nspawn_args="--quiet --keep-unit --register=no --as-pid2 --console=pipe --link-journal=no --resolv-conf=off --timezone=off --kill-signal=SIGKILL --private-network --drop-capability=all --no-new-privileges=yes --machine=raw-nspawn -D $work/root-mapped --private-users=$RAW_BASE:65536 --private-users-ownership=off --hostname=agentbox --chdir=/workspace --rlimit=NOFILE=1024"
for b in "${BINDS[@]}"; do nspawn_args+=" --bind-ro=$b"; done
# The same system call filter agentbox gives nspawn (its --system-call-filter= arguments), read from
# the command line of a live agentbox nspawn run; quoted, as every use below re-parses the string.
"$BIN" run --tier nspawn -- sleep 3.14159 >/dev/null &
python3 - "$work/nspawn-filter" <<'PY'
import glob, shlex, sys, time
for _ in range(200):
    for f in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            args = open(f, "rb").read().decode().split("\0")
        except OSError:
            continue
        if args and args[0].endswith("systemd-nspawn") and "3.14159" in args:
            filters = [a for a in args if a.startswith("--system-call-filter=")]
            open(sys.argv[1], "w").write(" ".join(shlex.quote(a) for a in filters))
            sys.exit(0)
    time.sleep(0.025)
sys.exit("could not read the command line of a live agentbox nspawn run")
PY
wait
nspawn_args+=" $(cat "$work/nspawn-filter")"
ab() { echo "$BIN run --tier $1 $2 -- ${3:-/bin/true}"; }
PYW="$PY -c pass"
UNIFIED_OFF='umount /sys/fs/cgroup/unified 2>/dev/null || true'
NSPAWN_RUN='mount -t tmpfs -o mode=0755,size=4m tmpfs /run/systemd/nspawn'
mkdir -p /run/systemd/nspawn

$(runc_raw true)
$(runc_raw python)
unshare -m sh -c "$UNIFIED_OFF; $(crun_raw true) && $(crun_raw python)"
$(runsc_raw true)
unshare -m sh -c "$NSPAWN_RUN && systemd-nspawn $nspawn_args -- /bin/true && systemd-nspawn $nspawn_args -- $PYW"
for t in "oci --runtime runc" "oci --runtime crun" gvisor nspawn; do
    $BIN run --tier $t -- /bin/true
done

hf() { # hyperfine NAME RUNS -n ... ; JSON to $work/NAME.json. A failed run is logged with the
    # command's own error (--show-output: the workloads print nothing) and the table redone once.
    local name=$1 runs=$2 attempt; shift 2
    for attempt in 1 2; do
        echo "hyperfine: $name" >&2
        if hyperfine --shell=none --show-output --warmup "$WARMUP" --runs "$runs" --export-json "$work/$name.json" "$@" \
            >"$work/$name.txt" 2>"$work/$name.err"; then
            return 0
        fi
        echo "$name (attempt $attempt): $(grep -v '^ *$' "$work/$name.err" | tail -3 | tr '\n' ' ')" | tee -a "$work/failures" >&2
    done
    return 1
}
# Helper commands agentbox runs around each container on the oci and gvisor tiers (see
# crates/oci/src/runtimes.rs pick_oci/probe and run.rs cleanup): timed in the same runs.
NS_ROWS=(-n "agentbox ns: true" "$(ab ns "")" -n "agentbox ns: python" "$(ab ns "" "$PYW")")

hf runc "$RUNS" "${NS_ROWS[@]}" \
    -n "agentbox oci runc: true" "$(ab oci "--runtime runc")" \
    -n "runc run: true" "$(runc_raw true)" \
    -n "agentbox oci runc: python" "$(ab oci "--runtime runc" "$PYW")" \
    -n "runc run: python" "$(runc_raw python)" \
    -n "helper: runc --version" "runc --version" \
    -n "helper: runc delete --force (absent)" "runc --root $work/state-runc delete --force absent"

# crun 1.8.1 refuses a hybrid cgroup host: the whole run is in a private mount namespace without
# /sys/fs/cgroup/unified (agentbox does the same in its engine child; there it finds it gone).
export -f hf
export work WARMUP
# The agentbox rows are started back in the script's own mount namespace (nsenter, timed as a
# helper row): agentbox's supervisor walks /sys/fs/cgroup after each run, and inside this namespace
# it would find the plain directories described in the doc instead of the cgroup2 mount.
HOSTNS="nsenter --mount=/proc/$$/ns/mnt"
unshare -m bash -c "$UNIFIED_OFF; hf crun $RUNS \"\$@\"" bash "${NS_ROWS[@]}" \
    -n "agentbox oci crun: true" "$HOSTNS $(ab oci "--runtime crun")" \
    -n "crun run: true" "$(crun_raw true)" \
    -n "agentbox oci crun: python" "$HOSTNS $(ab oci "--runtime crun" "$PYW")" \
    -n "crun run: python" "$(crun_raw python)" \
    -n "helper: crun --version" "crun --version" \
    -n "helper: crun delete --force (absent)" "crun --root $work/state-crun --cgroup-manager=cgroupfs delete --force absent" \
    -n "helper: nsenter --mount (wraps the agentbox crun rows)" "$HOSTNS /bin/true"

hf gvisor "$SLOW_RUNS" "${NS_ROWS[@]}" \
    -n "agentbox gvisor: true" "$(ab gvisor "")" \
    -n "runsc run: true" "$(runsc_raw true)" \
    -n "agentbox gvisor: python" "$(ab gvisor "" "$PYW")" \
    -n "runsc run: python" "$(runsc_raw python)" \
    -n "helper: runsc delete --force (absent)" "runsc --root $work/state-runsc delete --force absent"

# systemd-nspawn wants /run/systemd/nspawn on a tmpfs (it refuses to clean up a disk /run, as on
# this host without systemd): the whole run is in a mount namespace with one there (agentbox's
# engine child mounts its own anyway).
unshare -m bash -c "$NSPAWN_RUN && hf nspawn $RUNS \"\$@\"" bash "${NS_ROWS[@]}" \
    -n "agentbox nspawn: true" "$(ab nspawn "")" \
    -n "systemd-nspawn: true" "systemd-nspawn $nspawn_args -- /bin/true" \
    -n "agentbox nspawn: python" "$(ab nspawn "" "$PYW")" \
    -n "systemd-nspawn: python" "systemd-nspawn $nspawn_args -- $PYW"

# --- Paired, interleaved runs of the fast engines (bench/paired.py): each round runs agentbox and
# the raw tool back to back, so load drifting between hyperfine's blocks cannot move one row alone.
# agentbox runs in the host's mount namespace as a user starts it; raw crun and nspawn in the
# namespace they need, started and timed there by a helper (no wrapper is timed with any row).
python3 - "$work/paired-spec.json" "$BIN" "$PY" "$(runc_raw true)" "$(runc_raw python)" \
    "$(crun_raw true)" "$(crun_raw python)" "systemd-nspawn $nspawn_args --" "$UNIFIED_OFF" "$NSPAWN_RUN" <<'PY'
import json, shlex, sys
out, ab, py, runc_t, runc_p, crun_t, crun_p, nspawn, unified_off, nspawn_run = sys.argv[1:]
pairs = []
for w, args in [("true", ["/bin/true"]), ("python", [py, "-c", "pass"])]:
    pairs += [
        {"name": f"runc: {w}", "agentbox": [ab, "run", "--tier", "oci", "--runtime", "runc", "--", *args],
         "raw": shlex.split(runc_t if w == "true" else runc_p)},
        {"name": f"crun: {w}", "agentbox": [ab, "run", "--tier", "oci", "--runtime", "crun", "--", *args],
         "raw": shlex.split(crun_t if w == "true" else crun_p), "raw_setup": unified_off},
        {"name": f"nspawn: {w}", "agentbox": [ab, "run", "--tier", "nspawn", "--", *args],
         "raw": shlex.split(nspawn) + args, "raw_setup": nspawn_run},
    ]
json.dump({"pairs": pairs}, open(out, "w"), indent=1)
PY
python3 bench/paired.py "${PAIRED_ROUNDS:-60}" "$work/paired.json" "$work/paired-spec.json"

# --- Docker: a private daemon with userns-remap ------------------------------------------------------
useradd --system --no-create-home --shell /usr/sbin/nologin "$DK_USER"
echo "$DK_USER:$DOCKER_BASE:65536" >>/etc/subuid
echo "$DK_USER:$DOCKER_BASE:65536" >>/etc/subgid
mkdir -p "$DK_RUN" "$DK_DATA"
dockerd --data-root "$DK_DATA" --exec-root "$DK_RUN/exec" --pidfile "$DK_RUN/docker.pid" \
    -H "unix://$DK_SOCK" --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
    --userns-remap="$DK_USER" >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 100); do curl -sf --unix-socket "$DK_SOCK" http://docker/_ping >/dev/null 2>&1 && break; sleep 0.2; done
export DOCKER_HOST="unix://$DK_SOCK"
docker version --format '{{.Client.Version}} / {{.Server.Version}}' >"$work/docker-version"
# The first agentbox run imports its `host` skeleton image; the raw row runs that same image.
$BIN run --tier docker -- /bin/true
image=$(docker images --format '{{.Repository}}:{{.Tag}}' agentbox/host | head -1)
docker_raw="docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges --ipc private --log-driver none --user 0:0 --workdir /workspace --hostname agentbox --memory 1g --memory-swap 1g --pids-limit 1024 --ulimit nofile=1024:1024 --shm-size 1g --tmpfs /tmp:rw,nosuid,nodev,exec,mode=1777,size=1073741824"
for e in PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=xterm; do docker_raw+=" --env $e"; done
for b in "${BINDS[@]}"; do docker_raw+=" --mount type=bind,src=$b,dst=$b,readonly,bind-nonrecursive=true,bind-propagation=rprivate"; done
docker_raw+=" $image"
$docker_raw /bin/true
hf docker "$SLOW_RUNS" "${NS_ROWS[@]}" \
    -n "agentbox docker: true" "$(ab docker "")" \
    -n "docker run: true" "$docker_raw /bin/true" \
    -n "agentbox docker: python" "$(ab docker "" "$PYW")" \
    -n "docker run: python" "$docker_raw $PYW"

# --- Where agentbox's time goes: its phase marks, TIMING_RUNS runs per tier ----------------------
timing() { # NAME TIER-ARGS...
    local name=$1; shift
    for _ in $(seq "$TIMING_RUNS"); do
        AGENTBOX_TIMING=1 "$BIN" run "$@" -- /bin/true 2>&1 >/dev/null | sed "s/^/$name\t/"
    done
}
{
    timing ns --tier ns
    timing runc --tier oci --runtime runc
    timing crun --tier oci --runtime crun
    timing gvisor --tier gvisor
    timing nspawn --tier nspawn
    timing docker --tier docker
} >"$work/timing.tsv"

# Host state behind the crun finding: cgroup directories agentbox's sweep walks (depth 1-3 under each hierarchy) seen
# from the host's mount namespace and from one where /sys/fs/cgroup/unified is unmounted.
walk='start=$(date +%s%N); n=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d | wc -l); echo "$n $(( ($(date +%s%N) - start) / 1000 ))"'
echo "host $(sh -c "$walk")" >"$work/cgwalk"
echo "unified-unmounted $(unshare -m sh -c "$UNIFIED_OFF; $walk")" >>"$work/cgwalk"

versions="runc $(runc --version | sed -n 's/^runc version //p'), crun $(crun --version | sed -n 's/^crun version //p'), runsc $(runsc --version | sed -n 's/^runsc version //p'), systemd-nspawn $(systemd-nspawn --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'), docker CLI / dockerd $(cat "$work/docker-version"), hyperfine $(hyperfine --version | awk '{print $2}')"

python3 - "$work" "$OUT" "$RUNS" "$SLOW_RUNS" "$WARMUP" "$versions" "$TIMING_RUNS" "$image" <<'PY'
import json, os, sys, platform, subprocess, datetime, statistics, collections, re
work, out, runs, slow_runs, warmup, versions, timing_runs, image = sys.argv[1:9]
loadavg = open(f"{work}/loadavg").read().strip()
ENGINES = [  # table, agentbox row prefix, raw row prefix, runs, title
    ("runc", "agentbox oci runc", "runc run", runs, "oci tier, runc"),
    ("crun", "agentbox oci crun", "crun run", runs, "oci tier, crun"),
    ("gvisor", "agentbox gvisor", "runsc run", slow_runs, "gvisor tier (runsc, platform ptrace)"),
    ("nspawn", "agentbox nspawn", "systemd-nspawn", runs, "nspawn tier (systemd-nspawn)"),
    ("docker", "agentbox docker", "docker run", slow_runs, "docker tier (private dockerd, userns-remap)"),
]
res = {t: {r["command"]: r for r in json.load(open(f"{work}/{t}.json"))["results"]} for t, *_ in ENGINES}
ms = lambda s: s * 1000
def row(r):
    return f"| {r['command']} | {ms(r['median']):.1f} | {ms(r['mean']):.1f} ± {ms(r['stddev']):.1f} | {ms(r['min']):.1f} |"
verdict = lambda x: "meets ≤ 1.10×" if x <= 1.10 else "**misses** ≤ 1.10×"
summary, tables = [], []
for t, ab, raw, n, title in ENGINES:
    r = res[t]
    tables += [f"### {title}", "", f"{n} runs each after {warmup} warm-ups, one hyperfine run.", "",
               "| command | median ms | mean ± σ ms | min ms |", "|---|---|---|---|",
               *[row(x) for x in r.values()], ""]
    for w in ["true", "python"]:
        a, b = r[f"{ab}: {w}"]["median"], r[f"{raw}: {w}"]["median"]
        summary.append(f"| {title} | `{'/bin/true' if w == 'true' else 'python3 -c pass'}` | {ms(a):.1f} | {ms(b):.1f} | {ms(a-b):+.1f} | **{a/b:.2f}×** | {verdict(a/b)} |")
        if t == "crun":
            # The agentbox crun rows carry an `nsenter --mount` the raw row does not (see below).
            a -= r["helper: nsenter --mount (wraps the agentbox crun rows)"]["median"]
            summary.append(f"| {title}, less the `nsenter` wrapper's median | `{'/bin/true' if w == 'true' else 'python3 -c pass'}` | {ms(a):.1f} | {ms(b):.1f} | {ms(a-b):+.1f} | **{a/b:.2f}×** | {verdict(a/b)} |")

# AGENTBOX_TIMING marks: median offset of each mark per tier.
marks = collections.defaultdict(lambda: collections.defaultdict(list))
order = collections.defaultdict(list)
for line in open(f"{work}/timing.tsv"):
    m = re.match(r"(\w+)\t\[agentbox timing\]\s+([\d.]+) ms\s+(.*)", line.rstrip("\n"))
    # The supervisor and the engine child print marks at once: skip a line two of them garbled.
    if m and "[agentbox timing]" not in m.group(3):
        tier, t, label = m.group(1), float(m.group(2)), m.group(3)
        marks[tier][label].append(t)
        if label not in order[tier]:
            order[tier].append(label)
labels = []
for tier in marks:
    for l in order[tier]:
        if l not in labels:
            labels.append(l)
tiers = list(marks)
timing_table = ["| mark | " + " | ".join(tiers) + " |", "|---|" + "---|" * len(tiers)]
mk = lambda t, l: statistics.median(marks[t][l]) if marks[t][l] else float("nan")
split = ["| tier | supervisor until the child is released | child: root, engine, its clean-up | supervisor: teardown (`destroy`) | total |",
         "|---|---|---|---|---|"]
for t in tiers:
    if t == "ns":
        continue
    a, b, c = mk(t, "released child"), mk(t, "child reaped"), mk(t, "cleaned up")
    split.append(f"| {t} | {a:.1f} | {b - a:.1f} | {c - b:.1f} | {c:.1f} |")
cg = {l.split()[0]: l.split()[1:] for l in open(f"{work}/cgwalk")}
host_n, host_us = map(int, cg["host"]); un_n, un_us = map(int, cg["unified-unmounted"])
for l in labels:
    cells = [f"{statistics.median(marks[t][l]):.1f}" if marks[t][l] else "–" for t in tiers]
    timing_table.append(f"| {l} | " + " | ".join(cells) + " |")

def med(t, name): return ms(res[t][name]["median"])
helpers = [
    f"- `runc --version` (what `doctor` runs; a run only looks for the binary along PATH): **{med('runc', 'helper: runc --version'):.1f} ms**; "
    f"`runc delete --force` of a container that is gone (run only when the runtime left state): **{med('runc', 'helper: runc delete --force (absent)'):.1f} ms**.",
    f"- `crun --version`: **{med('crun', 'helper: crun --version'):.1f} ms**; `crun delete --force`: **{med('crun', 'helper: crun delete --force (absent)'):.1f} ms**.",
    f"- `runsc delete --force` (run only when a process of the container is left): **{med('gvisor', 'helper: runsc delete --force (absent)'):.1f} ms**.",
]
ac = json.load(open(f"{work}/seccomp.json.agentbox-config.json"))
paired = json.load(open(f"{work}/paired.json"))
paired_rows = ["| engine: workload | agentbox median ms | raw median ms | per-round ratio (median) | 95 % interval | target |",
               "|---|---|---|---|---|---|"]
for name, p in paired.items():
    lo, hi = p["ratio_ci95"]
    paired_rows.append(f"| {name} | {ms(statistics.median(p['agentbox'])):.1f} | {ms(statistics.median(p['raw'])):.1f} | "
                       f"**{p['ratio_median']:.2f}×** | {lo:.2f}–{hi:.2f} | {verdict(p['ratio_median'])} |")
paired_n = len(next(iter(paired.values()))["raw"])
lines = [
    "# Benchmarks: engine tiers against the raw engines",
    "",
    "Each engine tier of agentbox against the raw tool it drives, running the same workload on an equivalent",
    "root with equivalent confinement, **in the same hyperfine run** per engine, with `agentbox run --tier ns` as the",
    f"reference point (generated by `sudo bench/engines.sh` on {datetime.date.today()}, kernel {platform.release()},",
    f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPUs; {versions}).",
    "Medians are the headline numbers; means carry the outliers. Target: agentbox adds ≤ 10 % over the raw tool.",
    f"Load average when the script started: {loadavg} (other work shared the host: the daemon-bound docker rows",
    "vary by ±20 % between runs of this script, so their ratio is only meaningful to about ±0.2).",
    "",
    "## Summary (medians)",
    "",
    "| engine | workload | agentbox ms | raw ms | agentbox adds ms | agentbox / raw | target |",
    "|---|---|---|---|---|---|---|",
    *summary,
    "",
    "### Paired, interleaved runs (runc, crun, nspawn)",
    "",
    f"`bench/paired.py`, {paired_n} rounds per pair after 3 warm-ups: each round runs agentbox and the raw tool back to",
    "back (alternating which goes first) and takes their ratio, so a change in the host's load between",
    "hyperfine's blocks cannot move one row alone. agentbox runs in the host's mount namespace, as a user starts",
    "it; raw crun (cgroup2 unmounted) and raw nspawn (a tmpfs on /run/systemd/nspawn) run in a namespace prepared",
    "for them, started and timed there by a helper process the same way (posix_spawn, wait): no `nsenter` or",
    "shell is timed with any row. The interval is a bootstrap of the per-round ratios' median.",
    "",
    *paired_rows,
    "",
    "## What is compared",
    "",
    "- **Root.** Every row runs on the `host` image: a skeleton directory (symlinks `/bin`, `/lib64`, ... as on the host,",
    "  a generated `/etc/passwd`, `/etc/group`) with the host's `/usr` and the `/etc` entries agentbox shows",
    "  (`ld.so.cache`, `ld.so.conf(.d)`, `alternatives`, `nsswitch.conf`, `ssl`) bound read-only, `nosuid,nodev`.",
    "  agentbox builds this root itself, per run, on a tmpfs with idmapped binds (its `ns` tier's code; read-only but",
    "  for /tmp, /var/tmp, /root, /workspace); the raw rows, with a writable root,",
    "  reuse one directory on disk made once by the script and let the engine do the binds (`mounts` in config.json,",
    "  `--bind-ro` for nspawn, `--mount` for docker), without idmapping (runc 1.1 and crun 1.8 have no idmapped",
    "  mounts: `/usr` shows as `nobody` inside, harmless for these workloads).",
    "- **runc / crun.** The raw config.json is written by the script with what agentbox's has: pid, ipc, uts, mount,",
    "  network (empty), cgroup and user namespaces; container ids 0-65535 mapped onto a private host range; uid 0;",
    "  no capability in any set; `noNewPrivileges`; RLIMIT_CORE 0, RLIMIT_NOFILE 1024; memory 1 GiB without swap,",
    "  pids 1024 (agentbox's defaults), a device cgroup denying all but the runtime's defaults; the same /proc,",
    "  /dev, /dev/pts, /dev/shm, read-only /sys, masked and read-only paths; and **the same seccomp filter**",
    f"  ({len(ac['linux']['seccomp'].get('syscalls', []))} rules, default `{ac['linux']['seccomp']['defaultAction']}`), copied from the bundle of a live agentbox sandbox.",
    "  What the raw rows lack: agentbox's JSON `--log` of the runtime, its look along PATH for the runtime, the",
    "  check for runtime state and cgroups left after the run (`delete --force` only when state was left), and the",
    "  supervisor (uid slot, wall-clock limit, `destroy`).",
    "- **crun**: Debian's crun 1.8.1 refuses this cgroup-v1 hybrid host while cgroup2 is mounted at",
    "  `/sys/fs/cgroup/unified`, so the whole crun hyperfine run is inside `unshare -m` with that mount unmounted",
    "  (agentbox's engine child does the same in its private mount namespace). The agentbox crun rows are started",
    "  back in the host's mount namespace with `nsenter --mount` (timed below), as a user would start agentbox.",
    "- **runsc** (`--platform=ptrace --network=none --oci-seccomp`, as agentbox passes): the same config.json without",
    "  the user namespace and device rules (agentbox leaves them out for gVisor: the sentry is the boundary), on a",
    "  root owned by host root; pids limit 1024 + 128 for the sandbox's own tasks and the root's /tmp bound at",
    "  /tmp, as agentbox sets them.",
    "- **systemd-nspawn**: agentbox's flags (`--quiet --keep-unit --register=no --as-pid2 --console=pipe",
    "  --link-journal=no --resolv-conf=off --timezone=off --kill-signal=SIGKILL --private-network",
    "  --drop-capability=all --no-new-privileges=yes --private-users=BASE:65536 --private-users-ownership=off",
    "  --hostname --chdir --rlimit=NOFILE=1024`), `--bind-ro` for each bind, and agentbox's own",
    "  `--system-call-filter` arguments (the allowed names nspawn's base list lacks, about 20, and the names to",
    "  remove from it, about 110), read from a live agentbox run. Not in the raw row: agentbox's `--setenv`s and",
    "  the `env -i` wrapper it starts the command through (one more exec in the container), and the",
    "  memory/pids cgroup agentbox puts nspawn in (the tier enforces limits in the caller's cgroup). nspawn wants",
    "  `/run/systemd/nspawn` on a tmpfs on a host without systemd, so the nspawn run is inside `unshare -m` with one.",
    f"- **docker**: a private `dockerd` started by the script (own data root, `--bridge=none --iptables=false",
    "  --userns-remap=` a system user created for the run); the raw row is the Docker CLI's `docker run --rm",
    f"  --network none --read-only --cap-drop ALL --security-opt no-new-privileges` with the same binds (read-only,",
    f"  non-recursive), `/tmp` tmpfs, limits and user on the same image agentbox imported (`{image}`, its skeleton).",
    "  The raw row keeps Docker's default seccomp profile; agentbox sends its own.",
    "",
    *(["## Failed runs", "", "A failed run aborts its hyperfine run; the table was then measured again from scratch. The errors:", "",
        *[f"- {l.strip()}" for l in open(f"{work}/failures")], ""] if os.path.exists(f"{work}/failures") else []),
    "## Tables",
    "",
    *tables,
    "## Where agentbox's time goes",
    "",
    f"`AGENTBOX_TIMING=1 agentbox run --tier T -- /bin/true`, median ms since start of each phase mark over {timing_runs} runs",
    "(the engine tiers' child, which builds the root and drives the engine, marks `engine: ...`; its time is",
    "between `released child` and `child reaped`).",
    "",
    *timing_table,
    "",
    "The same marks split into agentbox's three stretches (median ms):",
    "",
    *split,
    "",
    "Per-run helper commands of the oci and gvisor drivers, timed in the same hyperfine runs as above:",
    "",
    *helpers,
    f"- `nsenter --mount` (starts the agentbox crun rows back in the host's mount namespace): **{med('crun', 'helper: nsenter --mount (wraps the agentbox crun rows)'):.1f} ms**, included in those rows.",
    "",
    "What agentbox adds, by engine (from the code and the numbers above):",
    "",
    "- **oci (runc, crun)**: the child builds the root itself (as on the `ns` tier: tmpfs, binds, generated",
    "  /etc, read-only remount; /dev is left to the runtime, which mounts its own), translates the seccomp",
    "  allowlist (embedded already parsed at build time), writes config.json, runs the runtime (its path",
    "  resolved once) with a JSON log and a `--pid-file` (to pass signals on), waits for it on a pidfd (its",
    "  exit is seen at once), reads the OOM counter and removes the container's cgroups where its",
    "  `cgroupsPath` puts them (a stat per hierarchy; their shared empty parent stays, as Docker's does);",
    "  `delete --force` and a /proc scan run only when the runtime left state behind (a killed run). The",
    "  supervisor's `destroy` runs only when the child does not report that clean-up done. The marks",
    "  `oci: bundle written`, `oci: runtime exited`, `oci: cleaned up` frame the runtime's own run: everything",
    "  else in the row is agentbox's.",
    "- **crun** additionally: the child unmounts the empty cgroup2 in its mount namespace and mounts a private",
    "  tmpfs there, where crun's plain cgroup directories go and vanish with the namespace.",
    "- **gvisor**: runsc keeps its state files after a container that ran to its end; agentbox removes them",
    "  itself when no process of the container is left (no `runsc delete`).",
    "- **nspawn**: the supervisor makes the payload's cgroup (memory, pids) while the child builds the root; on",
    "  cgroup v1 the child then joins it itself (`0` into each leaf's `tasks`: no RCU grace period, unlike a write",
    "  of its pid to `cgroup.procs`, 8-16 ms; `engine: joined cgroup`) and the supervisor checks every leaf lists it",
    "  before it releases the child (`child joined cgroup`); then a tmpfs for",
    "  /run/systemd/nspawn, a look at the root for the command and `env`, the command started through `env -i`",
    "  with the sandbox's environment, and nspawn waited for on a pidfd (until 2026-11-27 a sleep loop",
    "  backing off to 20 ms, up to ~10 ms late). nspawn compiles every name of `--system-call-filter=` into one more",
    "  libseccomp rule per architecture: agentbox sends only the allowed names its base list lacks (the whole",
    "  allowlist, ~290 names, cost ~25 ms of nspawn's start).",
    "- **docker**: before each run the supervisor probes the daemon (`GET /version`, `GET /info`), the child",
    "  inspects the image, then create, attach, start, wait, inspect, remove; the supervisor's `destroy`",
    "  removes by name once more. The raw row is the Docker CLI, a Go binary that itself costs tens of ms.",
    "",
]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
