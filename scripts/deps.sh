#!/bin/sh
# Install the pinned Debian packages of deps/debian-packages.txt that are missing.
# Idempotent and silent when everything is present. Packages after the
# `[bench]` line are included only with --bench (make bench). `--check` only
# reports missing packages and version drift, and exits 1 if anything is missing.
set -eu
list="$(dirname "$0")/../deps/debian-packages.txt"
mode=install
bench=no
for a in "$@"; do
    case "$a" in
        --check) mode=check ;;
        --bench) bench=yes ;;
        *) echo "usage: scripts/deps.sh [--check] [--bench]" >&2; exit 2 ;;
    esac
done
missing=""
drift=""
while read -r name version; do
    case "$name" in
        ''|'#'*) continue ;;
        '[bench]') [ "$bench" = yes ] && continue || break ;;
    esac
    have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
    case "$have" in
        "install ok installed "*)
            [ "${have#install ok installed }" = "$version" ] || drift="$drift $name(${have#install ok installed }!=$version)" ;;
        *) missing="$missing $name" ;;
    esac
done < "$list"

if [ "$mode" = check ]; then
    [ -z "$drift" ] || echo "deps: version drift:$drift" >&2
    [ -z "$missing" ] || { echo "deps: missing:$missing" >&2; exit 1; }
    exit 0
fi
[ -n "$missing" ] || exit 0

echo "deps: installing$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: missing packages:$missing (run as root, or install them)" >&2; exit 1
    fi
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# Refresh the package index only when an install fails for lack of it.
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null ||
    { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null; }
