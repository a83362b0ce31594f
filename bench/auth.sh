#!/bin/sh
# Capability verification benchmark: verifications per second of distinct
# 5-caveat tokens on one core, ron-auth's verifier (no cache, and cache hits)
# against libmacaroons' own verifier on the same tokens (issue 5 target:
# >= 100,000/s without the cache); medians of >= 5 runs.
# Usage: bench/auth.sh [build/release]   (writes bench/results/auth.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_auth"
if [ ! -x "$bin" ]; then
    echo "bench/auth.sh: $bin not found (run: make release)" >&2
    exit 1
fi
runs=${RUNS:-7}
if [ "$runs" -lt 5 ]; then
    echo "bench/auth.sh: RUNS must be at least 5" >&2
    exit 2
fi
out="$root/bench/results/auth.md"
mkdir -p "$(dirname "$out")"
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c 1"; fi
{
    echo "## Capability verification"
    echo
    echo "\`bench/auth.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "one thread pinned to one core. Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Each figure is the median of $runs runs. Tokens are minted with libmacaroons"
    echo "(v1, caveats ops, tenant, expires, max-bytes, prefix); every verification"
    echo "checks a put request against them. The libmacaroons rows use a general"
    echo "caveat checker that parses our caveats, so both sides do the same work."
    echo
    $pin "$bin" "$runs"
    echo
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Provisional: a shared"
    echo "machine (2 cores, 7 engineers building); compare the ratio, not the absolute figures."
} > "$out"
cat "$out"
