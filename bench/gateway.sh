#!/bin/sh
# bench/gateway.sh BUILD_DIR - GET /o/b3:<hex> through the gateway
# (bench_gw_server: a file store in a temp dir, every byte verified on its
# way out, the hardening layer on with the rate limit off) against nginx
# serving the same bytes as static files (sendfile on, one worker), for
# objects of 1 KiB, 64 KiB and 1 MiB. wrk -t1 keep-alive on one core, the
# server on another (taskset), RUNS runs of each, interleaved; prints a
# markdown section and writes bench/results/gateway.md.
# Env: RUNS (5), DURATION (5s), CONNS (50), SERVER_CPU (0), CLIENT_CPU (1).
set -eu
BUILD=${1:?usage: bench/gateway.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVER_BIN=$BUILD/bench_gw_server
NGINX=${NGINX:-/usr/sbin/nginx}
OUT=$ROOT/bench/results/gateway.md

[ -x "$SERVER_BIN" ] || { echo "build $SERVER_BIN first (ninja -C $BUILD bench_gw_server)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx is not installed at $NGINX" >&2; exit 1; }

TMP=$(mktemp -d)
GW_PID=
NGINX_PID=
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

taskset -c "$SERVER_CPU" "$SERVER_BIN" --dir "$TMP/store" --no-rate --max-body 2000000 \
    >"$TMP/gw.out" 2>"$TMP/gw.err" &
GW_PID=$!
for _ in $(seq 50); do grep -q '^port ' "$TMP/gw.out" 2>/dev/null && break; sleep 0.1; done
GW_PORT=$(awk '/^port /{print $2}' "$TMP/gw.out")
[ -n "$GW_PORT" ] || { echo "bench_gw_server did not start" >&2; cat "$TMP/gw.err" >&2; exit 1; }

mkdir -p "$TMP/www/o"
for size in 1024 65536 1048576; do
    head -c "$size" /dev/urandom >"$TMP/obj.$size"
    addr=$(curl -sS -H 'Expect:' --data-binary "@$TMP/obj.$size" "http://127.0.0.1:$GW_PORT/o" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
    [ "$addr" = "b3:$(b3sum --no-names "$TMP/obj.$size")" ] || { echo "bad address for $size" >&2; exit 1; }
    cp "$TMP/obj.$size" "$TMP/www/o/$addr"
    echo "$size $addr" >>"$TMP/objects"
done

NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/www;
        default_type application/octet-stream;
    }
}
CONF
taskset -c "$SERVER_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx.err" &
NGINX_PID=$!
first=$(awk 'NR==1{print $2}' "$TMP/objects")
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/o/$first" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$NGINX_PORT/o/$first" >/dev/null || { echo "nginx did not start" >&2; cat "$TMP/nginx.err" >&2; exit 1; }

run_wrk() { # port path -> requests/s
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1$2" >"$TMP/wrk.out"
    if grep -q 'Non-2xx' "$TMP/wrk.out"; then echo "non-2xx answers:" >&2; cat "$TMP/wrk.out" >&2; exit 1; fi
    awk '/^Requests\/sec:/{print $2}' "$TMP/wrk.out"
}
median() { sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m}'; }

ROWS=
while read -r size addr; do
    path="/o/$addr"
    run_wrk "$GW_PORT" "$path" >/dev/null # warm-up
    run_wrk "$NGINX_PORT" "$path" >/dev/null
    : >"$TMP/gw.rps"
    : >"$TMP/nginx.rps"
    for _ in $(seq "$RUNS"); do
        run_wrk "$GW_PORT" "$path" >>"$TMP/gw.rps"
        run_wrk "$NGINX_PORT" "$path" >>"$TMP/nginx.rps"
    done
    g=$(median <"$TMP/gw.rps")
    n=$(median <"$TMP/nginx.rps")
    r=$(awk -v a="$g" -v b="$n" 'BEGIN{printf "%.2f", a/b}')
    goal=0.6
    [ "$size" = 1024 ] && goal=1.0
    ROWS="$ROWS| $size B | $g | $n | **${r}x** (goal >= ${goal}x) |
"
done <"$TMP/objects"
NGINX_VER=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "## Gateway GET vs nginx (HTTP/1.1 keep-alive)"
    echo
    echo "wrk -t1 -c$CONNS -d$DURATION on CPU $CLIENT_CPU, server on CPU $SERVER_CPU, loopback."
    echo "**gateway**: \`bench_gw_server\` ($(basename "$BUILD") build) over a file store, every byte"
    echo "verified against its BLAKE3 tree on its way out, hardening layer on (rate limit off)."
    echo "**nginx**: $NGINX_VER, one worker, sendfile, the same bytes as static files."
    echo "$RUNS runs each, interleaved, medians of requests/s."
    echo
    echo "| object | gateway req/s | nginx req/s | ratio |"
    echo "|---|---:|---:|---:|"
    printf "%s" "$ROWS"
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $LOAD at the end."
    [ -z "${PROVISIONAL:-}" ] || echo "Provisional: the machine was shared with other builds and tests while this ran."
} | tee "$OUT"
