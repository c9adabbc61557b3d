#!/usr/bin/env bash
# Choosing calibration settings without the test set (issue 36).
#
# Every candidate calibrates on valid-a, the first 3,200 lines of WikiText-2 valid (227,096
# tokens of the demo model), and is scored on valid-b, the lines after them (38,893 tokens, 19
# windows of 2048): text no calibration window touches, from other articles than the test set.
# Compare candidates on valid-b only; score the one you report on the test set once (-t).
#
#   bench/select-calibration.sh [-b BIN] [-m MODEL] OUTDIR NAME "calibrate args" [NAME "args"]...
#   bench/select-calibration.sh [-b BIN] [-m MODEL] -t OUTDIR NAME     # NAME on the whole test set
#
# Finished candidates are reused (delete OUTDIR/NAME.gguf to redo one). Each calibration's wall
# time and peak RSS come from /usr/bin/time; run on an idle machine, one candidate at a time.
# Output: OUTDIR/NAME.{gguf,cal.log,validb.log[,test.log]} and one table row per candidate on
# stdout: name, wall s, peak RSS kB, valid-b ppl, ratio to the model's own valid-b ppl.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="" MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf TEST=0
while getopts "b:m:t" opt; do
  case $opt in
    b) BIN=$OPTARG ;;
    m) MODEL=$OPTARG ;;
    t) TEST=1 ;;
    *) echo "usage: see the header of $0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "select-calibration: give OUTDIR and at least one NAME" >&2; exit 2; }
OUT=$1; shift
mkdir -p "$OUT"
if [ -z "$BIN" ]; then swift build -c release --product tessera >/dev/null; BIN=.build/release/tessera; fi

VALID=data/wikitext2/wiki.valid.raw
head -n 3200 "$VALID" > "$OUT/valid-a.raw"
tail -n +3201 "$VALID" > "$OUT/valid-b.raw"

ppl() {  # ppl MODEL FILE LOG → prints the perplexity
  [ -s "$3" ] && grep -q '^ppl:' "$3" || "$BIN" ppl "$1" --file "$2" --convention gptq --ctx 2048 -t 2 > "$3" 2>/dev/null
  sed -n 's/^ppl: \([0-9.]*\).*/\1/p' "$3"
}

if [ "$TEST" = 1 ]; then
  NAME=$1
  [ -s "$OUT/$NAME.gguf" ] || { echo "select-calibration: no $OUT/$NAME.gguf" >&2; exit 1; }
  echo "$NAME: test-set ppl $(ppl "$OUT/$NAME.gguf" data/wikitext2/wiki.test.raw "$OUT/$NAME.test.log")"
  exit 0
fi

BASE=$(ppl "$MODEL" "$OUT/valid-b.raw" "$OUT/model.validb.log")
echo "| candidate | calibrate args | wall s | peak RSS kB | valid-b ppl | ratio (model $BASE) |"
echo "|---|---|---:|---:|---:|---:|"
while [ $# -ge 2 ]; do
  NAME=$1 ARGS=$2; shift 2
  if [ ! -s "$OUT/$NAME.gguf" ]; then
    # shellcheck disable=SC2086
    /usr/bin/time -v "$BIN" calibrate "$MODEL" $ARGS --data "$OUT/valid-a.raw" -t 2 -o "$OUT/$NAME.gguf" > "$OUT/$NAME.cal.log" 2>&1
  fi
  WALL=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$OUT/$NAME.cal.log" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.0f", s }')
  RSS=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$OUT/$NAME.cal.log")
  P=$(ppl "$OUT/$NAME.gguf" "$OUT/valid-b.raw" "$OUT/$NAME.validb.log")
  echo "| $NAME | \`$ARGS\` | $WALL | $RSS | $P | $(awk -v p="$P" -v b="$BASE" 'BEGIN { printf "%.4f", p / b }') |"
done
