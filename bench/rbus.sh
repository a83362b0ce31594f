#!/bin/sh
# bench/rbus.sh BUILD_DIR - ron-bus request/response over Unix sockets between
# two processes pinned to different cores; small (32-byte) requests with 1 and
# 32 in flight; medians of RUNS (default 5) runs, compared with a hand-written
# blocking socketpair echo of the same frame sizes ("raw", the floor), and the
# same service on the in-process transport (micronode).
# Prints a markdown section and writes it to bench/results/rbus.md.
set -eu
BUILD=${1:-build/release}
RUNS=${RUNS:-5}
REQS=${REQS:-100000}
BIN="$BUILD/bench_rbus"
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/rbus.md"
[ -x "$BIN" ] || { echo "rbus.sh: $BIN not built (ninja -C $BUILD bench_rbus)" >&2; exit 2; }
mkdir -p "$HERE/results"
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

# Runs interleave the modes, so a burst of load from other users of the
# machine lands on all of them rather than on one.
i=0
while [ $i -lt "$RUNS" ]; do
    for w in 1 32; do
        for mode in bus raw inproc; do
            "$BIN" --mode $mode --window $w --requests "$REQS" >> "$TMP/$mode.$w"
        done
    done
    i=$((i + 1))
done
for mode in bus raw inproc; do
    for w in 1 32; do
        for f in rps p50_us p99_us; do
            field $f < "$TMP/$mode.$w" | median > "$TMP/$mode.$w.$f"
        done
    done
done

v() { cat "$TMP/$1.$2.$3"; }
{
    echo "## ron-bus request/response (Unix sockets, two processes)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); release build; client and server pinned to"
    echo "cores 0 and 1; 32-byte requests echoed (70-byte OAP/1 frames); medians of $RUNS runs of"
    echo "$REQS requests (after 10 % warm-up). \"raw\" is a blocking socketpair echo of the same"
    echo "frame sizes with no framing or event loop: the floor a hand-written IPC would reach."
    echo "1-minute load average $LOAD0 at the start, $(cut -d' ' -f1 /proc/loadavg) at the end."
    echo
    echo "| in flight | ron-bus req/s | p50 µs | p99 µs | raw req/s | raw p50 µs | raw p99 µs | ron-bus / raw |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in 1 32; do
        ratio=$(awk -v a="$(v bus $w rps)" -v b="$(v raw $w rps)" 'BEGIN {printf "%.2f", a / b}')
        echo "| $w | $(v bus $w rps) | $(v bus $w p50_us) | $(v bus $w p99_us) | $(v raw $w rps) | $(v raw $w p50_us) | $(v raw $w p99_us) | ${ratio}× |"
    done
    echo
    echo "The same service code on micronode's in-process transport (both endpoints on one loop, one"
    echo "core, no sockets; one copy of each frame):"
    echo
    echo "| in flight | in-process req/s | p50 µs | p99 µs | in-process / Unix sockets |"
    echo "|---:|---:|---:|---:|---:|"
    for w in 1 32; do
        ratio=$(awk -v a="$(v inproc $w rps)" -v b="$(v bus $w rps)" 'BEGIN {printf "%.1f", a / b}')
        echo "| $w | $(v inproc $w rps) | $(v inproc $w p50_us) | $(v inproc $w p99_us) | ${ratio}× |"
    done
    echo
    echo "Command: \`bench/rbus.sh $BUILD\` (RUNS=$RUNS REQS=$REQS)."
} | tee "$OUT"
