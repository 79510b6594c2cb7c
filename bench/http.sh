#!/usr/bin/env bash
# The HTTP API: create → first exec (/bin/true) → delete, ITER times (default 200), p50 and p99 of
# each step and of the whole, against `agentbox serve` on 127.0.0.1. Writes docs/benchmarks-http.md
# (set OUT to write elsewhere). Run as root: sudo bench/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ITER=${ITER:-200}
LOAD_S=${LOAD_S:-60}
OUT=${OUT:-docs/benchmarks-http.md}
scripts/install-deps.sh
cargo build --release --quiet
BIN="$(pwd)/target/$(rustc -vV | sed -n 's/^host: //p')/release/agentbox"

work=$(mktemp -d /tmp/bench-http.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token="bench-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$work/server.toml" <<TOML
listen = "127.0.0.1:$port"
agentbox = "$BIN"
[[tokens]]
token = "$token"
tenant = "bench"
max_sandboxes = 32
max_memory = 68719476736
TOML
"$BIN" serve --config "$work/server.toml" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - "$port" "$token" "$ITER" "$OUT" "$LOAD_S" <<'PY'
import json, sys, time, urllib.request, datetime, platform, threading, random
port, token, iters, out, load_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
base = f"http://127.0.0.1:{port}"
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.read()
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/health"); break
    except Exception:
        time.sleep(0.05)
steps = {"create": [], "exec": [], "delete": [], "total": []}
for _ in range(iters):
    t0 = time.perf_counter()
    sid = json.loads(call("POST", "/v1/sandboxes", {}))["id"]
    t1 = time.perf_counter()
    res = json.loads(call("POST", f"/v1/sandboxes/{sid}/exec", {"command": ["/bin/true"]}))
    assert res["exit_code"] == 0, res
    t2 = time.perf_counter()
    call("DELETE", f"/v1/sandboxes/{sid}")
    t3 = time.perf_counter()
    for k, v in (("create", t1 - t0), ("exec", t2 - t1), ("delete", t3 - t2), ("total", t3 - t0)):
        steps[k].append(v * 1000)
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
lines = ["# Benchmarks: the HTTP API", "",
         f"create → first exec (`/bin/true`) → delete through `agentbox serve` on loopback, {iters} iterations",
         f"(`sudo bench/http.sh`, {datetime.date.today()}, kernel {platform.release()}).", "",
         "| step | p50 ms | p99 ms |", "|---|---|---|"]
lines += [f"| {k} | {pct(v, .5):.2f} | {pct(v, .99):.2f} |" for k, v in steps.items()]
# Load: 50 concurrent clients running exec over 20 sandboxes for load_s seconds.
boxes = []
try:
    for _ in range(20):
        boxes.append(json.loads(call("POST", "/v1/sandboxes", {}))["id"])
except Exception:
    for sid in boxes:
        call("DELETE", f"/v1/sandboxes/{sid}")
    raise
latencies, errors, lock = [], [0], threading.Lock()
deadline = time.perf_counter() + load_s
def client():
    while time.perf_counter() < deadline:
        sid = random.choice(boxes)
        t = time.perf_counter()
        try:
            res = json.loads(call("POST", f"/v1/sandboxes/{sid}/exec", {"command": ["/bin/true"]}))
            ok = res["exit_code"] == 0
        except Exception:
            ok = False
        with lock:
            latencies.append((time.perf_counter() - t) * 1000)
            errors[0] += not ok
threads = [threading.Thread(target=client) for _ in range(50)]
started = time.perf_counter()
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - started
for sid in boxes:
    call("DELETE", f"/v1/sandboxes/{sid}")
lines += ["", f"## Load: 50 concurrent exec clients over 20 sandboxes for {load_s:.0f} s", "",
          f"- requests: {len(latencies)}, errors: **{errors[0]}**",
          f"- throughput: **{len(latencies) / elapsed:.0f} exec/s** (2 CPUs)",
          f"- latency p50 {pct(latencies, .5):.1f} ms, p99 **{pct(latencies, .99):.1f} ms**"]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
