#!/usr/bin/env bash
# Decode under contention, Tessera vs llama.cpp, interleaved in one run.
#
#   bench/contention.sh LLAMA_BIN_DIR ROUNDS "TESSERA_MODEL..." "LLAMA_MODEL..." [N] [REPS]
#
# For each round and engine: tg N at 1 and 2 threads on the idle machine, then tg N at 2
# threads while another process (`yes > /dev/null`) spins on one core — the situation of a
# phone or a small board where something else is always running. The issue-34 target is
# "-t 2 under contention ≥ 80 % of the idle 1-thread decode". LLAMA_BIN_DIR holds an
# already-built llama-bench (this repository never builds llama.cpp); pass "" to run Tessera
# alone. Output: llama-bench-style markdown tables on stdout, labelled.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1 rounds=$2 ours=$3 theirs=$4 n=${5:-64} reps=${6:-3}
swift build -c release --product bench >/dev/null
spinner=""
stop_spinner() {
    if [ -n "$spinner" ]; then kill "$spinner" 2>/dev/null || true; wait "$spinner" 2>/dev/null || true; fi
    spinner=""
}
trap stop_spinner EXIT
run_ours() {  # $1 threads
    # shellcheck disable=SC2086
    .build/release/bench $ours -t "$1" -p 0 -n "$n" -r "$reps"
}
run_theirs() {  # $1 model, $2 threads
    "$bin/llama-bench" -m "$1" -t "$2" -p 0 -n "$n" -r "$reps" -o md 2>/dev/null
}
echo "machine: $(nproc) cores, load before start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$rounds"); do
    for mode in idle contended; do
        if [ "$mode" = contended ]; then yes > /dev/null & spinner=$!; sleep 1; fi
        threads=$([ "$mode" = idle ] && echo 1,2 || echo 2)
        echo; echo "### round $round, $mode — Tessera (load $(cut -d' ' -f1 /proc/loadavg))"
        run_ours "$threads"
        if [ -n "$bin" ]; then
            for m in $theirs; do
                echo; echo "### round $round, $mode — llama.cpp $(basename "$m")"
                run_theirs "$m" "$threads"
            done
        fi
        stop_spinner
    done
done
