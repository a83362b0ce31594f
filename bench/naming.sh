#!/bin/sh
# Naming and name-index benchmark: normalization, record verification against
# raw Ed25519, resolve and publish on the RAM and LMDB backends (the durable
# publish against a pwrite + fdatasync floor in the same directory), medians
# of >= 5 runs. Usage: bench/naming.sh [build/release] [dir]
# (writes bench/results/naming.md; dir holds the LMDB files, default /tmp)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
dir=${2:-/tmp}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_naming"
if [ ! -x "$bin" ]; then
    echo "bench/naming.sh: $bin not found (run: make release)" >&2
    exit 1
fi
out="$root/bench/results/naming.md"
mkdir -p "$(dirname "$out")"
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c 1"; fi
{
    echo "## Names and the name index"
    echo
    echo "\`bench/naming.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "LMDB files on $(df -T "$dir" | awk 'NR==2 {print $2}') ($dir)."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    $pin "$bin" "${RUNS:-7}" "$dir"
    echo
    echo "An LMDB commit syncs twice (data pages, then the meta page), so a durable"
    echo "publish costs about two fdatasyncs: 0.5x of the one-sync floor is its ceiling."
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: compare ratios)."
} > "$out"
cat "$out"
