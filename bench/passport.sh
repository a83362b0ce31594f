#!/bin/sh
# Passport login benchmark: server-side logins per second on one core
# (challenge issue + redeem: Ed25519 sign, Ed25519 verify, policy per op over
# a 1,000-rule bundle, libmacaroons mint) against the same crypto done bare;
# medians of >= 5 runs.
# Usage: bench/passport.sh [build/release]   (writes bench/results/passport.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_passport"
if [ ! -x "$bin" ]; then
    echo "bench/passport.sh: $bin not found (run: make release)" >&2
    exit 1
fi
runs=${RUNS:-7}
if [ "$runs" -lt 5 ]; then
    echo "bench/passport.sh: RUNS must be at least 5" >&2
    exit 2
fi
out="$root/bench/results/passport.md"
mkdir -p "$(dirname "$out")"
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c 1"; fi
{
    echo "## Passport logins"
    echo
    echo "\`bench/passport.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "one thread pinned to one core. Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Each figure is the median of $runs runs of 2,000 logins. The client's signature"
    echo "is made outside the timing; a login asks get and put, the policy's matching rule"
    echo "is its last of 1,000. The floor row does the same crypto bare (no challenge set,"
    echo "no policy, no JSON): the ratio is what the passport costs on top of it."
    echo
    $pin "$bin" "$runs"
    echo
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Provisional: a shared"
    echo "machine (2 cores, 7 engineers building); compare the ratio, not the absolute figures."
} > "$out"
cat "$out"
