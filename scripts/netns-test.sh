#!/bin/sh
# Run the multi-host suite tests/netns/test_*.py (`make netns-test`): real
# nodes, each in its own network namespace, behind a router namespace that
# adds delay (tests/tools/ron-delayrelay) and loss (nftables); see
# docs/runbooks/netns-test.md. Needs root; without root or network
# namespaces it prints why and exits 0 (skipped), since it is not part of
# `make test`. Each test runs under a time limit; exit 1 if any failed.
# usage: scripts/netns-test.sh [BUILD_DIR (default build/asan)] [TEST_NAME_SUBSTRING]
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/asan}
filter=${2:-}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
per_test_timeout=${RON_NETNS_TIMEOUT:-600}

if [ "$(id -u)" -ne 0 ]; then
    echo "netns-test: SKIPPED: needs root (network namespaces, TUN, nftables): sudo make netns-test"
    exit 0
fi
for tool in ip nft python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "netns-test: SKIPPED: '$tool' is not installed (scripts/deps.sh installs it)"
        exit 0
    fi
done
probe="ronprobe$$"
if ! ip netns add "$probe" 2>/dev/null; then
    echo "netns-test: SKIPPED: network namespaces are unavailable here (ip netns add failed)"
    exit 0
fi
ip netns del "$probe"
if [ ! -c /dev/net/tun ]; then
    echo "netns-test: SKIPPED: /dev/net/tun is missing (the delay relay needs TUN)"
    exit 0
fi
for bin in ron ron-delayrelay; do
    if [ ! -x "$build/$bin" ]; then
        echo "netns-test: $build/$bin is missing: build it first (ninja -C $build ron ron-delayrelay)" >&2
        exit 1
    fi
done

export RON_BIN="$build/ron" RON_RELAY="$build/ron-delayrelay" RON_SOURCE_DIR="$root"
pass=0 fail=0 skip=0 failed=""
for t in "$root"/tests/netns/test_*.py; do
    name=$(basename "$t" .py)
    case "$name" in *"$filter"*) ;; *) continue ;; esac
    start=$(date +%s)
    out=$(timeout -k 10 "$per_test_timeout" python3 "$t" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q '^SKIP:'; then
        skip=$((skip + 1))
        echo "netns-test: SKIP $name ($(printf '%s\n' "$out" | grep '^SKIP:' | head -1))"
    elif [ $rc -eq 0 ]; then
        pass=$((pass + 1))
        echo "netns-test: PASS $name (${secs} s)"
    else
        fail=$((fail + 1))
        failed="$failed $name"
        echo "netns-test: FAIL $name (exit $rc, ${secs} s); output:"
        printf '%s\n' "$out" | tail -40 | sed 's/^/    /'
    fi
done
echo "netns-test: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || { echo "netns-test: failed:$failed"; exit 1; }
