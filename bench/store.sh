#!/bin/sh
# Object store benchmark (svc-storage file backend), same machine, same run:
#  1. ingest: a 1 GiB streamed put (hash + outboard + fdatasync + rename +
#     directory fsync + LMDB commit) against the disk floor
#     `dd if=<same file> of=<data dir>/x bs=1M count=1024 conv=fsync`;
#  2. amnesia ingest: the same put into the RAM store against
#     `b3sum --num-threads 1` on the same file (page cache);
#  3. latency: 1 MiB durable put p50/p95 against the same syscalls done by
#     hand in C (write a new 1 MiB file, fdatasync, rename, fsync the dir).
# Medians of >= 5 interleaved runs. The source file is in the page cache.
# Usage: bench/store.sh [build/release]  (writes bench/results/store.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_store"
[ -x "$bin" ] || { echo "bench/store.sh: $bin not found (run: make release)" >&2; exit 1; }
out="$root/bench/results/store.md"
mkdir -p "$(dirname "$out")"
runs=${RUNS:-5}
mib=${STORE_MIB:-1024}
nlat=${LAT_N:-200}
# the data dir must be on the disk under test, not tmpfs
tmp=$(mktemp -d "${STORE_BENCH_DIR:-$root/build}/ron-bench-store.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
head -c $((mib * 1048576)) /dev/urandom > "$tmp/src"
cat "$tmp/src" > /dev/null
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }
: > "$tmp/ram"; : > "$tmp/b3";
: > "$tmp/put"; : > "$tmp/dd"; : > "$tmp/lput"; : > "$tmp/lfloor"
i=0
while [ $i -lt "$runs" ]; do
    rm -rf "$tmp/data"; mkdir "$tmp/data"; sync
    t0=$(date +%s.%N)
    dd if="$tmp/src" of="$tmp/data/x" bs=1M count="$mib" conv=fsync status=none
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2-$1}' >> "$tmp/dd"
    rm -f "$tmp/data/x"; sync
    "$bin" put "$tmp/src" "$tmp/data/store" | cut -d' ' -f1 >> "$tmp/put"
    "$bin" ram "$tmp/src" | cut -d' ' -f1 >> "$tmp/ram"
    t0=$(date +%s.%N)
    b3sum --num-threads 1 "$tmp/src" > /dev/null
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2-$1}' >> "$tmp/b3"
    rm -rf "$tmp/data"; mkdir "$tmp/data"; sync
    "$bin" lat "$tmp/data/store" "$nlat" > "$tmp/lat"
    awk '$1=="put"{print $3}' "$tmp/lat" >> "$tmp/lput"
    awk '$1=="floor"{print $3}' "$tmp/lat" >> "$tmp/lfloor"
    i=$((i + 1))
done
put=$(median < "$tmp/put"); dd=$(median < "$tmp/dd")
ram=$(median < "$tmp/ram"); b3=$(median < "$tmp/b3")
lput=$(median < "$tmp/lput"); lfloor=$(median < "$tmp/lfloor")
{
    echo "## Object store (svc-storage, file backend)"
    echo
    echo "\`bench/store.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "data dir on $(df -T "$tmp" | awk 'NR==2{print $2}') ($(df "$tmp" | awk 'NR==2{print $1}')),"
    echo "medians of $runs interleaved runs. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| measure | store | floor | ratio |"
    echo "|---|---|---|---|"
    echo "$mib $put $dd" | awk '{printf "| %d MiB streamed put, s (MiB/s) | %.3f (%.0f) | %.3f (%.0f) `dd conv=fsync` | %.2fx floor throughput |\n", $1, $2, $1/$2, $3, $1/$3, $3/$2}'
    echo "$mib $ram $b3" | awk '{printf "| %d MiB streamed put, RAM store (amnesia), s (MiB/s) | %.3f (%.0f) | %.3f (%.0f) `b3sum --num-threads 1` | %.2fx b3sum throughput |\n", $1, $2, $1/$2, $3, $1/$3, $3/$2}'
    echo "$lput $lfloor" | awk -v n="$nlat" '{printf "| 1 MiB durable put p95, us (%d puts/run) | %.0f | %.0f write+fdatasync+rename+fsync dir | %.2fx floor |\n", n, $1, $2, $1/$2}'
    echo
    echo "The put includes BLAKE3 hashing of every byte, the outboard file, its"
    echo "fdatasync, both renames, the directory fsync and one LMDB write"
    echo "transaction (fsync'd); the floor does only the data file's syscalls."
    echo "Per-run figures (s): put $(tr '\n' ' ' < "$tmp/put"); dd $(tr '\n' ' ' < "$tmp/dd");"
    echo "RAM put $(tr '\n' ' ' < "$tmp/ram"); b3sum $(tr '\n' ' ' < "$tmp/b3");"
    echo "1 MiB p95 (us): put $(tr '\n' ' ' < "$tmp/lput"); floor $(tr '\n' ' ' < "$tmp/lfloor")."
} > "$out"
cat "$out"
