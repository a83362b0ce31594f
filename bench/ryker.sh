#!/bin/sh
# ryker mailbox benchmark: messages/s through send/recv for 1 thread, 1:1 and
# 4:1 producer/consumer threads, with and without a metrics registry, against
# a bare mutex ring. Medians of >= 5 runs.
# Usage: bench/ryker.sh [build/release]  (writes bench/results/ryker.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_ryker"
if [ ! -x "$bin" ]; then
    echo "bench/ryker.sh: $bin not found (run: make release)" >&2
    exit 1
fi
out="$root/bench/results/ryker.md"
mkdir -p "$(dirname "$out")"
{
    echo "## ryker mailboxes"
    echo
    echo "\`bench/ryker.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Threads are not pinned: producers and the consumer share the machine's cores."
    echo
    "$bin" "${RUNS:-7}"
} > "$out"
cat "$out"
