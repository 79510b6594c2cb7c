#!/usr/bin/env python3
"""Paired, interleaved timing of agentbox against a raw engine.

hyperfine times each command in a block of its own, so a change in the host's load between two
blocks (other work shares this host) moves one row and not the other: the ratio of two medians
then drifts by more than the 10 % target it is read against. Here every round runs each command of
a pair once, back to back, in alternating order, and the ratio is taken per round; the headline is
the median of those ratios with a bootstrap 95 % interval.

Every command is started the same way (posix_spawn, stdio to /dev/null, waited for) and timed by
the process that started it. A command that must run in a prepared mount namespace (raw crun on a
hybrid cgroup host, raw systemd-nspawn without systemd) is started by a helper living there,
which times it the same way: no wrapper binary is timed with any row.

    paired.py ROUNDS OUT.json SPEC.json

SPEC: {"pairs": [{"name": ..., "agentbox": [argv...], "raw": [argv...], "raw_setup": "shell"}]}
(`raw_setup`, optional: shell commands run once in a fresh mount namespace before its helper).
Writes {"name": {"agentbox": [s...], "raw": [s...]}} and prints one summary line per pair.
"""

import json
import os
import random
import statistics
import subprocess
import sys
import time


def timed(argv):
    """Seconds from spawn to reaped, failing loudly on a non-zero exit."""
    with open(os.devnull, "wb") as null:
        start = time.perf_counter()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, null.fileno(), 1), (os.POSIX_SPAWN_DUP2, null.fileno(), 2)])
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv!r} exited {os.waitstatus_to_exitcode(status)}")
    return elapsed


def serve():
    """Helper mode: one JSON argv per line in, its time per line out."""
    for line in sys.stdin:
        print(timed(json.loads(line)), flush=True)


class Helper:
    def __init__(self, setup):
        script = f"{setup} && exec {sys.executable} {os.path.abspath(__file__)} serve"
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def timed(self, argv):
        self.proc.stdin.write(json.dumps(argv) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the helper for {argv!r} ended")
        return float(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def bootstrap_ci(ratios, rounds=2000):
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def main():
    if sys.argv[1:] == ["serve"]:
        return serve()
    rounds, out, spec = int(sys.argv[1]), sys.argv[2], json.load(open(sys.argv[3]))
    results = {}
    for pair in spec["pairs"]:
        helper = Helper(pair["raw_setup"]) if pair.get("raw_setup") else None
        run_raw = helper.timed if helper else timed
        a, b = [], []
        for i in range(3):  # warm-up, untimed
            timed(pair["agentbox"]), run_raw(pair["raw"])
        for i in range(rounds):
            if i % 2:
                b.append(run_raw(pair["raw"])), a.append(timed(pair["agentbox"]))
            else:
                a.append(timed(pair["agentbox"])), b.append(run_raw(pair["raw"]))
        if helper:
            helper.close()
        ratios = [x / y for x, y in zip(a, b)]
        lo, hi = bootstrap_ci(ratios)
        results[pair["name"]] = {"agentbox": a, "raw": b, "ratio_median": statistics.median(ratios),
                                 "ratio_ci95": [lo, hi]}
        print(f"{pair['name']}: agentbox {statistics.median(a) * 1000:.1f} ms, raw "
              f"{statistics.median(b) * 1000:.1f} ms, per-round ratio {statistics.median(ratios):.2f}x "
              f"[{lo:.2f}, {hi:.2f}]", file=sys.stderr)
    json.dump(results, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
