#!/bin/sh
# OAP/1 codec benchmark: frames/s for control frames and GB/s for 64 KiB data
# frames, encode and decode, medians of >= 5 runs, memcpy of the same bytes as
# the anchor. Usage: bench/oap.sh [build/release]  (writes bench/results/oap.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_oap"
if [ ! -x "$bin" ]; then
    echo "bench/oap.sh: $bin not found (run: make release)" >&2
    exit 1
fi
out="$root/bench/results/oap.md"
mkdir -p "$(dirname "$out")"
# One core is enough: the codec is single-threaded. Pin it when taskset exists.
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c 1"; fi
{
    echo "## OAP/1 codec"
    echo
    echo "\`bench/oap.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    $pin "$bin" "${RUNS:-7}"
} > "$out"
cat "$out"
