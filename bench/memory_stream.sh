#!/bin/sh
# bench/memory_stream.sh BUILD_DIR - RssAnon growth of every node process
# while a 4 GiB object streams in and out, fast and at 1 MB/s
# (bench/memory_stream.py). Goal (issue 3): no process grows by more than
# 64 MiB. Writes bench/results/memory_stream.md.
# Env: STREAM_BYTES (4 GiB), SLOW_SECONDS (60).
set -eu
BUILD=${1:-build/release}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/results/memory_stream.md"
[ -x "$BUILD/ron" ] || { echo "memory_stream.sh: $BUILD/ron not built" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 2; }
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
python3 "$HERE/memory_stream.py" "$BUILD" >"$TMP"
grep -q '^phase=put-1MB/s' "$TMP" || { echo "memory_stream.py did not finish:" >&2; cat "$TMP" >&2; exit 1; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
{
    echo "## Memory while streaming a large object (RssAnon)"
    echo
    echo "Release \`ron node\` (macro profile, persistent store, storage + index + gateway);"
    echo "object of $(awk -v b="${STREAM_BYTES:-4294967296}" 'BEGIN{printf "%.1f GiB", b/1073741824}')"
    echo "through the gateway with curl; RssAnon of every node process sampled every 200 ms."
    echo "Slow phases run ${SLOW_SECONDS:-60} s of a 1 MB/s transfer (the whole object would take"
    echo "72 minutes); memory that followed the bytes in flight would grow ~1 MiB/s."
    echo "Uploads carry the node's operator capability (\`Authorization: Bearer\`, <data-dir>/operator.cap);"
    echo "downloads are anonymous under the shipped default policy."
    echo
    echo "| phase | process that grew most | before MiB | peak MiB | growth MiB | goal |"
    echo "|---|---|---:|---:|---:|---|"
    while read -r line; do
        case $line in
        phase=*)
            eval "$(echo "$line" | tr ' ' '\n' | sed 's/^/export /')"
            # shellcheck disable=SC2154
            echo "| $phase | $process | $(mib "$base_kib") | $(mib "$peak_kib") | **$(mib "$growth_kib")** | <= 64 MiB |"
            ;;
        esac
    done <"$TMP"
    echo
    echo "Measured $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)."
    [ -z "${PROVISIONAL:-}" ] || echo "Provisional: the machine was shared with other builds and tests while this ran."
} | tee "$OUT"
