#!/bin/sh
# Policy evaluation benchmark: latency percentiles and evaluations per second
# of pol_eval with 1,000 rules and the matching rule last (issue 5 target:
# p95 < 1 ms), against a naive linear scan with strcmp in the same run;
# medians of >= 5 runs. Usage: bench/policy.sh [build/release]
# (writes bench/results/policy.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_policy"
if [ ! -x "$bin" ]; then
    echo "bench/policy.sh: $bin not found (run: make release)" >&2
    exit 1
fi
runs=${RUNS:-7}
if [ "$runs" -lt 5 ]; then
    echo "bench/policy.sh: RUNS must be at least 5" >&2
    exit 2
fi
out="$root/bench/results/policy.md"
mkdir -p "$(dirname "$out")"
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c 1"; fi
{
    echo "## Policy evaluation"
    echo
    echo "\`bench/policy.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Each figure is the median of $runs runs. A run times 20,000 single evaluations"
    echo "(percentiles; each timing includes one clock read, tens of ns) and then 20"
    echo "batches of 1,000 back to back (evaluations/s: the median batch)."
    echo
    $pin "$bin" "$runs"
    echo
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Provisional: a shared"
    echo "machine (2 cores, 5 engineers building); compare the ratio, not the absolute figures."
} > "$out"
cat "$out"
