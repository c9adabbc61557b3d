#!/usr/bin/env bash
# Interleaved throughput comparison, Tessera vs llama.cpp, on the same machine in one run.
#
#   bench/compare-llamacpp.sh LLAMA_BIN_DIR ROUNDS "TESSERA_MODEL..." "LLAMA_MODEL..." [THREADS] [P] [N] [REPS]
#
# LLAMA_BIN_DIR holds an already-built llama-bench (this repository never builds llama.cpp).
# Each round runs Tessera's bench then llama-bench (A, B, A, B, ...), so slow drifts of a
# shared machine hit both; quote the median over rounds. Output: one markdown table per
# round and engine, in llama-bench's columns, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 rounds=$2 ours=$3 theirs=$4 threads=${5:-1,2} p=${6:-512} n=${7:-128} reps=${8:-5}
[ -x "$bin/llama-bench" ] || { echo "compare: no llama-bench in $bin" >&2; exit 1; }
swift build -c release --product bench >/dev/null
echo "machine: $(nproc) cores, load before start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$rounds"); do
    echo; echo "### round $round — Tessera (load $(cut -d' ' -f1 /proc/loadavg))"
    # shellcheck disable=SC2086
    .build/release/bench $ours -t "$threads" -p "$p" -n "$n" -r "$reps"
    for m in $theirs; do
        echo; echo "### round $round — llama.cpp $(basename "$m") (load $(cut -d' ' -f1 /proc/loadavg))"
        "$bin/llama-bench" -m "$m" -t "$threads" -p "$p" -n "$n" -r "$reps" -o md 2>/dev/null
    done
done
