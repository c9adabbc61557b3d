#!/usr/bin/env bash
# Builds bench/kernels/kernel_count.c against the C kernels (every Sources/KernelsC file but the
# thread pool) into OUT; the remaining arguments go to the compiler (optimisation level, -D...).
# Used by count.sh and speed.sh; run from the repository root.
#   usage: bench/kernels/build.sh OUT [CFLAGS...]
set -euo pipefail
out=${1:?usage: bench/kernels/build.sh OUT [CFLAGS...]}; shift
src=Sources/KernelsC
files=()
for f in "$src"/*.c; do [ "$(basename "$f")" = threadpool.c ] || files+=("$f"); done
mkdir -p "$(dirname "$out")"
"${CC:-clang}" "$@" -I"$src" -I"$src/include" "${files[@]}" bench/kernels/kernel_count.c -lm -o "$out"
