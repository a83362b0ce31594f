#!/bin/sh
# bench/net_miss.sh BUILD_DIR - GET of an address nobody has on a 5-node
# loopback cluster: time to the 404 through the gateway (a fresh address: one
# DHT lookup; the same again: the storage's "no provider" memory) and with
# `ron get` (process start included); medians of RUNS (default 5) clusters of
# MISSES (default 10) misses each. Prints a markdown section and writes it to
# bench/results/net_miss.md.
set -eu
BUILD=${1:-build/release}
RUNS=${RUNS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/net_miss.md"
[ -x "$BUILD/ron" ] || { echo "net_miss.sh: $BUILD/ron not built" >&2; exit 2; }
mkdir -p "$HERE/results"
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
col() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$TMP" | median; }
python3 "$HERE/net_miss.py" "$BUILD" "$RUNS" >"$TMP"
{
    echo "## GET of an address nobody has (5 nodes on loopback)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); release build; 5 \`ron node\` processes"
    echo "(default services; nodes 1-4 seeded with node 0), every DHT knowing the other 4 nodes;"
    echo "medians over $RUNS clusters of the per-cluster medians of ${MISSES:-10} misses. Load average"
    echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end. Provisional: measured on a machine shared with"
    echo "other builds and tests."
    echo
    echo "| request | time to the 404, ms |"
    echo "|---|---:|"
    echo "| gateway GET /o/ of a fresh absent address (one DHT lookup) | $(col fresh_ms) |"
    echo "| the same address again within 2 s (storage's miss memory, no lookup) | $(col again_ms) |"
    echo "| \`ron get\` of a fresh absent address (client process start included) | $(col cli_ms) |"
    echo
    echo "Per cluster: $(sed 's/run=[0-9]* //' "$TMP" | tr '\n' ';' | sed 's/;$//; s/;/; /g')."
    echo
    echo 'A miss costs one find_providers lookup (5 s deadline): no provider found answers 404 at'
    echo 'once and is remembered for 2 s (at most 256 addresses); a failed lookup is 503/504,'
    echo 'retryable (docs/protocol/storage.md, "Fetch on miss"). Before this change a miss made up to'
    echo '4 lookups 400 ms apart: bench/net_miss.py against a release build of bc13b73 (2026-11-26,'
    echo 'same machine, load 10-15, MISSES=5, 5 clusters) gave 1,241 ms for a fresh gateway miss'
    echo '(per cluster 1,222-1,332), 1,263 ms for the same address again and 1,300 ms for `ron get`.'
    echo
    echo "Command: \`bench/net_miss.sh build/release\` (RUNS=$RUNS)."
} >"$OUT"
cat "$OUT"
