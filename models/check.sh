#!/bin/sh
# check.sh MODEL.pml EXPECT - verify a Promela model with spin and check the
# outcome. EXPECT is `pass` (no violation, complete search) or `fail` (spin
# must report at least one violation: used for the deliberately broken
# variants, so we know each check bites).
#
# Runs, in a private temp dir: `spin -a MODEL`; a safety search (assertions,
# invalid end states) with pan built with -DNOCLAIM; then, for each `ltl NAME`
# in the model (or a file it #includes), `./pan -a -f -N NAME` (acceptance
# cycles under weak fairness). A search that hits the depth bound counts as
# an error of the check, never as a pass.
set -eu

model=${1:?usage: check.sh MODEL.pml pass|fail}
expect=${2:?usage: check.sh MODEL.pml pass|fail}
case $expect in pass|fail) ;; *) echo "check.sh: EXPECT must be pass or fail" >&2; exit 2 ;; esac
model=$(cd "$(dirname "$model")" && pwd)/$(basename "$model")
depth=${SPIN_DEPTH:-200000}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/spin.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
cd "$tmp"

# spin runs cpp on the model, so #include "x.pml" resolves beside the model.
spin -a "$model" > spin.out 2>&1 || { cat spin.out; echo "check.sh: spin -a failed" >&2; exit 1; }
# pan.c is generated code: its warnings are not ours.
gcc -O2 -w -DNOCLAIM -o pan_safety pan.c
ltls=$(sed -n 's/^[[:space:]]*ltl[[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' \
       "$model" $(sed -n 's/^#include "\(.*\)"/\1/p' "$model" | sed "s|^|$(dirname "$model")/|"))

errors=0
incomplete=0
run() { # label, command...
    label=$1; shift
    "$@" > out.txt 2>&1 || true
    n=$(sed -n 's/.*errors: \([0-9]\{1,\}\).*/\1/p' out.txt | tail -1)
    if [ -z "$n" ]; then
        cat out.txt
        echo "check.sh: $label: no verdict from pan" >&2
        exit 1
    fi
    if grep -q "max search depth too small" out.txt; then
        incomplete=1
    fi
    states=$(sed -n 's/^ *\([0-9]\{1,\}\) states, stored.*/\1/p' out.txt | head -1)
    echo "$label: errors=$n states=$states"
    grep -E "assertion violated|acceptance cycle|invalid end state \(" out.txt | head -3 || true
    errors=$((errors + n))
}

run "safety" ./pan_safety -m"$depth"
for l in $ltls; do
    # A broken variant already caught needs no further search.
    [ "$expect" = fail ] && [ "$errors" -ne 0 ] && break
    [ -x pan_ltl ] || gcc -O2 -w -o pan_ltl pan.c
    run "ltl $l" ./pan_ltl -a -f -m"$depth" -N "$l"
done

if [ "$expect" = pass ]; then
    if [ "$errors" -ne 0 ]; then
        echo "FAIL: $(basename "$model"): spin found $errors violation(s), expected none" >&2
        exit 1
    fi
    if [ "$incomplete" -ne 0 ]; then
        echo "FAIL: $(basename "$model"): search depth $depth too small, verification incomplete" >&2
        exit 1
    fi
    echo "OK: $(basename "$model"): no violation (complete search)"
else
    if [ "$errors" -eq 0 ]; then
        echo "FAIL: $(basename "$model"): broken variant not reported as violating" >&2
        exit 1
    fi
    echo "OK: $(basename "$model"): violation found, as expected of a broken variant"
fi
