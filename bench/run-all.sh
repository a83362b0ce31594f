#!/bin/sh
# Run every benchmark script bench/<area>.sh against a release build and
# assemble BENCHMARKS.md from the sections they write to bench/results/.
# Usage: bench/run-all.sh BUILD_DIR [AREA...]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build/release}" && pwd); shift || true
areas=${*:-$(for s in "$root"/bench/*.sh; do b=${s##*/}; [ "$b" = run-all.sh ] || echo "${b%.sh}"; done)}
for a in $areas; do
    echo "bench: $a" >&2
    "$root/bench/$a.sh" "$build" || echo "bench: $a failed" >&2
done
"$root/bench/assemble.sh"
