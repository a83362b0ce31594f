#!/bin/sh
# Object store benchmark (svc-storage), same machine, same run:
#  1. ingest: a 1 GiB streamed put (hash + outboard + fdatasync + rename +
#     directory fsync + LMDB commit) against the disk floor
#     `dd if=<same file> of=<data dir>/x bs=1M count=1024 conv=fsync`;
#  2. amnesia ingest: the same put into the RAM store against
#     `b3sum --num-threads 1` on the same file (page cache; both read it
#     through a mapping);
#  3. latency: 1 MiB durable put p50/p95 against the same syscalls done by
#     hand in C (write a new 1 MiB file, fdatasync, rename, fsync the dir),
#     puts and floor rounds alternating;
#  4. local reads: 1 MiB get p50/p95 through the verified reader against
#     open + pread of the object's file, and through the storage service
#     over ron-bus (Unix sockets, sto_client_get); warm page cache.
# Medians of >= 5 interleaved runs. The source file is in the page cache.
# With BEFORE_BUILD=<another build dir> (e.g. of the commit before a change),
# its bench_store runs the same steps in the same runs, interleaved, and a
# before/after table is added.
# Usage: bench/store.sh [build/release]  (writes bench/results/store.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_store"
[ -x "$bin" ] || { echo "bench/store.sh: $bin not found (run: make release)" >&2; exit 1; }
before=${BEFORE_BUILD:+$BEFORE_BUILD/bench_store}
[ -z "$before" ] || [ -x "$before" ] || { echo "bench/store.sh: $before not found" >&2; exit 1; }
out=${STORE_OUT:-"$root/bench/results/store.md"}
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
for f in ram b3 put dd lput lfloor lput50 lfloor50 get gfloor get50 gfloor50 bus bus50; do
    : > "$tmp/$f"
    : > "$tmp/B$f"
done
# one round of the store's steps with bench_store $1, figures to files prefixed $2
store_round() {
    rm -rf "$tmp/data"; mkdir "$tmp/data"; sync
    "$1" put "$tmp/src" "$tmp/data/store" | cut -d' ' -f1 >> "$tmp/${2}put"
    "$1" ram "$tmp/src" | cut -d' ' -f1 >> "$tmp/${2}ram"
    rm -rf "$tmp/data"; mkdir "$tmp/data"; sync
    "$1" lat "$tmp/data/store" "$nlat" > "$tmp/lat"
    awk '$1=="put"{print $3}' "$tmp/lat" >> "$tmp/${2}lput"
    awk '$1=="floor"{print $3}' "$tmp/lat" >> "$tmp/${2}lfloor"
    awk '$1=="put"{print $2}' "$tmp/lat" >> "$tmp/${2}lput50"
    awk '$1=="floor"{print $2}' "$tmp/lat" >> "$tmp/${2}lfloor50"
    rm -rf "$tmp/data"; mkdir "$tmp/data"
    "$1" get "$tmp/data/gstore" "$nlat" > "$tmp/g"
    "$1" getbus "$tmp/data/bstore" "$nlat" >> "$tmp/g"
    awk '$1=="get"{print $3}' "$tmp/g" >> "$tmp/${2}get"
    awk '$1=="get"{print $2}' "$tmp/g" >> "$tmp/${2}get50"
    awk '$1=="floor"{print $3}' "$tmp/g" >> "$tmp/${2}gfloor"
    awk '$1=="floor"{print $2}' "$tmp/g" >> "$tmp/${2}gfloor50"
    awk '$1=="getbus"{print $3}' "$tmp/g" >> "$tmp/${2}bus"
    awk '$1=="getbus"{print $2}' "$tmp/g" >> "$tmp/${2}bus50"
}
i=0
while [ $i -lt "$runs" ]; do
    rm -rf "$tmp/data"; mkdir "$tmp/data"; sync
    t0=$(date +%s.%N)
    dd if="$tmp/src" of="$tmp/data/x" bs=1M count="$mib" conv=fsync status=none
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2-$1}' >> "$tmp/dd"
    rm -f "$tmp/data/x"; sync
    t0=$(date +%s.%N)
    b3sum --num-threads 1 "$tmp/src" > /dev/null
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.3f\n", $2-$1}' >> "$tmp/b3"
    store_round "$bin" ""
    [ -z "$before" ] || store_round "$before" B
    i=$((i + 1))
done
m() { median < "$tmp/$1"; }
# before/after row: label, file, unit scale note; ratio = after / before
ba() { echo "$(m "B$2") $(m "$2")" | awk -v l="$1" '{printf "| %s | %.3f | %.3f | %.2fx |\n", l, $1, $2, $2/$1}'; }
list() { tr '\n' ' ' < "$tmp/$1"; }
{
    echo "## Object store (svc-storage)"
    echo
    echo "\`bench/store.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build,"
    echo "data dir on $(df -T "$tmp" | awk 'NR==2{print $2}') ($(df "$tmp" | awk 'NR==2{print $1}')),"
    echo "medians of $runs interleaved runs. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| measure | store | floor | ratio |"
    echo "|---|---|---|---|"
    echo "$mib $(m put) $(m dd)" | awk '{printf "| %d MiB streamed put, s (MiB/s) | %.3f (%.0f) | %.3f (%.0f) `dd conv=fsync` | %.2fx floor throughput |\n", $1, $2, $1/$2, $3, $1/$3, $3/$2}'
    echo "$mib $(m ram) $(m b3)" | awk '{printf "| %d MiB streamed put, RAM store (amnesia), s (MiB/s) | %.3f (%.0f) | %.3f (%.0f) `b3sum --num-threads 1` | %.2fx b3sum throughput |\n", $1, $2, $1/$2, $3, $1/$3, $3/$2}'
    echo "$(m lput) $(m lfloor) $(m lput50) $(m lfloor50)" | awk -v n="$nlat" '{printf "| 1 MiB durable put p95 (p50), us (%d puts/run) | %.0f (%.0f) | %.0f (%.0f) write+fdatasync+rename+fsync dir | %.2fx floor |\n", n, $1, $3, $2, $4, $1/$2}'
    echo "$(m get) $(m gfloor) $(m get50) $(m gfloor50)" | awk -v n="$nlat" '{printf "| 1 MiB get p95 (p50), verified reader, us (%d gets/run) | %.0f (%.0f) | %.0f (%.0f) open+pread, unverified | %.2fx floor; goal <= 2000 us |\n", n, $1, $3, $2, $4, $1/$2}'
    echo "$(m bus) $(m bus50)" | awk -v n="$nlat" '{printf "| 1 MiB get p95 (p50), storage service over ron-bus, us (%d gets/run) | %.0f (%.0f) | - | goal <= 2000 us |\n", n, $1, $2}'
    echo
    echo "The put includes BLAKE3 hashing of every byte, the outboard, the object"
    echo "file's fdatasync, its rename, the directory fsync and one LMDB write"
    echo "transaction (run beside the directory fsync); the floor does only the"
    echo "file's syscalls. The RAM store and b3sum both read the source through a"
    echo "mapping. Gets over ron-bus: service and client in one process on one"
    echo "loop, Unix-socket transport, 4 requests of 256 KiB per object."
    echo "Per-run figures (s): put $(list put); dd $(list dd);"
    echo "RAM put $(list ram); b3sum $(list b3);"
    echo "1 MiB put p95 (us): put $(list lput); floor $(list lfloor);"
    echo "1 MiB get p95 (us): reader $(list get); floor $(list gfloor); ron-bus $(list bus)."
    if [ -n "$before" ]; then
        echo
        echo "### Before/after, same runs, interleaved"
        echo
        echo "Before: \`$before\` (the same bench_store.c built against the"
        echo "store before the change); after: this build. Medians of the same $runs runs; the floors"
        echo "above were measured beside both. Lower is better; ratio = after / before."
        echo
        echo "| measure | before | after | after/before |"
        echo "|---|---|---|---|"
        ba "$mib MiB streamed put, s" put
        ba "$mib MiB RAM-store put, s (b3sum: $(m b3))" ram
        ba "1 MiB durable put p95, us" lput
        ba "1 MiB durable put p50, us" lput50
        ba "1 MiB put floor p95 (beside each), us" lfloor
        ba "1 MiB get p95, verified reader, us" get
        ba "1 MiB get p95, over ron-bus, us" bus
        ba "1 MiB get p50, over ron-bus, us" bus50
        echo
        echo "Before, put p95 / its floor p95: $(echo "$(m Blput) $(m Blfloor)" | awk '{printf "%.2fx", $1/$2}');"
        echo "RAM put vs b3sum: $(echo "$(m Bram) $(m b3)" | awk '{printf "%.2fx", $2/$1}') before,"
        echo "$(echo "$(m ram) $(m b3)" | awk '{printf "%.2fx", $2/$1}') after (throughput ratios)."
        echo "Per-run before figures: put $(list Bput); RAM put $(list Bram);"
        echo "1 MiB put p95 $(list Blput); floor $(list Blfloor); ron-bus get p95 $(list Bbus)."
    fi
} > "$out"
cat "$out"
