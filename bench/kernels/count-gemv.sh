#!/usr/bin/env bash
# Instructions per weight of the A8 GEMV (tsr_qgemv_i8 and everything it calls), counted by
# callgrind on bench/kernels/gemv_count.c: N GEMVs of each decode shape of the demo model.
# Deterministic, so it can compare kernel variants on a busy machine; a timing run has to
# confirm what the counts suggest.   usage: [BITS="2 3 4 8"] bench/kernels/count-gemv.sh [N=200]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-200}
out=.build/gemv-count
mkdir -p "$out"
cc=${CC:-clang}
src=Sources/KernelsC
files=()
for f in "$src"/*.c; do [ "$(basename "$f")" = threadpool.c ] || files+=("$f"); done
"$cc" -O2 -I"$src" -I"$src/include" "${files[@]}" bench/kernels/gemv_count.c -lm -o "$out/gemv_count"
printf '%-4s %-5s %-10s %14s %12s\n' bits group shape "Ir (gemv)" "Ir/weight"
for bits in ${BITS:-2 3 4 8}; do
    for shape in "576 1536" "1536 576"; do
        set -- $shape
        valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" --toggle-collect=tsr_qgemv_i8 \
            "$out/gemv_count" "$bits" 64 "$1" "$2" "$n" >/dev/null 2>"$out/cg.log"
        ir=$(callgrind_annotate "$out/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        printf '%-4s %-5s %-10s %14s %12.4f\n' "$bits" 64 "${1}x${2}" "$ir" "$(echo "$ir / ($n * $1 * $2)" | bc -l)"
    done
done
