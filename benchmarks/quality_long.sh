#!/usr/bin/env bash
# Long-history experiments of docs/results.md ("Make it long"), one training run after another.
#
#   benchmarks/quality_long.sh <queue>        queue: diag1k | recipe1k | long2k | ci
#
# Every run: `torchrun --nproc-per-node 2 -m longseq.train experiment=<exp> ...` on the preset's
# data (seed 0), then `python -m longseq.eval` at the preset's served windows. Runs that already
# have eval/eval.json are skipped, so a queue can be resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
QUEUE=${1:?usage: benchmarks/quality_long.sh diag1k|recipe1k|long2k|ci}
RUNS=${RUNS:-runs/long}
NPROC=${NPROC:-2}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

data() {  # data <preset> <seed>
  local out=data/$1_s$2
  [ -f "$out/oracle.json" ] || $PY -m longseq.datasets.synth preset="$1" out="$out" seed="$2" progress=false >&2
  echo "$out"
}

run() {  # run <name> <experiment> <data> <windows> [training overrides...]
  local name=$1 exp=$2 dpath=$3 windows=$4; shift 4
  if [ ! -f "$RUNS/$name/eval/eval.json" ]; then
    rm -rf "${RUNS:?}/$name"
    local t0=$SECONDS
    .venv/bin/torchrun --standalone --nproc-per-node "$NPROC" -m longseq.train experiment="$exp" \
      data.path="$dpath" run_dir="$RUNS/$name" trainer.progress=false "$@"
    echo "$name: trained in $((SECONDS - t0)) s" | tee -a "$RUNS/times.txt"
    $PY -m longseq.eval checkpoint="$RUNS/$name" data.path="$dpath" out="$RUNS/$name/eval" \
      "windows=$windows" progress=false
  fi
}

mkdir -p "$RUNS"
W1K="[256,512,1024]"
case $QUEUE in
  diag1k)
    D=$(data long1k 0)
    run plain1k long1k "$D" "$W1K" model.stca.match_bias=false model.stca.position_bias=false \
      model.stca.count_channel=false
    run full1k long1k "$D" "$W1K"
    ;;
  recipe1k)
    D=$(data long1k 0)
    run din_last50_1k long1k "$D" "$W1K" model.tower=din model.din.last_n=50
    run sim1k long1k "$D" "$W1K" model.tower=sim
    run beta256_1k long1k "$D" "$W1K" data.window.mode=beta data.window.l_min=16 \
      data.window.l_max=1024 data.window.l_avg=256
    ;;
  long2k)
    D=$(data long2k 0)
    run full2k long2k "$D" "[512,1024,2048]"
    ;;
  ci)  # the demo's preset with the recipe's defaults (docs/results.md keeps the first table)
    D=$(data ci 0)
    run ci_recipe ci "$D" "[50,125,250]"
    ;;
  *) echo "unknown queue $QUEUE" >&2; exit 2 ;;
esac
