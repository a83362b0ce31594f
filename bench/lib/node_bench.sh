# bench/lib/node_bench.sh - sourced by bench/node_get.sh and bench/node_get_cpu.sh
# (not a benchmark itself): a temp dir cleaned on exit with every server it
# started, a release `ron node` with the committed bench config, objects put
# through its gateway and the same bytes served by nginx
# (bench/config/nginx-get.conf.in). Needs ROOT, RON, NGINX, SERVER_CPU set.
# Capabilities (issue 5): the puts carry the node's operator capability
# (<data-dir>/operator.cap, Authorization: Bearer); the GETs stay anonymous,
# decided by the guard under bench/config/policy-bench.json (the shipped
# default policy with the public-read rate raised from 100/s per source to
# 1,000,000/s, so one load generator on 127.0.0.1 is not answered 429).
NB_POLICY="$ROOT/bench/config/policy-bench.json"
NB_AUTH_NOTE="Writes carry the node's operator capability (Bearer); GETs are anonymous under
\`bench/config/policy-bench.json\` (the shipped default policy, public-read rate raised from
100/s to 1,000,000/s per source so one load generator is not throttled)."

TMP=$(mktemp -d)
PIDS=
cleanup() {
    set +e
    for p in $PIDS; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
    return 0
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }

nb_check_tools() {
    [ -x "$RON" ] || { echo "build $RON first" >&2; exit 1; }
    for t in wrk h2load curl b3sum; do
        command -v $t >/dev/null || { echo "$t is not installed (make bench installs it)" >&2; exit 1; }
    done
    [ -x "$NGINX" ] || { echo "nginx is not installed at $NGINX" >&2; exit 1; }
}

# nb_start_node PROFILE: a node on SERVER_CPU with storage,index,gateway and
# the bench policy; sets <PROFILE>_PORT (its HTTP port), <PROFILE>_PID and
# <PROFILE>_CAP (the path of its operator.cap).
nb_start_node() {
    p=$1
    admin=$(free_port)
    http=$(free_port)
    mkdir -p "$TMP/$p"
    taskset -c "$SERVER_CPU" "$RON" node --profile "$p" --no-amnesia --data-dir "$TMP/$p" \
        --config "$ROOT/bench/config/node-gateway-bench.json" --admin "127.0.0.1:$admin" \
        --http "127.0.0.1:$http" --set services=storage,index,gateway --set log.level=warn \
        --set "policy_file=$NB_POLICY" >"$TMP/$p.log" 2>&1 &
    PIDS="$PIDS $!"
    eval "${p}_PID=$!"
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || {
        echo "ron node --profile $p did not become ready" >&2
        cat "$TMP/$p.log" >&2
        exit 1
    }
    if grep -q 'policy_file.*refused' "$TMP/$p.log"; then
        echo "ron node --profile $p refused $NB_POLICY:" >&2
        cat "$TMP/$p.log" >&2
        exit 1
    fi
    for _ in $(seq 100); do [ -s "$TMP/$p/operator.cap" ] && break; sleep 0.1; done
    [ -s "$TMP/$p/operator.cap" ] || { echo "no $TMP/$p/operator.cap" >&2; exit 1; }
    eval "${p}_PORT=$http"
    eval "${p}_CAP=\$TMP/\$p/operator.cap"
}

# nb_put_objects SIZES PROFILE...: one random object per size, put through
# each node's gateway with its operator capability (address checked against
# b3sum) and copied for nginx; lines "size address" in $TMP/objects.
nb_put_objects() {
    sizes=$1
    shift
    mkdir -p "$TMP/www/o" "$TMP/nginx"
    for size in $sizes; do
        head -c "$size" /dev/urandom >"$TMP/obj.$size"
        want="b3:$(b3sum --no-names "$TMP/obj.$size")"
        for p in "$@"; do
            eval "port=\$${p}_PORT cap=\$${p}_CAP"
            addr=$(curl -sS -H 'Expect:' -H "Authorization: Bearer $(cat "$cap")" \
                --data-binary "@$TMP/obj.$size" "http://127.0.0.1:$port/o" |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
            [ "$addr" = "$want" ] || { echo "bad address for $size: $addr" >&2; exit 1; }
        done
        cp "$TMP/obj.$size" "$TMP/www/o/$want"
        echo "$size $want" >>"$TMP/objects"
    done
}

# nb_start_nginx: nginx on SERVER_CPU serving $TMP/www; sets NGINX_H1, NGINX_H2, NGINX_PID.
nb_start_nginx() {
    NGINX_H1=$(free_port)
    NGINX_H2=$(free_port)
    sed -e "s|@DIR@|$TMP|g" -e "s|@H1@|$NGINX_H1|g" -e "s|@H2@|$NGINX_H2|g" \
        "$ROOT/bench/config/nginx-get.conf.in" >"$TMP/nginx/nginx.conf"
    taskset -c "$SERVER_CPU" "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" 2>"$TMP/nginx.err" &
    NGINX_PID=$!
    PIDS="$PIDS $NGINX_PID"
    first=$(awk 'NR==1{print $2}' "$TMP/objects")
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$NGINX_H1/o/$first" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$NGINX_H1/o/$first" >/dev/null || {
        echo "nginx did not start" >&2
        cat "$TMP/nginx.err" >&2
        exit 1
    }
}
