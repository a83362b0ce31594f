#!/bin/sh
# bench/net_ab.sh BASE_BUILD BUILD - issue 4's five-node target (GET of a
# fresh 1 MiB object held only by another node, p95 <= 20 ms) for two builds
# run alternately, so both see the same load on a shared machine: each run is
# `bench/net.py <ron> 16 1 GETS` (the two-node part with 16 MiB, then five
# macronodes and GETS fresh 1 MiB GETs), BASE first, then BUILD, N times.
# Prints a markdown section: every run's p50 / p95 / max with the load
# average at its start, and the medians of the runs' p50 and p95.
# A run that stops (bench/net.py stops on a GET answered 404: a fresh address
# whose provider record was not found yet) is listed as failed, not counted.
# Usage: bench/net_ab.sh BASE_BUILD BUILD   Env: N (5), GETS (40).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(cd "${1:?usage: bench/net_ab.sh BASE_BUILD BUILD}" && pwd)
new=$(cd "${2:?usage: bench/net_ab.sh BASE_BUILD BUILD}" && pwd)
for b in "$base" "$new"; do
    [ -x "$b/ron" ] || { echo "bench/net_ab.sh: $b/ron not found" >&2; exit 1; }
done
N=${N:-5} GETS=${GETS:-40} BASE=$base NEW=$new ROOT=$root python3 - <<'PY'
import os, statistics, subprocess

N, GETS = int(os.environ["N"]), int(os.environ["GETS"])
builds = [("base", os.environ["BASE"]), ("new", os.environ["NEW"])]
rows, res = [], {"base": [], "new": []}
for i in range(N):
    for name, b in builds:
        load = open("/proc/loadavg").read().split()[0]
        p = subprocess.run(["python3", os.path.join(os.environ["ROOT"], "bench", "net.py"),
                            os.path.join(b, "ron"), "16", "1", str(GETS)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
        out = p.stdout.decode().splitlines()
        fig = None
        for k, line in enumerate(out):
            if line.startswith("|---:|---:|---:|---:|") and k + 1 < len(out):
                c = [x.strip() for x in out[k + 1].strip("|").split("|")]
                fig = (float(c[0]), float(c[1]), float(c[2]))
        if p.returncode != 0 or fig is None:
            err = p.stderr.decode().strip().splitlines()
            rows.append("| %d | %s | %s | failed: %s | | |" % (i + 1, name, load,
                        (err[-1] if err else "exit %d" % p.returncode)[:120].replace("|", "/")))
            continue
        res[name].append(fig)
        rows.append("| %d | %s | %s | %.1f | %.1f | %.1f |" % ((i + 1, name, load) + fig))
print("| run | build | load (1 min) | p50 ms | p95 ms | max ms |")
print("|---:|---|---:|---:|---:|---:|")
for r in rows:
    print(r)
print()
print("| build | runs | median p50 ms | median p95 ms | target p95 |")
print("|---|---:|---:|---:|---:|")
for name, b in builds:
    f = res[name]
    if f:
        print("| %s (%s) | %d | %.1f | %.1f | <= 20 ms |" % (
            name, b, len(f), statistics.median(x[0] for x in f), statistics.median(x[1] for x in f)))
    else:
        print("| %s (%s) | 0 | | | <= 20 ms |" % (name, b))
PY
