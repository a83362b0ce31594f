#!/bin/sh
# bench/gateway_auth.sh BUILD_DIR - what capability enforcement costs the
# gateway's GET /o/b3:<hex>. Two bench_gw_server --guard instances (a
# capability authority in RAM, the gateway's guard following it, as in a
# node), each over its own file store holding the same objects, differing
# only in their policy bundle (the format of the node's `policy_file`):
#   public: the shipped default's rules, with the public-read rate raised to
#           1,000,000/s (burst 1,000,000) so the per-source limit never
#           throttles wrk: anonymous GETs, each one still decided by the
#           guard (policy + per-source token bucket);
#   cap:    anonymous reads denied (401); wrk sends
#           `Authorization: Bearer <get-only capability>` on every request:
#           verified through the guard's verdict cache.
# wrk -t1 keep-alive on one core, the servers on another (taskset), RUNS runs
# of each, interleaved; medians of requests/s and of server CPU us/request;
# ratio cap/public (goal >= 0.95). Prints a markdown section and writes
# bench/results/gateway_auth.md.
# Env: RUNS (5), DURATION (5s), CONNS (50), SERVER_CPU (0), CLIENT_CPU (1),
# SIZES ("1024 65536"; 1024 must be among them for CALLGRIND), CALLGRIND
# (set: also count instructions per request under valgrind, needs h2load),
# CG_N (2000), PROVISIONAL (set: say the machine was busy).
set -eu
BUILD=${1:?usage: bench/gateway_auth.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SIZES=${SIZES:-1024 65536}
SERVER_BIN=$BUILD/bench_gw_server
OUT=$ROOT/bench/results/gateway_auth.md

[ -x "$SERVER_BIN" ] || { echo "build $SERVER_BIN first (ninja -C $BUILD bench_gw_server)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

TMP=$(mktemp -d)
PUB_PID=
CAP_PID=
cleanup() {
    [ -n "$PUB_PID" ] && kill "$PUB_PID" 2>/dev/null && wait "$PUB_PID" 2>/dev/null
    [ -n "$CAP_PID" ] && kill "$CAP_PID" 2>/dev/null && wait "$CAP_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cat >"$TMP/public.json" <<'JSON'
{
  "version": 1,
  "description": "bench: the shipped default with the public-read rate raised past what wrk sends",
  "rules": [
    {"id": "public-read", "effect": "allow", "match": {"anonymous": true, "ops": ["get"]},
     "obligations": {"rate": "1000000/s", "burst": 1000000}},
    {"id": "anonymous-other", "effect": "deny", "match": {"anonymous": true},
     "obligations": {"audit": true}},
    {"id": "capability-bearer", "effect": "allow", "match": {"anonymous": false}}
  ]
}
JSON
cat >"$TMP/cap.json" <<'JSON'
{
  "version": 1,
  "description": "bench: every request needs a capability",
  "rules": [
    {"id": "anonymous", "effect": "deny", "match": {"anonymous": true},
     "obligations": {"audit": true}},
    {"id": "capability-bearer", "effect": "allow", "match": {"anonymous": false}}
  ]
}
JSON

start() { # name -> pid in $TMP/name.pid, port in $TMP/name.port
    taskset -c "$SERVER_CPU" "$SERVER_BIN" --dir "$TMP/$1.store" --no-rate --max-body 2000000 \
        --guard --policy "$TMP/$1.json" >"$TMP/$1.out" 2>"$TMP/$1.err" &
    echo $! >"$TMP/$1.pid"
    for _ in $(seq 50); do grep -q '^port ' "$TMP/$1.out" 2>/dev/null && break; sleep 0.1; done
    awk '/^port /{print $2}' "$TMP/$1.out" >"$TMP/$1.port"
    [ -s "$TMP/$1.port" ] || { echo "bench_gw_server ($1) did not start" >&2; cat "$TMP/$1.err" >&2; exit 1; }
}
start public
start cap
PUB_PID=$(cat "$TMP/public.pid")
CAP_PID=$(cat "$TMP/cap.pid")
PUB_PORT=$(cat "$TMP/public.port")
CAP_PORT=$(cat "$TMP/cap.port")
GETCAP=$(awk '/^getcap /{print $2}' "$TMP/cap.out")
for s in public cap; do awk '/^cap /{print $2}' "$TMP/$s.out" >"$TMP/$s.opcap"; done

for size in $SIZES; do
    head -c "$size" /dev/urandom >"$TMP/obj.$size"
    want="b3:$(b3sum --no-names "$TMP/obj.$size")"
    for s in public cap; do
        port=$(cat "$TMP/$s.port")
        addr=$(curl -sS -H 'Expect:' -H "Authorization: Bearer $(cat "$TMP/$s.opcap")" \
            --data-binary "@$TMP/obj.$size" "http://127.0.0.1:$port/o" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
        [ "$addr" = "$want" ] || { echo "bad address for $size on $s" >&2; exit 1; }
    done
    echo "$size $want" >>"$TMP/objects"
done

# The two setups answer as they should before anything is measured.
first=$(awk 'NR==1{print $2}' "$TMP/objects")
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code "http://127.0.0.1:$PUB_PORT/o/$first")" = 200 ] || { echo "public: anonymous GET is not 200" >&2; exit 1; }
[ "$(code "http://127.0.0.1:$CAP_PORT/o/$first")" = 401 ] || { echo "cap: anonymous GET is not 401" >&2; exit 1; }
[ "$(code -H "Authorization: Bearer $GETCAP" "http://127.0.0.1:$CAP_PORT/o/$first")" = 200 ] ||
    { echo "cap: GET with the get capability is not 200" >&2; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

run_wrk() { # pid port path [header] -> "req/s us/req"
    t0=$(cpu_ticks "$1")
    if [ -n "${4:-}" ]; then
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" -H "$4" "http://127.0.0.1:$2$3" >"$TMP/wrk.out"
    else
        taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$2$3" >"$TMP/wrk.out"
    fi
    t1=$(cpu_ticks "$1")
    if grep -q 'Non-2xx' "$TMP/wrk.out"; then echo "non-2xx answers (throttled or refused):" >&2; cat "$TMP/wrk.out" >&2; exit 1; fi
    awk -v t0="$t0" -v t1="$t1" -v hz="$TCK" '
        /^Requests\/sec:/ {rps = $2}
        /requests in/ {n = $1}
        END {printf "%s %.1f\n", rps, (t1 - t0) / hz * 1e6 / (n > 0 ? n : 1)}' "$TMP/wrk.out"
}
median() { sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f", m}'; }

ROWS=
while read -r size addr; do
    path="/o/$addr"
    run_wrk "$PUB_PID" "$PUB_PORT" "$path" >/dev/null # warm-up
    run_wrk "$CAP_PID" "$CAP_PORT" "$path" "Authorization: Bearer $GETCAP" >/dev/null
    : >"$TMP/pub.res"
    : >"$TMP/cap.res"
    for _ in $(seq "$RUNS"); do
        run_wrk "$PUB_PID" "$PUB_PORT" "$path" >>"$TMP/pub.res"
        run_wrk "$CAP_PID" "$CAP_PORT" "$path" "Authorization: Bearer $GETCAP" >>"$TMP/cap.res"
    done
    p=$(awk '{print $1}' "$TMP/pub.res" | median)
    c=$(awk '{print $1}' "$TMP/cap.res" | median)
    pu=$(awk '{print $2}' "$TMP/pub.res" | median | xargs printf %.1f)
    cu=$(awk '{print $2}' "$TMP/cap.res" | median | xargs printf %.1f)
    r=$(awk -v a="$c" -v b="$p" 'BEGIN{printf "%.2f", a/b}')
    # each cap run against the public run just before it: load swings hit both
    pr=$(paste "$TMP/pub.res" "$TMP/cap.res" | awk '{printf "%.4f\n", $3 / $1}' | median)
    ru=$(awk -v a="$pu" -v b="$cu" 'BEGIN{printf "%.2f", a/b}')
    ROWS="$ROWS| $size B | $(printf %.0f "$p") | $(printf %.0f "$c") | ${r}x | **$(printf %.2f "$pr")x** (goal >= 0.95x) | $pu | $cu | ${ru}x |
"
    echo "$size public: $(tr '\n' ';' <"$TMP/pub.res") cap: $(tr '\n' ';' <"$TMP/cap.res")" >&2
done <"$TMP/objects"
# Load-independent: user-space instructions per request under callgrind
# (CALLGRIND=1; valgrind hides SHA-NI, so the token's SHA-256 counts more
# than it costs natively), 1 KiB object, h2load --h1 -c10, N requests
# counted after 200 warm-up ones. "public + pad" sends an X-Pad header as
# long as the token: what the bigger request alone costs the HTTP parser.
CG_ROWS=
cg_run() { # name policy header -> "instructions/request guard_check/request"
    d=$(mktemp -d "$TMP/cg.XXXX")
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/cg.out" \
        "$SERVER_BIN" --dir "$d/store" --no-rate --guard --policy "$TMP/$2.json" \
        >"$d/out" 2>"$d/err" &
    vp=$!
    for _ in $(seq 300); do grep -q '^port ' "$d/out" 2>/dev/null && break; sleep 0.1; done
    port=$(awk '/^port /{print $2}' "$d/out")
    op=$(awk '/^cap /{print $2}' "$d/out")
    gc=$(awk '/^getcap /{print $2}' "$d/out")
    a=$(curl -sS -H 'Expect:' -H "Authorization: Bearer $op" --data-binary "@$TMP/obj.1024" \
        "http://127.0.0.1:$port/o" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
    case $3 in cap) h="Authorization: Bearer $gc" ;; pad) h="X-Pad: $gc" ;; *) h="X-None: 1" ;; esac
    h2load --h1 -n 200 -c 10 -H "$h" "http://127.0.0.1:$port/o/$a" >/dev/null 2>&1
    callgrind_control -i on "$vp" >/dev/null 2>&1
    h2load --h1 -n "$CG_N" -c 10 -H "$h" "http://127.0.0.1:$port/o/$a" >"$d/h2.out" 2>&1
    callgrind_control -i off "$vp" >/dev/null 2>&1
    grep -q "$CG_N succeeded" "$d/h2.out" || { echo "callgrind $1: not every request succeeded" >&2; cat "$d/h2.out" >&2; exit 1; }
    kill "$vp"
    wait "$vp" 2>/dev/null || true
    callgrind_annotate --inclusive=yes "$d/cg.out" 2>/dev/null | awk -v n="$CG_N" '
        /PROGRAM TOTALS/ {gsub(",", "", $1); t = $1}
        /:guard_check / {gsub(",", "", $1); g = $1}
        END {printf "%.0f %.0f\n", t / n, g / n}'
}
if [ -n "${CALLGRIND:-}" ]; then
    CG_N=${CG_N:-2000}
    for m in "public anon public" "public pad public+pad" "cap cap cap"; do
        set -- $m
        res=$(cg_run "$3" "$1" "$2")
        CG_ROWS="$CG_ROWS| $3 | ${res% *} | ${res#* } |
"
    done
fi
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
CAPLEN=$(printf %s "$GETCAP" | wc -c)

{
    echo "## Gateway GET: capabilities required vs public reads"
    echo
    echo "wrk -t1 -c$CONNS -d$DURATION on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU, loopback."
    echo "Both: \`bench_gw_server --guard\` ($(basename "$BUILD") build) over a file store, every byte"
    echo "verified on its way out, the gateway's guard deciding every request (capability authority"
    echo "in RAM, as a node's gateway follows the kernel's)."
    echo "**public**: policy file = the shipped default with the public-read rule's rate raised to"
    echo "1000000/s, burst 1000000, so the per-source limit never throttles the benchmark (every"
    echo "request still goes through the policy and the per-source token bucket); anonymous GETs."
    echo "**cap**: policy file denying anonymous requests; wrk sends \`Authorization: Bearer\` with a"
    echo "get-only capability ($CAPLEN characters) on every request (verified through the verdict cache)."
    echo "$RUNS runs each, interleaved (public, then cap), medians; a paired ratio is one cap run over"
    echo "the public run just before it. CPU = the server's utime+stime per request."
    echo
    echo "| object | public req/s | cap req/s | ratio of medians | median of paired ratios cap/public | public CPU us/req | cap CPU us/req | CPU ratio public/cap |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    printf "%s" "$ROWS"
    echo
    if [ -n "$CG_ROWS" ]; then
        echo "Load-independent (callgrind, 1 KiB object, $CG_N requests, h2load --h1 -c10; user space only;"
        echo "valgrind hides SHA-NI, so the token's SHA-256 weighs more here than natively):"
        echo
        echo "| setup | instructions/request | of which guard_check |"
        echo "|---|---:|---:|"
        printf "%s" "$CG_ROWS"
        echo
    fi
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $LOAD at the end."
    [ -z "${PROVISIONAL:-}" ] || echo "Provisional: the machine was shared with other builds and tests while this ran."
} | tee "$OUT"
