#!/bin/sh
# Ingest through the app port, same machine, same run (issue 3 goals):
#  1. macronode: `ron put` of 1 GiB (client -> app service -> storage service,
#     durable) against the disk floor `dd if=<same file> of=<data dir>/x
#     bs=1M conv=fsync`;
#  2. micronode (amnesia, RAM store): `ron put` of the same file against
#     `b3sum --num-threads 1` on it;
#  3. 1 MiB get latency p50/p95 through libron (bench_libron: one client, one
#     connection, whole-object verified gets) and through `ron get` (a new
#     process per get), on the macronode.
# Medians of >= 5 interleaved runs; the source file is in the page cache.
# Capabilities (issue 5): every `ron put`, `ron get` and bench_libron request
# carries the node's operator capability (RON_CAP: <data-dir>/operator.cap on
# the macronode, the `operator capability:` line on the micronode's stderr in
# amnesia); puts need it, and a capability bearer's gets are not held to the
# shipped policy's anonymous rate (100/s per source), which the 250 gets of a
# run from 127.0.0.1 would otherwise exceed.
# Usage: bench/ingest.sh [build/release]  (writes bench/results/ingest.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
ron="$build/ron"
bl="$build/bench_libron"
for b in "$ron" "$bl"; do
    [ -x "$b" ] || { echo "bench/ingest.sh: $b not found (run: make release)" >&2; exit 1; }
done
out="$root/bench/results/ingest.md"
mkdir -p "$(dirname "$out")"
runs=${RUNS:-5}
mib=${INGEST_MIB:-1024}
nlat=${LAT_N:-200}
# the data dir must be on the disk under test, not tmpfs
tmp=$(mktemp -d "${INGEST_BENCH_DIR:-$root/build}/ron-bench-ingest.XXXXXX")
node_pid=""
stop_node() {
    if [ -n "$node_pid" ]; then
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
        node_pid=""
    fi
}
trap 'stop_node; rm -rf "$tmp"' EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# node_cap PROFILE DATA: the node's operator capability, exported as RON_CAP
# (waits, bounded, for operator.cap or the amnesia stderr line)
node_cap() {
    w=0
    RON_CAP=
    while [ -z "$RON_CAP" ]; do
        if [ -s "$2/operator.cap" ]; then
            RON_CAP=$(cat "$2/operator.cap")
        else
            RON_CAP=$(sed -n 's/^operator capability: //p' "$tmp/node-$1.log" | tail -1)
        fi
        [ -n "$RON_CAP" ] && break
        w=$((w + 1))
        [ $w -lt 100 ] || { echo "bench/ingest.sh: no operator capability from the $1 node" >&2; cat "$tmp/node-$1.log" >&2; exit 1; }
        sleep 0.1
    done
    export RON_CAP
}
# start_node PROFILE DATA: sets $app and RON_CAP; waits (bounded) until the app port answers `ron status`
start_node() {
    app="127.0.0.1:$(free_port)"
    admin="127.0.0.1:$(free_port)"
    "$ron" node --profile "$1" --data-dir "$2" --admin "$admin" --app "$app" \
        --set services=storage,index,app 2>"$tmp/node-$1.log" &
    node_pid=$!
    node_cap "$1" "$2"  # `ron status` is an admin op on the app port: it needs the capability
    w=0  # not i: sh has no local variables and the caller loops on i
    until env -u RON_ADMIN "$ron" status --node "$app" >/dev/null 2>&1; do
        w=$((w + 1))
        [ $w -lt 100 ] || { echo "bench/ingest.sh: node did not start" >&2; cat "$tmp/node-$1.log" >&2; exit 1; }
        sleep 0.1
    done
}
say() { echo "bench/ingest.sh: run $i: $*" >&2; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f\n", b-a}'; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

head -c $((mib * 1048576)) /dev/urandom > "$tmp/src"
head -c 1048576 /dev/urandom > "$tmp/1m"
cat "$tmp/src" > /dev/null
want=b3:$(b3sum --no-names "$tmp/src")
: > "$tmp/put"; : > "$tmp/dd"; : > "$tmp/mput"; : > "$tmp/b3"
: > "$tmp/lget"; : > "$tmp/lget95"; : > "$tmp/cget"; : > "$tmp/cget95"
i=0
while [ $i -lt "$runs" ]; do
    # 1. macronode put vs dd conv=fsync into the same data dir
    say dd
    rm -rf "$tmp/data"; mkdir "$tmp/data"; sync
    t0=$(date +%s.%N)
    dd if="$tmp/src" of="$tmp/data/x" bs=1M count="$mib" conv=fsync status=none
    t1=$(date +%s.%N)
    secs "$t0" "$t1" >> "$tmp/dd"
    rm -f "$tmp/data/x"; sync
    start_node macro "$tmp/data"
    say "macronode put"
    t0=$(date +%s.%N)
    got=$(env -u RON_ADMIN "$ron" put "$tmp/src" --node "$app")
    t1=$(date +%s.%N)
    [ "$got" = "$want" ] || { echo "bench/ingest.sh: put answered $got, want $want" >&2; exit 1; }
    secs "$t0" "$t1" >> "$tmp/put"
    # 3. 1 MiB get latency on the same node
    say "1 MiB gets"
    a1=$(env -u RON_ADMIN "$ron" put "$tmp/1m" --node "$app")
    "$bl" get "$app" "$a1" "$nlat" > "$tmp/bl"
    awk '{print $3}' "$tmp/bl" >> "$tmp/lget"
    awk '{print $5}' "$tmp/bl" >> "$tmp/lget95"
    : > "$tmp/one"
    j=0
    while [ $j -lt 50 ]; do
        t0=$(date +%s.%N)
        env -u RON_ADMIN "$ron" get "$a1" --node "$app" > /dev/null
        t1=$(date +%s.%N)
        awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", (b-a)*1000}' >> "$tmp/one"
        j=$((j + 1))
    done
    sort -n "$tmp/one" | awk '{a[NR]=$1} END {print a[int(NR/2)+1]}' >> "$tmp/cget"
    sort -n "$tmp/one" | awk '{a[NR]=$1} END {print a[int(NR*0.95)]}' >> "$tmp/cget95"
    stop_node
    # 2. micronode (RAM store) put vs b3sum --num-threads 1
    rm -rf "$tmp/mdata"; mkdir "$tmp/mdata"
    start_node micro "$tmp/mdata"
    say "micronode put"
    t0=$(date +%s.%N)
    env -u RON_ADMIN "$ron" put "$tmp/src" --node "$app" > /dev/null
    t1=$(date +%s.%N)
    secs "$t0" "$t1" >> "$tmp/mput"
    stop_node
    t0=$(date +%s.%N)
    b3sum --num-threads 1 "$tmp/src" > /dev/null
    t1=$(date +%s.%N)
    secs "$t0" "$t1" >> "$tmp/b3"
    i=$((i + 1))
done
put=$(median < "$tmp/put"); dd=$(median < "$tmp/dd")
mput=$(median < "$tmp/mput"); b3=$(median < "$tmp/b3")
lget=$(median < "$tmp/lget"); lget95=$(median < "$tmp/lget95")
cget=$(median < "$tmp/cget"); cget95=$(median < "$tmp/cget95")
{
    echo "## Ingest and get through the app port (ron put / ron get / libron)"
    echo
    echo "\`bench/ingest.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "data dir on $(df -T "$tmp" | awk 'NR==2{print $2}'), medians of $runs interleaved runs."
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). **Provisional**: measured on a"
    echo "machine shared with other builds and tests; re-measure on a quiet machine."
    echo
    echo "| measurement | ours | reference | ratio (goal) |"
    echo "|---|---:|---:|---:|"
    awk -v m="$mib" -v a="$put" -v b="$dd" 'BEGIN{printf "| macronode `ron put` %d MiB vs `dd conv=fsync` | %.0f MiB/s (%.2f s) | %.0f MiB/s (%.2f s) | %.2fx (>= 0.8x) |\n", m, m/a, a, m/b, b, b/a}'
    awk -v m="$mib" -v a="$mput" -v b="$b3" 'BEGIN{printf "| micronode `ron put` %d MiB vs `b3sum --num-threads 1` | %.0f MiB/s (%.2f s) | %.0f MiB/s (%.2f s) | %.2fx (>= 0.5x) |\n", m, m/a, a, m/b, b, b/a}'
    echo
    echo "| 1 MiB get, macronode | p50 ms | p95 ms |"
    echo "|---|---:|---:|"
    echo "| libron (\`bench_libron get\`, one connection, $nlat gets a run, verified) | $lget | $lget95 |"
    echo "| \`ron get\` (new process and connection per get, 50 a run) | $cget | $cget95 |"
    echo
    echo "Goal (issue 3): 1 MiB get p95 <= 2 ms. \`ron put\` times include process start, connect,"
    echo "HELLO and the node's durable commit; \`dd\` and \`b3sum\` read the same cached file."
    echo "Every put and get carries the node's operator capability (RON_CAP): writes need one since"
    echo "issue 5, and a capability bearer's gets are not held to the anonymous rate (100/s per source)."
} > "$out"
cat "$out"
