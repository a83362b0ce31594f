#!/bin/sh
# Peer transport benchmark: single-stream throughput of 64 KiB OAP/1 data
# frames over one mutually authenticated TLS 1.3 session on loopback (both
# nodes in one process, one loop, one core: each byte is encrypted and
# decrypted on it), medians of >= 5 runs, against the AES-128-GCM speed of
# `openssl speed -evp` on the same core (the cipher the session negotiates,
# which bounds any TLS stream through one core).
# Usage: bench/peer.sh [build/release]  (writes bench/results/peer.md)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build/release}
case $build in /*) ;; *) build="$root/$build" ;; esac
bin="$build/bench_peer"
if [ ! -x "$bin" ]; then
    echo "bench/peer.sh: $bin not found (run: make release)" >&2
    exit 1
fi
out="$root/bench/results/peer.md"
mkdir -p "$(dirname "$out")"
pin=""
if command -v taskset >/dev/null 2>&1; then pin="taskset -c 1"; fi
runs=${RUNS:-7}
mib=${MIB:-512}
row=$($pin "$bin" "$runs" "$mib")
# openssl speed: bytes/s of AES-128-GCM on 16 KiB blocks (the TLS record size), per run.
speeds=""
i=0
while [ $i -lt 5 ]; do
    s=$($pin openssl speed -evp aes-128-gcm -bytes 16384 -seconds 1 2>/dev/null |
        awk '/^AES-128-GCM|^aes-128-gcm/ { v=$NF; sub(/k$/, "", v); print v * 1000 }')
    speeds="$speeds $s"
    i=$((i + 1))
done
gcm=$(echo "$speeds" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f", a[int((NR + 1) / 2)] / 1e9 }')
ours=$(echo "$row" | tail -1 | awk -F'|' '{ print $3 }' | awk '{ print $1 }')
ratio=$(awk -v a="$ours" -v b="$gcm" 'BEGIN { printf "%.2f", a / (b / 2) }')
{
    echo "## Peer transport (TLS 1.3, one stream)"
    echo
    echo "\`bench/peer.sh\` on $(uname -m), $(nproc) cores, $(date -u +%Y-%m-%d), release build."
    echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Provisional: the machine was shared with other builds and tests while this ran."
    echo
    echo "| what | median | runs |"
    echo "|---|---:|---|"
    echo "$row"
    echo "| \`openssl speed -evp aes-128-gcm -bytes 16384\` (encrypt only, one core) | $gcm GB/s | 5 x 1 s |"
    echo
    echo "Ratio (CPU time against CPU time, as \`openssl speed\` counts it): the session moves"
    echo "$ours GB per CPU second where AES-128-GCM alone allows $gcm / 2 for encrypting and"
    echo "decrypting every byte: **$ratio** of that ceiling (the rest is OAP/1 framing, credit,"
    echo "TLS records, the SSL's own record copies and the loopback socket). The wall-clock figure depends"
    echo "on how much of a core this process got on the shared machine."
} > "$out"
cat "$out"
