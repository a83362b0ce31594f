#!/bin/sh
# Run every libFuzzer target in BUILD_DIR for SECONDS each, starting from the
# committed corpus (tests/corpus/<name>/); new inputs go to build/fuzz-corpus.
set -eu
dir=$1; secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
for f in "$dir"/fuzz_*; do
    [ -x "$f" ] || continue
    name=${f##*/fuzz_}
    out="$dir/../fuzz-corpus/$name"; mkdir -p "$out"
    echo "fuzz: $name for ${secs}s"
    "$f" -max_total_time="$secs" -print_final_stats=1 "$out" "$root/tests/corpus/$name"
done
