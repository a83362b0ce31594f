#!/bin/sh
# bench/h2.sh BUILD_DIR - ron-transport's GET /healthz (2-byte body, hardening
# layer on, rate limits raised by bench/config/admin-bench.json) over HTTP/1.1,
# h2c (prior knowledge), HTTP/1.1 over TLS and h2 over TLS, driven by h2load
# (Debian nghttp2-client) on one core with the server on another (taskset).
# RUNS runs of each mode, interleaved; prints a markdown section with medians
# and ratios to HTTP/1.1 cleartext, and writes bench/results/h2.md.
# Env: RUNS (5), DURATION (5 s), CONNS (50), STREAMS (10 per h2 connection),
# SERVER_CPU (0), CLIENT_CPU (1).
set -eu
BUILD=${1:?usage: bench/h2.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
STREAMS=${STREAMS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVER_BIN=$BUILD/bench_http_server
OUT=$ROOT/bench/results/h2.md

[ -x "$SERVER_BIN" ] || { echo "build $SERVER_BIN first (ninja -C $BUILD bench_http_server)" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load is not installed (Debian: nghttp2-client)" >&2; exit 1; }

TMP=$(mktemp -d)
PLAIN_PID=
TLS_PID=
cleanup() {
    set +e # a failed wait must not skip the rest
    [ -n "$PLAIN_PID" ] && kill "$PLAIN_PID" 2>/dev/null && wait "$PLAIN_PID" 2>/dev/null
    [ -n "$TLS_PID" ] && kill "$TLS_PID" 2>/dev/null && wait "$TLS_PID" 2>/dev/null
    rm -rf "$TMP"
    return 0
}
trap cleanup EXIT INT TERM

start() { # name extra-args... (in this shell, so cleanup can wait for it)
    name=$1
    shift
    taskset -c "$SERVER_CPU" "$SERVER_BIN" 127.0.0.1:0 "$ROOT/bench/config/admin-bench.json" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    eval "${name}_pid=\$!"
    for _ in $(seq 100); do grep -q '^port ' "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
}
start plain
PLAIN_PID=$plain_pid
start tls --tls "$TMP/certs"
TLS_PID=$tls_pid
PLAIN_PORT=$(awk '/^port /{print $2}' "$TMP/plain.out")
TLS_PORT=$(awk '/^port /{print $2}' "$TMP/tls.out")
[ -n "$PLAIN_PORT" ] && [ -n "$TLS_PORT" ] || { echo "bench_http_server did not start" >&2; exit 1; }

run() { # mode -> req/s
    case $1 in
    h1) args="--h1 http://127.0.0.1:$PLAIN_PORT/healthz" ;;
    h2c) args="-m $STREAMS http://127.0.0.1:$PLAIN_PORT/healthz" ;;
    h1tls) args="--h1 https://127.0.0.1:$TLS_PORT/healthz" ;;
    h2tls) args="-m $STREAMS https://127.0.0.1:$TLS_PORT/healthz" ;;
    esac
    # shellcheck disable=SC2086
    taskset -c "$CLIENT_CPU" h2load -D "$DURATION" -c "$CONNS" -t 1 $args >"$TMP/h2load.out" 2>&1 || true
    # "finished in 5.00s, 12345.67 req/s, ..." (0 when nothing succeeded)
    r=$(awk '/^finished in/{r=$4} /^requests:/{ok=$8} END{print (ok > 0 && r != "") ? r : 0}' \
        "$TMP/h2load.out")
    [ "$r" != 0 ] || { echo "h2load $1 failed:" >&2; tail -20 "$TMP/h2load.out" >&2; }
    echo "$r"
}

MODES="h1 h2c h1tls h2tls"
for i in $(seq "$RUNS"); do
    for m in $MODES; do
        run "$m" >>"$TMP/$m.runs"
    done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
BASE=$(median "$TMP/h1.runs")
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## HTTP/2 and TLS (ron-transport, h2load)"
    echo
    echo "GET /healthz (2-byte body) through bench_http_server with the hardening layer on;"
    echo "h2load -D ${DURATION}s -c $CONNS -t 1 (h2: -m $STREAMS streams per connection), client and"
    echo "server pinned to separate cores; median of $RUNS interleaved runs; load"
    echo "average $LOAD at the end."
    echo
    echo "| Mode | req/s (median) | runs | vs HTTP/1.1 cleartext |"
    echo "|---|---|---|---|"
    for m in $MODES; do
        med=$(median "$TMP/$m.runs")
        runs=$(tr '\n' ' ' <"$TMP/$m.runs" | sed 's/ $//')
        ratio=$(awk -v a="$med" -v b="$BASE" 'BEGIN{ if (b > 0) printf "%.2fx", a / b; else print "-" }')
        case $m in
        h1) label="HTTP/1.1 (keep-alive)" ;;
        h2c) label="h2c (prior knowledge)" ;;
        h1tls) label="HTTP/1.1 over TLS" ;;
        h2tls) label="h2 over TLS (ALPN)" ;;
        esac
        echo "| $label | $med | $runs | $ratio |"
    done
} | tee "$OUT"
