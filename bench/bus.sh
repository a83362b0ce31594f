#!/bin/sh
# bus.sh BUILD_DIR - kernel event bus benchmark (bench/bench_bus.c).
# Runs bench_bus RUNS (>= 5) times for 1, 4 and 8 subscriber threads, flat
# out and paced, and writes the medians as a markdown section to
# bench/results/bus.md (also printed). The publisher is pinned to CPU 0 and
# the subscribers to the other CPUs (round robin), so publisher and
# subscribers never share a core; on a 2-core machine all subscribers share
# CPU 1.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build/release}" && pwd)
runs=${RUNS:-5}
events=${EVENTS:-2000000}
paced_rate=${PACED_RATE:-250000}
paced_events=${PACED_EVENTS:-500000}
bin=$build/bench_bus
out=$root/bench/results/bus.md
[ -x "$bin" ] || { echo "bus.sh: $bin not built (ninja -C $build bench_bus)" >&2; exit 1; }
[ "$runs" -ge 5 ] || { echo "bus.sh: RUNS must be >= 5" >&2; exit 2; }

ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then
    subcpus=$(seq -s, 1 $((ncpu - 1)))
else
    subcpus=0
fi

# median FILE KEY: median of KEY=value over the lines of FILE
median() {
    sed -n "s/.* $2=\([0-9.]*\).*/\1/p" "$1" | sort -g |
        awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit} if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}
fmt_m() { awk -v x="$1" 'BEGIN { if (x=="n/a") print x; else printf "%.2f M", x/1e6 }'; }
fmt_us() { awk -v x="$1" 'BEGIN { if (x=="n/a") print x; else if (x < 10000) printf "%.2f µs", x/1e3; else if (x < 1e6) printf "%.0f µs", x/1e3; else printf "%.1f ms", x/1e6 }'; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
for subs in 1 4 8; do
    for i in $(seq "$runs"); do
        "$bin" --subs "$subs" --events "$events" --pub-cpu 0 --sub-cpus "$subcpus" >> "$tmp/flat$subs"
        "$bin" --subs "$subs" --events "$paced_events" --rate "$paced_rate" \
            --pub-cpu 0 --sub-cpus "$subcpus" >> "$tmp/paced$subs"
    done
done
# The goal, directly: one subscriber, publisher paced at 2 M events/s.
for i in $(seq "$runs"); do
    "$bin" --subs 1 --events 4000000 --rate 2000000 --pub-cpu 0 --sub-cpus "$subcpus" >> "$tmp/goal"
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## Kernel event bus (ron-kernel)"
    echo
    echo "\`bench/bus.sh $1\`: \`bench_bus\` (bench/bench_bus.c), release build, default capacity"
    echo "4096, medians of $runs runs, $(date -u +%Y-%m-%d). Publisher pinned to CPU 0, subscribers"
    echo "to CPUs $subcpus; each subscriber is a thread polling its own cursor. Load average"
    echo "at the end of the run: $load (shared machine: compare ratios)."
    echo
    echo "Flat out ($events events): the bus is lossy, so a subscriber slower than the publisher"
    echo "loses the oldest events (counted in \`bus_overflow_dropped_total\`). *Delivered/s* is"
    echo "events received per subscriber per second (the slowest subscriber); latency is"
    echo "publish -> receive, sampled every 8th event."
    echo
    echo "| subscribers | published/s | delivered/s (slowest sub) | all subs delivered/s | lost | p50 | p99 | vs goal 2 M/s |"
    echo "|---|---|---|---|---|---|---|---|"
    for subs in 1 4 8; do
        f=$tmp/flat$subs
        d=$(median "$f" deliver_eps_min)
        echo "| $subs | $(fmt_m "$(median "$f" publish_eps)") | $(fmt_m "$d") |" \
             "$(fmt_m "$(median "$f" deliver_eps_sum)") | $(median "$f" lost_pct) % |" \
             "$(fmt_us "$(median "$f" p50_ns)") | $(fmt_us "$(median "$f" p99_ns)") |" \
             "$([ "$subs" = 1 ] && awk -v d="$d" 'BEGIN { printf "%.2fx", d/2e6 }' || echo "-") |"
    done
    echo
    echo "Paced at $paced_rate events/s ($paced_events events): hand-off latency when subscribers keep up."
    echo
    echo "| subscribers | delivered/s (slowest sub) | lost | p50 | p99 |"
    echo "|---|---|---|---|---|"
    for subs in 1 4 8; do
        f=$tmp/paced$subs
        echo "| $subs | $(fmt_m "$(median "$f" deliver_eps_min)") | $(median "$f" lost_pct) % |" \
             "$(fmt_us "$(median "$f" p50_ns)") | $(fmt_us "$(median "$f" p99_ns)") |"
    done
    echo
    f=$tmp/goal
    echo "Goal check, one subscriber, publisher paced at 2 M events/s (4 M events):"
    echo "published $(fmt_m "$(median "$f" publish_eps)")/s, delivered $(fmt_m "$(median "$f" deliver_eps_min)")/s,"
    echo "lost $(median "$f" lost_pct) %, p50 $(fmt_us "$(median "$f" p50_ns)"), p99 $(fmt_us "$(median "$f" p99_ns)")."
    echo
    echo "Goal (issue 2): >= 2 M events/s with one subscriber; the Rust implementation's target"
    echo "was 1 M. p99 in milliseconds means a subscriber thread was preempted (more subscribers"
    echo "than cores, or other load); a preemption longer than capacity / rate loses events."
} > "$tmp/bus.md"
mkdir -p "$root/bench/results"
cp "$tmp/bus.md" "$out"
cat "$out"
