#!/bin/sh
# bench/http.sh BUILD_DIR - admin HTTP /healthz: the real node's admin port
# (`ron node`, hardening layer on, rate limits raised by
# bench/config/node-admin-bench.json) and ron-transport alone
# (bench_http_server with bench/config/admin-bench.json, 2-byte body) against
# nginx returning a 2-byte body. wrk on one core, the server on another (taskset), RUNS runs each,
# alternating; prints a markdown section and writes bench/results/http.md.
# Env: RUNS (5), DURATION (5s), CONNS (50), SERVER_CPU (0), CLIENT_CPU (1).
set -eu
BUILD=${1:?usage: bench/http.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVER_BIN=$BUILD/bench_http_server
NGINX=${NGINX:-/usr/sbin/nginx}
OUT=$ROOT/bench/results/http.md

[ -x "$SERVER_BIN" ] || { echo "build $SERVER_BIN first (ninja -C $BUILD bench_http_server)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx is not installed at $NGINX" >&2; exit 1; }

TMP=$(mktemp -d)
RON_PID=
NGINX_PID=
NODE_PID=
cleanup() {
    [ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null
    [ -n "$RON_PID" ] && kill "$RON_PID" 2>/dev/null && wait "$RON_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ours
taskset -c "$SERVER_CPU" "$SERVER_BIN" 127.0.0.1:0 "$ROOT/bench/config/admin-bench.json" \
    >"$TMP/ron.out" 2>"$TMP/ron.err" &
RON_PID=$!
for _ in $(seq 50); do grep -q '^port ' "$TMP/ron.out" 2>/dev/null && break; sleep 0.1; done
RON_PORT=$(awk '/^port /{print $2}' "$TMP/ron.out")
[ -n "$RON_PORT" ] || { echo "bench_http_server did not start" >&2; cat "$TMP/ron.err" >&2; exit 1; }

# the node: kernel + its default child; the admin port is what wrk measures
NODE_PORT=$(free_port)
mkdir -p "$TMP/data"
taskset -c "$SERVER_CPU" "$BUILD/ron" node --config "$ROOT/bench/config/node-admin-bench.json" \
    --data-dir "$TMP/data" --admin "127.0.0.1:$NODE_PORT" >"$TMP/node.out" 2>"$TMP/node.err" &
NODE_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NODE_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$NODE_PORT/healthz" >/dev/null || { echo "ron node did not start" >&2; cat "$TMP/node.err" >&2; exit 1; }

# nginx: one worker, no access log, the same 2-byte body
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
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /healthz { default_type text/plain; return 200 "ok"; }
    }
}
CONF
taskset -c "$SERVER_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx.err" &
NGINX_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$NGINX_PORT/healthz" >/dev/null || { echo "nginx did not start" >&2; cat "$TMP/nginx.err" >&2; exit 1; }
[ "$(curl -s "http://127.0.0.1:$RON_PORT/healthz")" = ok ] || { echo "bench_http_server does not answer ok" >&2; exit 1; }

cpu_ticks() { # pid -> utime+stime in clock ticks
    awk '{print $14 + $15}' "/proc/$1/stat"
}
HZ=$(getconf CLK_TCK)
run_wrk() { # port pid -> "requests/s cpu-us-per-request"
    t0=$(cpu_ticks "$2")
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$1/healthz" >"$TMP/wrk.out"
    t1=$(cpu_ticks "$2")
    if grep -q 'Non-2xx' "$TMP/wrk.out"; then echo "non-2xx answers:" >&2; cat "$TMP/wrk.out" >&2; exit 1; fi
    awk -v t0="$t0" -v t1="$t1" -v hz="$HZ" '
        / requests in /{n=$1} /^Requests\/sec:/{r=$2}
        END{printf "%s %.2f\n", r, (t1-t0)*1e6/hz/n}' "$TMP/wrk.out"
}
median() { sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f", m}'; }

# warm-up, then alternate so both see the same background load
run_wrk "$NODE_PORT" "$NODE_PID" >/dev/null
run_wrk "$RON_PORT" "$RON_PID" >/dev/null
run_wrk "$NGINX_PORT" "$NGINX_PID" >/dev/null
: >"$TMP/node.runs"
: >"$TMP/ron.runs"
: >"$TMP/nginx.runs"
for _ in $(seq "$RUNS"); do
    run_wrk "$NODE_PORT" "$NODE_PID" >>"$TMP/node.runs"
    run_wrk "$RON_PORT" "$RON_PID" >>"$TMP/ron.runs"
    run_wrk "$NGINX_PORT" "$NGINX_PID" >>"$TMP/nginx.runs"
done
cut -d' ' -f1 "$TMP/node.runs" >"$TMP/node.rps"
NODE_MED=$(median <"$TMP/node.rps")
NODE_CPU=$(cut -d' ' -f2 "$TMP/node.runs" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
NODE_ALL=$(tr '\n' ' ' <"$TMP/node.rps" | awk '{for(i=1;i<=NF;i++) printf "%s%.0f", (i>1?", ":""), $i}')
cut -d' ' -f1 "$TMP/ron.runs" >"$TMP/ron.rps"
cut -d' ' -f1 "$TMP/nginx.runs" >"$TMP/nginx.rps"
RON_MED=$(median <"$TMP/ron.rps")
NGINX_MED=$(median <"$TMP/nginx.rps")
NODE_RATIO=$(awk -v a="$NODE_MED" -v b="$NGINX_MED" 'BEGIN{printf "%.2f", a/b}')
NODE_CPU_RATIO=$(awk -v a="$NODE_CPU" -v b="$(cut -d' ' -f2 "$TMP/nginx.runs" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')" 'BEGIN{printf "%.2f", a/b}')
RON_CPU=$(cut -d' ' -f2 "$TMP/ron.runs" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
NGINX_CPU=$(cut -d' ' -f2 "$TMP/nginx.runs" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
CPU_RATIO=$(awk -v a="$RON_CPU" -v b="$NGINX_CPU" 'BEGIN{printf "%.2f", a/b}')
RATIO=$(awk -v a="$RON_MED" -v b="$NGINX_MED" 'BEGIN{printf "%.2f", a/b}')
RON_ALL=$(tr '\n' ' ' <"$TMP/ron.rps" | awk '{for(i=1;i<=NF;i++) printf "%s%.0f", (i>1?", ":""), $i}')
NGINX_ALL=$(tr '\n' ' ' <"$TMP/nginx.rps" | awk '{for(i=1;i<=NF;i++) printf "%s%.0f", (i>1?", ":""), $i}')
# memory holding 2,000 slow connections (release build, the bench config's max_conns)
SLOW=$(python3 "$ROOT/bench/http_slow_conns.py" "$SERVER_BIN" "$ROOT/bench/config/admin-bench.json" 2000)
SLOW_IDLE=$(echo "$SLOW" | awk '{printf "%.1f", $1/1024}')
SLOW_HELD=$(echo "$SLOW" | awk '{printf "%.1f", $2/1024}')
SLOW_N=$(echo "$SLOW" | awk '{print $3}')
NGINX_VER=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "## Admin HTTP /healthz (ron node's admin port vs nginx)"
    echo
    echo "wrk -t1 -c$CONNS -d$DURATION on CPU $CLIENT_CPU, server on CPU $SERVER_CPU, loopback, keep-alive."
    echo "**ron node**: the real node (kernel + its default child, $(basename "$BUILD") build), its admin port's"
    echo "\`/healthz\` (a small JSON body computed from service health) with the hardening layer on and"
    echo "\`bench/config/node-admin-bench.json\` raising only the rate and connection limits."
    echo "**ron-transport alone**: \`bench_http_server\` answering a 2-byte body, layer on,"
    echo "\`bench/config/admin-bench.json\`. **nginx**: $NGINX_VER, worker_processes 1, access_log off,"
    echo "\`return 200 \"ok\"\`. $RUNS runs each, interleaved, medians."
    echo
    echo "| server | median requests/s | server CPU per request (median) | requests/s of each run |"
    echo "|---|---:|---:|---|"
    echo "| ron node admin port | $NODE_MED | ${NODE_CPU} us | $NODE_ALL |"
    echo "| ron-transport alone | $RON_MED | ${RON_CPU} us | $RON_ALL |"
    echo "| nginx | $NGINX_MED | ${NGINX_CPU} us | $NGINX_ALL |"
    echo
    echo "Ratio ron node/nginx: **${NODE_RATIO}x** requests/s (goal >= 1.0x), CPU per request ${NODE_CPU_RATIO}x."
    echo "Ratio ron-transport alone/nginx: ${RATIO}x requests/s, CPU per request ${CPU_RATIO}x (lower"
    echo "is better; user+system time of the server process from /proc, less sensitive to background load)."
    echo
    echo "Memory: \`bench_http_server\` RssAnon $SLOW_IDLE MiB idle, **$SLOW_HELD MiB** while holding"
    echo "$SLOW_N slow connections (each a partial request growing one header byte every 0.5 s;"
    echo "\`bench/http_slow_conns.py\`; goal <= 64 MiB)."
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $LOAD at the end."
    [ -z "${PROVISIONAL:-}" ] || echo "Provisional: the machine was shared with other builds and tests while this ran."
} | tee "$OUT"
