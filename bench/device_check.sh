#!/usr/bin/env bash
# The GPU path in one run (under 8 minutes on one GPU), ending in one summary table:
#
#   1. extract throughput: bench/extract.py (a) backbone fp32 and bf16 + channels_last, (c) the stage,
#      (d) the naive loop, with the (c)/(a) and (c)/(d) ratios
#   2. the joint LSTM training bench (bench/lstm.py: fused cell vs nn.LSTM vs the naive cell)
#   3. reduced-precision features: the same toy videos extracted in fp32, bf16 and fp16; relative error
#      against fp32
#   4. extract under torchrun with one process per GPU (--nproc_per_node=1), compared with step 3's run
#   5. AMP training (precision auto: bf16 autocast, fp16 where bf16 is unsupported) of the toy pipeline,
#      the recipe of tests/test_toy_pipeline_accuracy.py, against that test's accuracy bars
#
# Without a CUDA GPU (or with --cpu) it runs the same steps as a CPU fallback on tiny sizes, which only shows
# that every step runs (no accuracy bar; fp16 needs CUDA and is left out). tests/test_bench_device_check.py
# runs that fallback.
#
#   bash bench/device_check.sh            # GPU if there is one, else the CPU fallback
#   bash bench/device_check.sh --cpu      # the CPU fallback
#   bash bench/device_check.sh --keep     # keep the work folder (logs, caches, JSON) and print where it is
#
# Exit code 0 when every step finished and every correctness check passed (speed goals are reported as met /
# not met and fail nothing), 1 otherwise. Everything is written to a temporary folder: the checkout's cache/
# is never touched. PYTHON=... picks the interpreter (default: the checkout's .venv).
set -u -o pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
TORCHRUN=$(dirname "$PY")/torchrun
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

FORCE_CPU=0
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --cpu) FORCE_CPU=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/actiontk-device-check.XXXXXX")
if [ "$KEEP" = 1 ]; then
  trap 'echo "work folder kept: $WORK"' EXIT
else
  trap 'rm -rf "$WORK"' EXIT
fi
RESULTS=$WORK/results
LOGS=$WORK/logs
mkdir -p "$RESULTS" "$LOGS"
export ACTIONTK_CACHE=$WORK/cache  # anything not given --cache goes here, never to the checkout's cache/

if [ "$FORCE_CPU" = 0 ] && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  DEVICE=cuda
  TITLE=$("$PY" -c 'import torch; print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")')
  TINY=()
  SIZE=112
  EXTRACT_BENCH=(--videos 36 --frames 32 --video-size 112 --size 112 --batch-size 64 --workers 4 --repeats 1)
  LSTM_BENCH=(--rounds 3 --iters 3)
  # per-step limits (seconds): together under 8 minutes whatever happens
  T_DATA=30 T_EXTRACT=150 T_LSTM=50 T_PRECISION=60 T_TORCHRUN=60 T_TRAIN=110
else
  DEVICE=cpu
  TITLE="CPU fallback (tiny sizes; no CUDA GPU$([ "$FORCE_CPU" = 1 ] && echo ' used, --cpu'))"
  TINY=(--tiny)
  SIZE=32
  EXTRACT_BENCH=(--videos 18 --frames 8 --video-size 32 --size 32 --batch-size 16 --workers 1 --repeats 1)
  LSTM_BENCH=(--batch 2 --steps 4 --hidden 32 --channels 8 --grid 4 --classes 6 --rounds 1 --iters 1
              --skip joint-unbatched --threads 1)
  T_DATA=60 T_EXTRACT=120 T_LSTM=60 T_PRECISION=120 T_TORCHRUN=120 T_TRAIN=180
fi
printf '{"device": "%s", "title": "%s"}\n' "$DEVICE" "$TITLE" > "$RESULTS/meta.json"
echo "device_check: $TITLE; work folder $WORK"

ORDER=0
# step NAME LIMIT_S COMMAND...: run it with a time limit, its output in logs/NAME.log, "rc seconds order" in
# results/NAME.status (the table step reads both, with results/NAME.json when the command wrote one)
step() {
  local name=$1 limit=$2
  shift 2
  ORDER=$((ORDER + 1))
  local t0=$SECONDS
  echo "[$ORDER] $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - t0)) $ORDER" > "$RESULTS/$name.status"
  if [ "$rc" != 0 ]; then
    echo "    failed (exit $rc); last lines of $LOGS/$name.log:"
    tail -n 5 "$LOGS/$name.log" | sed 's/^/    | /'
  fi
}

step data "$T_DATA" "$PY" bench/device_check.py data --out "$WORK/toy" "${TINY[@]}"
step extract "$T_EXTRACT" "$PY" bench/extract.py --device "$DEVICE" --only a,c,d "${EXTRACT_BENCH[@]}" \
  --json "$RESULTS/extract.json"
step lstm "$T_LSTM" "$PY" bench/lstm.py --device "$DEVICE" "${LSTM_BENCH[@]}" --json "$RESULTS/lstm.json"
step precision "$T_PRECISION" "$PY" bench/device_check.py precision --root "$WORK/toy" \
  --cache "$WORK/cache-precision" --device "$DEVICE" --size "$SIZE" --json "$RESULTS/precision.json"
if [ -x "$TORCHRUN" ]; then
  step torchrun "$T_TORCHRUN" bash -c '
    "$1" --standalone --nproc_per_node=1 -m actiontk extract toy --root "$2/toy" --cache "$2/cache-torchrun" \
      --backbone vgg16 --layers pool4,conv5_3 --weights none --size "$3" --workers 1 --device "$4" &&
    "$5" bench/device_check.py torchrun --cache "$2/cache-torchrun" --reference "$2/cache-precision" \
      --json "$6"' _ "$TORCHRUN" "$WORK" "$SIZE" "$DEVICE" "$PY" "$RESULTS/torchrun.json"
else
  echo "torchrun not found beside $PY" > "$LOGS/torchrun.log"
  ORDER=$((ORDER + 1))
  echo "127 0 $ORDER" > "$RESULTS/torchrun.status"
fi
step train "$T_TRAIN" "$PY" bench/device_check.py train --work "$WORK/train" --device "$DEVICE" "${TINY[@]}" \
  --json "$RESULTS/train.json"

echo
"$PY" bench/device_check.py table "$RESULTS"
