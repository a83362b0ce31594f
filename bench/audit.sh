#!/bin/sh
# Audit append benchmark: records/s into the ron-audit file sink (hash
# chain, batched fdatasync, signed checkpoints every 1000 records) against the
# floor a user would otherwise get, the same bytes written through a 64 KiB
# buffer with one fdatasync every 10 ms; plus append -> durable-ack latency.
# Medians of >= 5 runs. Usage: bench/audit.sh [build/release] [dir]
# (writes bench/results/audit.md; dir holds the files, default /tmp)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
dir=${2:-/tmp}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/src/ron-audit/bench_audit"
if [ ! -x "$bin" ]; then
    echo "bench/audit.sh: $bin not found (run: make release)" >&2
    exit 1
fi
out="$root/bench/results/audit.md"
mkdir -p "$(dirname "$out")"
{
    echo "## Audit log append (ron-audit file sink)"
    echo
    echo "\`bench/audit.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "files on $(df -T "$dir" | awk 'NR==2 {print $2}') ($dir). Goal: >= 100,000 records/s, durable batches <= 10 ms."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    "$bin" "${RUNS:-7}" "$dir" "${RECORDS:-200000}"
    echo
    echo "One thread appends as fast as it can; each record is serialized, BLAKE3-chained and queued"
    echo "on that thread, and the writer thread syncs a batch at most 10 ms after its first record."
    echo "The floor does no encoding or hashing, so the ratio is the price of the chain."
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: figures are provisional)."
} > "$out"
cat "$out"
