#!/bin/sh
# bench/memory.sh BUILD_DIR - anonymous RSS (RssAnon) of release builds: an
# idle node (kernel + echo child) and the kernel while its admin port holds
# 2,000 slow connections; medians of RUNS (default 5) runs.
# Goals (issue 2): idle <= 20 MiB in total; 2,000 slow connections <= 64 MiB.
# Prints a markdown section and writes it to bench/results/memory.md.
set -eu
BUILD=${1:-build/release}
RUNS=${RUNS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/memory.md"
[ -x "$BUILD/ron" ] || { echo "memory.sh: $BUILD/ron not built" >&2; exit 2; }
mkdir -p "$HERE/results"
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

python3 "$HERE/memory.py" "$BUILD" "$RUNS" > "$TMP"
idle=$(field idle_kib < "$TMP" | median)
kern=$(field kernel_kib < "$TMP" | median)
child=$(field child_kib < "$TMP" | median)
slow=$(field slow_kib < "$TMP" | median)
held=$(field held < "$TMP" | median)
{
    echo "## Memory (RssAnon)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); release build; anonymous RSS from"
    echo "/proc/PID/status; medians of $RUNS runs; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
    echo
    echo "| case | RssAnon | goal | ratio to goal |"
    echo "|---|---:|---:|---:|"
    echo "| idle node: kernel + echo child, 3 s after healthy | $(mib "$idle") MiB ($(mib "$kern") + $(mib "$child")) | 20 MiB | $(awk -v a="$idle" 'BEGIN {printf "%.2f", a / 20480}')× |"
    echo "| kernel, admin port holding 2,000 slow connections ($held held) | $(mib "$slow") MiB | 64 MiB | $(awk -v a="$slow" 'BEGIN {printf "%.2f", a / 65536}')× |"
    echo
    echo "Command: \`bench/memory.sh build/release\` (RUNS=$RUNS)."
} > "$OUT"
cat "$OUT"
