#!/usr/bin/env bash
# Regenerate the tables of docs/results.md on this machine (2 CPU cores: about 15 minutes).
#
#   benchmarks/quality_ci.sh [runs dir]      (default: runs/quality)
#
# 1. `ci` data (seed 0) with its oracle ceilings.
# 2. Same budget (experiment=ci: 800 steps x 2 ranks x 32 requests, full 250-event window):
#    STCA, mean pooling, DIN over the last 50 events, DIN over the whole history, Transformer,
#    SIM (hard search: the target's category, 50 most recent, then attention).
# 3. Train short / serve long: STCA on Beta-sampled windows averaging L/5 = 50 events.
# Every run is evaluated at served windows L/5, L/2 and L (50, 125, 250), then compared with
# `python -m longseq.report`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/quality}
DATA=${DATA:-data/ci}
NPROC=${NPROC:-2}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

[ -f "$DATA/oracle.json" ] || $PY -m longseq.datasets.synth preset=ci out="$DATA" seed=0

run() {  # run <name> [training overrides...]
  local name=$1; shift
  if [ ! -f "$RUNS/$name/eval/eval.json" ]; then
    rm -rf "${RUNS:?}/$name"
    .venv/bin/torchrun --nproc-per-node "$NPROC" -m longseq.train experiment=ci \
      data.path="$DATA" run_dir="$RUNS/$name" trainer.progress=false "$@"
    $PY -m longseq.eval checkpoint="$RUNS/$name" data.path="$DATA" out="$RUNS/$name/eval" \
      "windows=[50,125,250]"
  fi
}

PLAIN="model.stca.match_bias=false model.stca.count_channel=false"  # the paper's tower
run stca $PLAIN
run stca_recipe                                                     # the model default
run pooling model.tower=pooling
run din_last50 model.tower=din model.din.last_n=50
run din model.tower=din
run transformer model.tower=transformer
run sim model.tower=sim
run stca_beta50 $PLAIN data.window.mode=beta data.window.l_min=8 data.window.l_max=256 \
  data.window.l_avg=50 trainer.max_steps=1200

$PY -m longseq.report \
  "inputs=[$RUNS/stca,$RUNS/stca_recipe,$RUNS/pooling,$RUNS/din_last50,$RUNS/din,$RUNS/transformer,$RUNS/sim,$RUNS/stca_beta50]" \
  out="$RUNS/report"
