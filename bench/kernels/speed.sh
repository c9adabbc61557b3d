#!/usr/bin/env bash
# Wall time per weight of the A8 GEMV (tsr_qgemv_i8, group 64, per-block activations) on one
# thread: bench/kernels/kernel_count.c built with clang -O3, N calls per shape, three runs each
# (all printed; compare medians). Small shapes repeat over weights that stay in L2 (the kernel's
# compute speed); large ones stream from DRAM as decode does. Run on an idle machine, and run it
# at two commits to compare kernel variants.
#   usage: [BITS="2 3 4 6 8"] [SHAPES="ROWSxCOLSxN ..."] bench/kernels/speed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.build/kernel-speed
bench/kernels/build.sh "$out/kernel_speed" -O3
printf '%-4s %-12s %-8s %s\n' bits shape path "ns per weight (3 runs)"
for bits in ${BITS:-2 3 4 6 8}; do
    for shape in ${SHAPES:-576x1536x20000 1536x576x20000 16384x4096x40}; do
        IFS=x read -r rows cols n <<< "$shape"
        runs=() path=""
        for _ in 1 2 3; do
            line=$("$out/kernel_speed" gemv "$bits" 64 "$rows" "$cols" 1 "$n")
            path=$(sed -E 's/.*path ([a-z0-9]+),.*/\1/' <<< "$line")
            runs+=("$(sed -E 's/.*, ([0-9.]+) ns per weight.*/\1/' <<< "$line")")
        done
        printf '%-4s %-12s %-8s %s\n' "$bits" "${rows}x${cols}" "$path" "${runs[*]}"
    done
done
