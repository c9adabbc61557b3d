#!/usr/bin/env bash
# Calibration quality table (issue #4): RTN, AWQ and TesseraQ (AWQ init) per setting, against
# the fp32 reference, perplexity in the GPTQ convention (ctx 2048) on WikiText-2 test (data/);
# calibration on WikiText-2 valid. Finished models are reused, so the script can be re-run.
#
#   bench/calibration-table.sh [-m MODEL] [-w WINDOWS] [-s "2:64 3:64 4:64 2:32"] [-c "args for every run"] [-a "extra TesseraQ args"] [-x] [-b BIN] OUTDIR
#
# -w limits perplexity to the first WINDOWS windows of 2048 tokens (default: all 148).
# -a is passed to every TesseraQ calibration (e.g. "--preset fast --steps 20").
# -x adds the W2g64 ablation (PAR only, DST only).
# -b uses this already-built tessera binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
WINDOWS=""
SETTINGS="2:64 3:64 4:64 2:32"
TQ_ARGS=""
COMMON_ARGS=""
ABLATION=0
PREBUILT=""
while getopts "m:w:s:c:a:xb:" opt; do
  case $opt in
    m) MODEL=$OPTARG ;;
    w) WINDOWS=$OPTARG ;;
    s) SETTINGS=$OPTARG ;;
    a) TQ_ARGS=$OPTARG ;;
    c) COMMON_ARGS=$OPTARG ;;
    x) ABLATION=1 ;;
    b) PREBUILT=$OPTARG ;;
    *) echo "usage: $0 [-m MODEL] [-w WINDOWS] [-s SETTINGS] [-a ARGS] [-x] OUTDIR" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
OUT=${1:?usage: $0 [-m MODEL] [-w WINDOWS] [-s SETTINGS] [-a ARGS] [-x] OUTDIR}
mkdir -p "$OUT"
TEST=data/wikitext2/wiki.test.raw
if [[ -z $PREBUILT ]]; then
  swift build -c release --product tessera >&2
  PREBUILT=.build/release/tessera
fi
# A private copy: rebuilding the repository during a long run must not change the binary.
[[ $PREBUILT -ef $OUT/tessera ]] || cp "$PREBUILT" "$OUT/tessera"
BIN=$OUT/tessera
CHUNKS=${WINDOWS:+--chunks $WINDOWS}

ppl() {  # model → "ppl ± se" (cached in MODEL.ppl)
  local cache="$OUT/$(basename "$1").ppl${WINDOWS:+-$WINDOWS}"
  if [[ ! -s $cache ]]; then
    $BIN ppl "$1" --file $TEST --convention gptq --ctx 2048 $CHUNKS | tail -1 | sed 's/^ppl: //' > "$cache.tmp"
    mv "$cache.tmp" "$cache"
  fi
  cat "$cache"
}

calibrate() {  # name bits group method args...
  local name=$1 bits=$2 group=$3 method=$4; shift 4
  if [[ ! -s $OUT/$name.gguf ]]; then
    [[ -f $OUT/$name.gguf.calib/state.json ]] && set -- "$@" --resume  # an interrupted run continues
    /usr/bin/time -f "%M" -o "$OUT/$name.maxrss" \
      $BIN calibrate "$MODEL" --bits "$bits" --group "$group" --method "$method" --tune-steps 0 -o "$OUT/$name.gguf" $COMMON_ARGS "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  fi
}

stats() {  # name → "seconds | peak RSS MB" (wall time from the run's log; peak RSS from time(1), else the log)
  python3 - "$OUT/$1.gguf.log.json" "$OUT/$1.maxrss" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
rss = int(open(sys.argv[2]).read().split()[-1]) * 1024 if os.path.exists(sys.argv[2]) else (d.get('peakResidentBytes') or 0)
print('%.0f s | %s' % (d['seconds'], '%.0f MB' % (rss / 1e6) if rss else 'not measured'))
PY
}

REF=$(ppl "$MODEL")
REFV=${REF%% *}
TABLE=$OUT/table.md
{
  echo "| setting | method | ppl | ratio to fp32 | calibration time | peak RSS |"
  echo "|---|---|---|---|---|---|"
  echo "| fp32 | reference | $REF | 1 | | |"
  for s in $SETTINGS; do
    bits=${s%%:*}; group=${s##*:}
    for method in rtn awq tesseraq; do
      name=w${bits}g${group}-$method
      args=()
      [[ $method == tesseraq ]] && args=($TQ_ARGS)
      calibrate "$name" "$bits" "$group" "$method" "${args[@]}"
      p=$(ppl "$OUT/$name.gguf")
      echo "| W${bits}g${group} | $method | $p | $(python3 -c "print('%.3f' % (${p%% *}/$REFV))") | $(stats "$name") |"
    done
  done
  if [[ $ABLATION == 1 ]]; then
    for variant in "par-only:--no-dst" "dst-only:--no-par"; do
      name=w2g64-${variant%%:*}
      calibrate "$name" 2 64 tesseraq $TQ_ARGS ${variant##*:}
      p=$(ppl "$OUT/$name.gguf")
      echo "| W2g64 | ${variant%%:*} | $p | $(python3 -c "print('%.3f' % (${p%% *}/$REFV))") | $(stats "$name") |"
    done
  fi
} | tee "$TABLE"
echo "perplexity: GPTQ convention, ctx 2048, ${WINDOWS:-all} windows of $TEST; every run: ${COMMON_ARGS:-preset defaults}; TesseraQ: ${TQ_ARGS:-preset defaults}" | tee -a "$TABLE"
