#!/bin/sh
# Registry benchmark: commit latency (propose + 2-of-3 approvals + append +
# fdatasync) against the floor of appending the same line with fdatasync,
# and whole-chain verification against the floor of BLAKE3 plus two Ed25519
# verifications per version. Medians of >= 5 runs.
# Usage: bench/registry.sh [build/release] [dir]
# (writes bench/results/registry.md; dir holds the log, default /tmp)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
dir=${2:-/tmp}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_registry"
if [ ! -x "$bin" ]; then
    echo "bench/registry.sh: $bin not found (run: make release)" >&2
    exit 1
fi
out="$root/bench/results/registry.md"
mkdir -p "$(dirname "$out")"
{
    echo "## Registry (svc-registry: M-of-N commits and chain verification)"
    echo
    echo "\`bench/registry.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "log on $(df -T "$dir" | awk 'NR==2 {print $2}') ($dir). Blueprint SLO: commit < 750 ms."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    "$bin" "${RUNS:-5}" "$dir" "${VERSIONS:-200}"
    echo
    echo "The commit column also pays for making the two approvals (the signers' work, in the same"
    echo "loop), four signature checks (two at approve, two again at commit: the verifier's own rule),"
    echo "the canonical encoding and the bookkeeping. Verification also parses and re-encodes every"
    echo "line to prove it canonical, which the floor does not."
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: figures are provisional)."
} > "$out"
cat "$out"
