#!/bin/sh
# bench/node_get.sh BUILD_DIR - GET /o/b3:<hex> through a real `ron node`
# (macro profile: the gateway is its own process next to storage and index;
# micro profile: one process) against nginx serving the same bytes as static
# files (bench/config/nginx-get.conf.in), for objects of 1 KiB, 64 KiB and
# 1 MiB. Every byte the node sends is verified against the object's BLAKE3
# tree; the hardening layer is on with its rate limit raised by the committed
# bench/config/node-gateway-bench.json. Puts carry the operator capability;
# GETs are anonymous under bench/config/policy-bench.json (bench/lib/node_bench.sh).
#   - throughput: wrk (HTTP/1.1 keep-alive) and h2load (h2c, prior
#     knowledge), closed loop, RUNS interleaved runs, medians;
#   - latency: open-loop h2load --rps at half of the micronode's h2c peak,
#     p99 of every request's duration from h2load's log, the same rate
#     offered to nginx.
# Server on SERVER_CPU, load generator on CLIENT_CPU (taskset); the node's
# children inherit the server's CPU. Writes bench/results/node_get.md.
# Env: RUNS (5), DURATION (5), CONNS (50), STREAMS (10), SERVER_CPU (0),
# CLIENT_CPU (1), LAT_DURATION (10).
set -eu
BUILD=${1:?usage: bench/node_get.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
LAT_DURATION=${LAT_DURATION:-10}
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RON=$BUILD/ron
NGINX=${NGINX:-/usr/sbin/nginx}
OUT=$ROOT/bench/results/node_get.md

. "$ROOT/bench/lib/node_bench.sh"
nb_check_tools
median() { sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m}'; }

nb_start_node macro
nb_start_node micro
nb_put_objects "1024 65536 1048576" macro micro
nb_start_nginx

wrk_rps() { # port path -> req/s
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$1$2" >"$TMP/wrk.out"
    if grep -q 'Non-2xx\|Socket errors' "$TMP/wrk.out"; then echo "wrk errors:" >&2; cat "$TMP/wrk.out" >&2; exit 1; fi
    awk '/^Requests\/sec:/{print $2}' "$TMP/wrk.out"
}
h2_rps() { # port path -> req/s (0 when any request failed)
    taskset -c "$CLIENT_CPU" h2load -D "$DURATION" -c "$CONNS" -t 1 -m "$STREAMS" \
        "http://127.0.0.1:$1$2" >"$TMP/h2load.out" 2>&1 || true
    awk '/^finished in/{r=$4} /^requests:/{fail=$10+$12} END{print (fail == 0 && r != "") ? r : 0}' \
        "$TMP/h2load.out"
}
# p99 in microseconds of an open-loop run at RATE req/s in total, 10 clients.
h2_p99() { # port path rate -> p99 us
    per=$(awk -v r="$3" 'BEGIN{v=int(r/10); print (v < 1) ? 1 : v}')
    rm -f "$TMP/lat.log"
    taskset -c "$CLIENT_CPU" h2load -D "$LAT_DURATION" -c 10 -t 1 -m 64 --rps "$per" \
        --log-file="$TMP/lat.log" "http://127.0.0.1:$1$2" >"$TMP/h2lat.out" 2>&1 || true
    # log lines: start (us since epoch) TAB status TAB duration (us)
    awk -F'\t' '$2 != 200 {bad++} {print $3} END{if (bad) print "non-200: " bad > "/dev/stderr"}' \
        "$TMP/lat.log" | sort -n | awk '{a[NR]=$1} END{i=int(NR*0.99); if (i < 1) i=1; print (NR == 0) ? 0 : a[i]}'
}

TARGETS="macro micro nginx"
port_of() { # target proto -> port
    case $1 in
    macro) echo "$macro_PORT" ;;
    micro) echo "$micro_PORT" ;;
    nginx) [ "$2" = h2 ] && echo "$NGINX_H2" || echo "$NGINX_H1" ;;
    esac
}

THR=
LAT=
while read -r size addr; do
    path="/o/$addr"
    for t in $TARGETS; do
        wrk_rps "$(port_of $t h1)" "$path" >/dev/null # warm-up
        : >"$TMP/$t.h1"
        : >"$TMP/$t.h2"
    done
    for _ in $(seq "$RUNS"); do
        for t in $TARGETS; do
            wrk_rps "$(port_of $t h1)" "$path" >>"$TMP/$t.h1"
            h2_rps "$(port_of $t h2)" "$path" >>"$TMP/$t.h2"
        done
    done
    goal=0.6
    [ "$size" = 1024 ] && goal=1.0
    for proto in h1 h2; do
        ma=$(median <"$TMP/macro.$proto")
        mi=$(median <"$TMP/micro.$proto")
        ng=$(median <"$TMP/nginx.$proto")
        THR="$THR| $size B | $proto | $mi | $ma | $ng | **$(ratio "$mi" "$ng")x** | $(ratio "$ma" "$ng")x | $(ratio "$ma" "$mi")x | >= ${goal}x |
"
    done
    half=$(awk -v r="$(median <"$TMP/micro.h2")" 'BEGIN{printf "%d", r / 2}')
    : >"$TMP/p99.micro"
    : >"$TMP/p99.nginx"
    for _ in 1 2 3; do
        h2_p99 "$micro_PORT" "$path" "$half" >>"$TMP/p99.micro"
        h2_p99 "$NGINX_H2" "$path" "$half" >>"$TMP/p99.nginx"
    done
    pm=$(median <"$TMP/p99.micro")
    pn=$(median <"$TMP/p99.nginx")
    LAT="$LAT| $size B | $half | $pm | $pn | **$(ratio "$pm" "$pn")x** (goal <= 1.2x) |
"
done <"$TMP/objects"

NGINX_VER=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## GET through a node (macro and micro) vs nginx"
    echo
    echo "\`ron node\` ($(basename "$BUILD") build, persistent store, services storage,index,gateway,"
    echo "hardening layer on with bench/config/node-gateway-bench.json) against $NGINX_VER"
    echo "(bench/config/nginx-get.conf.in: one worker, sendfile) serving the same bytes."
    echo "Server on CPU $SERVER_CPU (the node's children inherit it), load on CPU $CLIENT_CPU."
    echo "h1: wrk -t1 -c$CONNS -d${DURATION}s; h2: h2load -c$CONNS -m$STREAMS -D$DURATION (h2c, prior"
    echo "knowledge). $RUNS interleaved runs, medians of requests/s."
    echo "$NB_AUTH_NOTE"
    echo
    echo "| object | proto | micro req/s | macro req/s | nginx req/s | micro/nginx | macro/nginx | macro/micro | goal |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    printf "%s" "$THR"
    echo
    echo "Open-loop latency: h2load --rps, 10 connections, ${LAT_DURATION}s, at half of the micronode's"
    echo "h2c peak; p99 of all request durations (us), median of 3 runs."
    echo
    echo "| object | offered req/s | micro p99 us | nginx p99 us | ratio |"
    echo "|---|---:|---:|---:|---|"
    printf "%s" "$LAT"
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $LOAD at the end."
    [ -z "${PROVISIONAL:-}" ] || echo "Provisional: the machine was shared with other builds and tests while this ran."
} | tee "$OUT"
