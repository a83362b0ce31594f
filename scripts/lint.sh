#!/bin/sh
# Static checks of DESIGN.md §12: cppcheck over src/ (CTest `cppcheck`), and
# with --tidy also clang-tidy (bugprone, cert) over the files of a build's
# compile_commands.json (`make lint`).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cppcheck --quiet --enable=warning,portability,performance --std=c11 --error-exitcode=1 \
    --inline-suppr -I "$root/src/common" --suppress=missingIncludeSystem "$root/src"
[ "${1:-}" = "--tidy" ] || exit 0
build=${2:-$root/build/asan}
files=$(find "$root/src" -name '*.c' ! -name 'fuzz_*' ! -name 'bench_*')
# Off: easily-swappable-parameters (style), err33-c (printf results),
# reserved-identifier/dcl37/dcl51 (our prefix__name helpers), and
# implicit-widening-of-multiplication-result (its every hit here was a
# product of small compile-time constants).
# shellcheck disable=SC2086
clang-tidy-14 -p "$build" --quiet --warnings-as-errors='*' \
    --checks='-*,bugprone-*,cert-*,-bugprone-easily-swappable-parameters,-bugprone-implicit-widening-of-multiplication-result,-cert-err33-c,-bugprone-reserved-identifier,-cert-dcl37-c,-cert-dcl51-cpp' \
    $files
