#!/bin/sh
# bench/node_get_cpu.sh BUILD_DIR - server CPU time per GET /o/b3:<hex>
# through a real `ron node --profile micro` against nginx serving the same
# bytes (bench/config/nginx-get.conf.in), for objects of 1 KiB, 64 KiB and
# 1 MiB, over HTTP/1.1 (wrk) and h2c (h2load). Requests/s swing by 2x on a
# shared machine; the server's CPU time per request (utime+stime of all its
# threads, /proc/PID/stat, before and after a run, divided by the requests
# answered) is what holds up under that noise. Every byte the node sends is
# verified against the object's BLAKE3 tree, the hardening layer is on
# (bench/config/node-gateway-bench.json raises its rate limit). Puts carry
# the operator capability; GETs are anonymous under
# bench/config/policy-bench.json (bench/lib/node_bench.sh).
# Server on SERVER_CPU, load generator on CLIENT_CPU. RUNS interleaved runs,
# medians. Prints a markdown section and writes bench/results/node_get_cpu.md.
# Env: RUNS (5), DURATION (3), CONNS (50), STREAMS (10), SERVER_CPU (0),
# CLIENT_CPU (1), SIZES ("1024 65536 1048576").
set -eu
BUILD=${1:?usage: bench/node_get_cpu.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-3}
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SIZES=${SIZES:-1024 65536 1048576}
RON=$BUILD/ron
NGINX=${NGINX:-/usr/sbin/nginx}
OUT=$ROOT/bench/results/node_get_cpu.md
TCK=$(getconf CLK_TCK)

. "$ROOT/bench/lib/node_bench.sh"
nb_check_tools
median() { sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime of all threads

nb_start_node micro
NODE_PID=$micro_PID
NODE_PORT=$micro_PORT
nb_put_objects "$SIZES" micro
nb_start_nginx

# run PID PROTO PORT PATH -> "req/s us/req" of one run
run() {
    t0=$(ticks "$1")
    if [ "$2" = h1 ]; then
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$3$4" >"$TMP/out"
        if grep -q 'Non-2xx\|Socket errors' "$TMP/out"; then echo "wrk errors:" >&2; cat "$TMP/out" >&2; exit 1; fi
        t1=$(ticks "$1")
        awk -v d="$((t1 - t0))" -v tck="$TCK" -v dur="$DURATION" \
            '/requests in/{n=$1} END{printf "%.0f %.1f\n", n / dur, d * 1e6 / tck / n}' "$TMP/out"
    else
        taskset -c "$CLIENT_CPU" h2load -D "$DURATION" -c "$CONNS" -t 1 -m "$STREAMS" \
            "http://127.0.0.1:$3$4" >"$TMP/out" 2>&1 || true
        t1=$(ticks "$1")
        awk -v d="$((t1 - t0))" -v tck="$TCK" \
            '/^finished in/{r=$4} /^requests:/{n=$8; fail=$10+$12}
             END{if (fail > 0 || n == 0) {print "0 0"; exit} printf "%.0f %.1f\n", r, d * 1e6 / tck / n}' "$TMP/out"
    fi
}

ROWS=
while read -r size addr; do
    path="/o/$addr"
    for proto in h1 h2; do
        : >"$TMP/node.$proto"
        : >"$TMP/nginx.$proto"
        np=$NODE_PORT
        gp=$NGINX_H1
        [ "$proto" = h2 ] && gp=$NGINX_H2
        run "$NODE_PID" "$proto" "$np" "$path" >/dev/null # warm-up
        run "$NGINX_PID" "$proto" "$gp" "$path" >/dev/null
        for _ in $(seq "$RUNS"); do
            run "$NODE_PID" "$proto" "$np" "$path" >>"$TMP/node.$proto"
            run "$NGINX_PID" "$proto" "$gp" "$path" >>"$TMP/nginx.$proto"
        done
        nr=$(cut -d' ' -f1 <"$TMP/node.$proto" | median)
        gr=$(cut -d' ' -f1 <"$TMP/nginx.$proto" | median)
        nc=$(cut -d' ' -f2 <"$TMP/node.$proto" | median)
        gc=$(cut -d' ' -f2 <"$TMP/nginx.$proto" | median)
        ROWS="$ROWS| $size B | $proto | $nr | $gr | $(ratio "$nr" "$gr")x | $nc | $gc | **$(ratio "$gc" "$nc")x** |
"
    done
done <"$TMP/objects"

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## GET through a micronode vs nginx: CPU per request"
    echo
    echo "\`ron node --profile micro\` ($(basename "$BUILD") build, hardening layer on, every byte verified)"
    echo "against $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') (one worker, sendfile), server on CPU $SERVER_CPU,"
    echo "load on CPU $CLIENT_CPU. h1: wrk -t1 -c$CONNS -d${DURATION}s; h2: h2load -c$CONNS -m$STREAMS -D$DURATION (h2c)."
    echo "CPU: utime+stime of the server process (all threads) over the run / requests answered."
    echo "$RUNS interleaved runs, medians. efficiency = nginx us/req / node us/req (1.0x: as cheap as nginx)."
    echo "$NB_AUTH_NOTE"
    echo
    echo "| object | proto | node req/s | nginx req/s | req/s ratio | node us/req | nginx us/req | efficiency |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    printf "%s" "$ROWS"
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $LOAD at the end."
    [ -z "${PROVISIONAL:-}" ] || echo "Provisional: the machine was shared with other builds and tests while this ran."
} | tee "$OUT"
