#!/bin/sh
# Issue 4 target: two nodes on loopback, single-stream verified transfer of
# 1 GiB over TLS into a macronode >= 0.8x the disk floor (bench/net_macro.py:
# real `ron node` processes; provider A a micronode holding the object in
# RAM; each fetch into a fresh macronode B, whose overlay process fetches and
# verifies, hands the pieces to its storage process over the unix-socket bus,
# and storage writes the file partial and commits the object durably). The
# floor, in the same run and on the same directory: `dd if=/dev/zero
# of=<B's data dir>/ddfile bs=1M count=1024 conv=fsync`. Two ways: `ron pin`
# (the primary figure: fetch into the store, answered once committed; the
# row is skipped for a build whose pin does not fetch an absent object) and
# `ron get` (delivery included, stdout to /dev/null). Medians of >= 5 runs,
# CPU seconds per GiB of B's overlay, storage and app processes.
# Usage: bench/net_macro.sh [build/release]  (writes bench/results/net_macro.md)
# Env: MIB (1024), RUNS (5); BEFORE_BUILD=<another build dir> adds its `ron`,
#      run interleaved with this one (before/after on the same machine state);
#      PERF_DIR=<dir> adds one profiled pin per build (PERF_HOW=get: a get;
#      perf record -g on B's overlay and storage processes); BENCH_TIMEOUT (3600 s) bounds the run;
#      MORE_BINS="tag=/path/to/ron ..." adds more binaries to the interleaving.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
[ -x "$build/ron" ] || { echo "bench/net_macro.sh: $build/ron not found (run: make release)" >&2; exit 1; }
bins=""
if [ -n "${BEFORE_BUILD:-}" ]; then
    [ -x "$BEFORE_BUILD/ron" ] || { echo "bench/net_macro.sh: $BEFORE_BUILD/ron not found" >&2; exit 1; }
    bins="before=$BEFORE_BUILD/ron"
fi
bins="$bins ${MORE_BINS:-} this=$build/ron"
out=${NET_MACRO_OUT:-"$root/bench/results/net_macro.md"}
mkdir -p "$(dirname "$out")"
# the nodes' data directories on the disk under test (not tmpfs), removed at exit
tmp=$(mktemp -d "$root/build/ron-bench-netmacro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
load=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086
body=$(TMPDIR="$tmp" python3 "$root/bench/net_macro.py" "${MIB:-1024}" "${RUNS:-5}" $bins)
{
    echo "## Network end to end: 1 GiB into a macronode against the disk floor (provisional)"
    echo
    echo "\`bench/net_macro.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build."
    echo "Load average at the start: $load. Provisional: the machine is shared with other"
    echo "engineers' builds and tests."
    echo
    echo "$body"
} > "$out"
cat "$out"
