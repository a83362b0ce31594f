#!/bin/sh
# Assemble BENCHMARKS.md from bench/results/*.md (one section per area).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/BENCHMARKS.md"
{
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` (bench/run-all.sh). Release builds, medians of >= 5 runs,"
    echo "ratios against the tool a user would otherwise pick, measured on the same machine in"
    echo "the same run. These machines are shared and noisy: compare ratios, not absolute figures."
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)."
    for f in "$root"/bench/results/*.md; do
        [ -f "$f" ] || continue
        echo
        cat "$f"
    done
} > "$out"
echo "bench: wrote $out" >&2
