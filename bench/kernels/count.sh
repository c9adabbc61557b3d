#!/usr/bin/env bash
# Instructions per weight (per token) of the A8 GEMV or GEMM (tsr_qgemv_i8 / tsr_qgemm_i8 and
# everything they call), counted by callgrind on bench/kernels/kernel_count.c: N calls for each of
# the demo model's shapes 576×1536 and 1536×576, group 64 (the GEMM with T tokens per call).
# Deterministic, so it can compare kernel variants on a busy machine; a timing run has to confirm
# what the counts suggest.
#   usage: [BITS="2 3 4 6 8"] [T=64] [CFLAGS=...] bench/kernels/count.sh gemv|gemm [N]   (N: 200 GEMVs, 2 GEMMs)
# CFLAGS is passed to the compiler (e.g. CFLAGS=-DNT_GEMM=4 for another GEMM token tile) and names
# the build directory, so variants can be counted side by side.
set -euo pipefail
cd "$(dirname "$0")/../.."
kernel=${1:?usage: bench/kernels/count.sh gemv|gemm [N]}
case "$kernel" in
    gemv) n=${2:-200}; T=1 ;;
    gemm) n=${2:-2}; T=${T:-64} ;;
    *) echo "count.sh: the kernel is gemv or gemm, got $kernel" >&2; exit 2 ;;
esac
out=.build/kernel-count${CFLAGS:+-$(echo "$CFLAGS" | tr -dc "A-Za-z0-9_=")}
# shellcheck disable=SC2086
bench/kernels/build.sh "$out/kernel_count" -O2 ${CFLAGS:-}
printf '%-4s %-5s %-10s %-4s %14s %16s\n' bits group shape T "Ir ($kernel)" "Ir/weight/token"
for bits in ${BITS:-2 3 4 6 8}; do
    for shape in "576 1536" "1536 576"; do
        set -- $shape
        valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" --toggle-collect="tsr_q${kernel}_i8" \
            "$out/kernel_count" "$kernel" "$bits" 64 "$1" "$2" "$T" "$n" >/dev/null 2>"$out/cg.log"
        ir=$(callgrind_annotate "$out/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
        printf '%-4s %-5s %-10s %-4s %14s %16.4f\n' "$bits" 64 "${1}x${2}" "$T" "$ir" "$(echo "$ir / ($n * $T * $1 * $2)" | bc -l)"
    done
done
