#!/bin/sh
# End-to-end network benchmark (issue 4 targets) with real `ron node`
# processes on loopback (bench/net.py): a 1 GiB object held only by one
# micronode fetched by another into its RAM store (DHT lookup, mutual-TLS
# overlay transfer, every piece verified), both without delivery (`ron pin`:
# the issue 4 target) and with delivery to `ron get`, medians of >= 5 runs
# with a fresh fetching node each, CPU seconds of both nodes; and five macronodes, GETs of
# fresh 1 MiB objects held by another node, p50/p95. Against the tools a user
# would otherwise use: the single-stream transfer is set beside
# bench/overlay.sh's curl+b3sum figure (bench/results/overlay.md).
# Usage: bench/net.sh [build/release]  (writes bench/results/net.md)
# Env: MIB (1024), RUNS (5), GETS (40; 0: the two-node figures only).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
[ -x "$build/ron" ] || { echo "bench/net.sh: $build/ron not found (run: make release)" >&2; exit 1; }
out="$root/bench/results/net.md"
mkdir -p "$(dirname "$out")"
load=$(cut -d' ' -f1-3 /proc/loadavg)
body=$(python3 "$root/bench/net.py" "$build/ron" "${MIB:-1024}" "${RUNS:-5}" "${GETS:-40}")
{
    echo "## Network end to end: fetch on miss across real nodes (provisional)"
    echo
    echo "\`bench/net.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build."
    echo "Load average at the start: $load. Provisional: the machine was shared with other"
    echo "engineers' builds, tests and simulations while this ran."
    echo
    echo "$body"
} > "$out"
cat "$out"
