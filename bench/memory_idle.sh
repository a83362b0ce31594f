#!/bin/sh
# bench/memory_idle.sh BUILD_DIR - anonymous RSS (RssAnon) of an idle node of
# each content-plane profile on a release build, medians of RUNS (default 5)
# runs: a micronode (one process, amnesia) and a macronode (kernel + one
# child per service) with the services storage,index,gateway (and app when
# built in), summed over their processes, 3 s after all are healthy.
# Goals (issue 3): idle micronode <= 32 MiB; idle macronode <= 128 MiB.
# Prints a markdown section and writes it to bench/results/memory_idle.md.
set -eu
BUILD=${1:-build/release}
RUNS=${RUNS:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/memory_idle.md"
[ -x "$BUILD/ron" ] || { echo "memory_idle.sh: $BUILD/ron not built" >&2; exit 2; }
mkdir -p "$HERE/results"
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# median RssAnon of one process name across the runs of a profile
part() { grep "profile=$1 " "$TMP" | field detail | tr ',' '\n' | sed -n "s/^$2://p" | median; }

python3 "$HERE/memory_idle.py" "$BUILD" "$RUNS" > "$TMP"
micro=$(grep "profile=micro " "$TMP" | field total_kib | median)
macro=$(grep "profile=macro " "$TMP" | field total_kib | median)
microtls=$(grep "profile=micro+https " "$TMP" | field total_kib | median)
v_micro=$(grep "profile=micro " "$TMP" | field vmrss_kib | median)
v_macro=$(grep "profile=macro " "$TMP" | field vmrss_kib | median)
v_microtls=$(grep "profile=micro+https " "$TMP" | field vmrss_kib | median)
services=$(head -1 "$TMP" | field services)
mdetail=""
for p in kernel $(echo "$services" | tr ',' ' '); do
    v=$(part macro "$p")
    [ -n "$v" ] && mdetail="$mdetail${mdetail:+ + }$p $(mib "$v")"
done
{
    echo "## Idle memory of the profiles (RssAnon)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); release build; anonymous RSS from"
    echo "/proc/PID/status summed over the node's processes, 3 s after every service is healthy;"
    echo "medians of $RUNS runs; services $services; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "at the end. Provisional: measured on a machine shared with other builds and tests."
    echo
    echo "| profile | RssAnon | goal | ratio to goal | VmRSS (all resident, incl. shared libraries and LMDB maps) |"
    echo "|---|---:|---:|---:|---:|"
    echo "| micronode, one process, amnesia (empty RAM store) | $(mib "$micro") MiB | 32 MiB | $(awk -v a="$micro" 'BEGIN {printf "%.2f", a / 32768}')× | $(mib "$v_micro") MiB |"
    echo "| micronode with --https (RAM certificate, secure heap) | $(mib "$microtls") MiB | 32 MiB | $(awk -v a="$microtls" 'BEGIN {printf "%.2f", a / 32768}')× | $(mib "$v_microtls") MiB |"
    echo "| macronode, kernel + children, persistent data dir | $(mib "$macro") MiB ($mdetail) | 128 MiB | $(awk -v a="$macro" 'BEGIN {printf "%.2f", a / 131072}')× | $(mib "$v_macro") MiB |"
    echo
    echo "Command: \`bench/memory_idle.sh build/release\` (RUNS=$RUNS)."
} > "$OUT"
cat "$OUT"
