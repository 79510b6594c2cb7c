#!/usr/bin/env bash
# Persistent sandboxes: round trip of `agentbox exec ID -- /bin/true` into a running ns sandbox,
# against `nsenter` into the same namespaces (the floor: no confinement applied), in the same
# hyperfine run; and the idle memory of one sandbox (supervisor + init). Writes
# docs/benchmarks-exec.md (set OUT to write elsewhere). Run as root: sudo bench/exec.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-300}
OUT=${OUT:-docs/benchmarks-exec.md}
scripts/install-deps.sh
cargo build --release --quiet
BIN="target/$(rustc -vV | sed -n 's/^host: //p')/release/agentbox"

work=$(mktemp -d /tmp/bench-exec.XXXXXX)
id=$("$BIN" create)
trap '"$BIN" rm "$id" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
state="/run/agentbox/$id/state.json"
init=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['init'])" "$state")
supervisor=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['supervisor'])" "$state")

hyperfine --shell=none --warmup 30 --runs "$RUNS" --export-json "$work/exec.json" \
    -n "agentbox exec" "$BIN exec $id -- /bin/true" \
    -n "nsenter -a (floor)" "nsenter -t $init -a /bin/true" \
    >"$work/hyperfine.txt"

mem() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/$3"; }
{
    echo "supervisor $(mem "$supervisor" VmRSS status) $(mem "$supervisor" Pss smaps_rollup)"
    echo "init $(mem "$init" VmRSS status) $(mem "$init" Pss smaps_rollup)"
} >"$work/memory.txt"

python3 - "$work/exec.json" "$work/memory.txt" "$OUT" "$RUNS" <<'PY'
import json, sys, datetime, platform
results = json.load(open(sys.argv[1]))["results"]
memory = [line.split() for line in open(sys.argv[2])]
out, runs = sys.argv[3], sys.argv[4]
def pct(r, q):
    times = sorted(r["times"])
    return times[min(len(times) - 1, int(q * len(times)))] * 1000
rows = [f"| {r['command']} | {r['median']*1000:.2f} | {pct(r, 0.99):.2f} | {r['mean']*1000:.2f} ± {r['stddev']*1000:.2f} |" for r in results]
ax, ns = results[0]["median"], results[1]["median"]
pss = sum(int(m[2]) for m in memory)
lines = [
    "# Benchmarks: persistent sandboxes",
    "",
    f"`agentbox exec` into a running `ns` sandbox against `nsenter -a` into the same namespaces, in one",
    f"hyperfine run ({runs} runs each; `sudo bench/exec.sh`, {datetime.date.today()}, kernel {platform.release()}).",
    "`nsenter` applies no confinement; every `agentbox exec` applies the sandbox's Landlock rules,",
    "seccomp program, capabilities and no_new_privs to the new command.",
    "",
    "| command | p50 ms | p99 ms | mean ± σ ms |",
    "|---|---|---|---|",
    *rows,
    "",
    f"- agentbox exec / nsenter (p50): **{ax/ns:.2f}×**; target p50 ≤ 2 ms: **{ax*1000:.2f} ms**",
    "",
    "## Idle memory of one sandbox",
    "",
    "| process | RSS KiB | PSS KiB |",
    "|---|---|---|",
    *[f"| {p} | {rss} | {pss_} |" for p, rss, pss_ in memory],
    "",
    f"Supervisor + init PSS: **{pss} KiB** (target ≤ 2048 KiB).",
    "",
]
open(out, "w").write("\n".join(lines))
print("\n".join(lines))
PY
