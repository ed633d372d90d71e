#!/usr/bin/env bash
# Ablations of docs/results.md ("Make it long", diagnosis) on `preset=farci` data: 256-event
# histories over 20 categories, interests only older than the newest 96 events. Each run is
# `experiment=farci` (300 steps x 2 ranks x 32 requests, 3 epochs, about 1.5 minutes on 2 idle
# cores) with one change, then `python -m longseq.eval` at 96 and 256 events.
#
#   benchmarks/quality_farci.sh [runs dir]     (default: runs/farci)
#   QUEUE=time benchmarks/quality_farci.sh [runs dir]   time and position out of the tokens:
#       the default model, + position bias, + position and time bias (`model.stca.time_bias`),
#       one run per seed in SEEDS (default "0 1 2")
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/farci}
DATA=${DATA:-data/farci_s0}
NPROC=${NPROC:-2}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$DATA/oracle.json" ] || $PY -m longseq.datasets.synth preset=farci out="$DATA" seed=0 progress=false

run() {  # run <name> [training overrides...]
  local name=$1; shift
  if [ ! -f "$RUNS/$name/eval/eval.json" ]; then
    rm -rf "${RUNS:?}/$name"
    .venv/bin/torchrun --standalone --nproc-per-node "$NPROC" -m longseq.train experiment=farci \
      data.path="$DATA" run_dir="$RUNS/$name" trainer.progress=false "$@"
    $PY -m longseq.eval checkpoint="$RUNS/$name" data.path="$DATA" out="$RUNS/$name/eval" \
      "windows=[96,256]" progress=false
  fi
}

OFF="model.stca.match_bias=false model.stca.position_bias=false model.stca.count_channel=false"
mkdir -p "$RUNS"
if [ "${QUEUE:-ablations}" = time ]; then
  for s in ${SEEDS:-0 1 2}; do
    run default_s"$s" seed="$s"
    run pos_s"$s" seed="$s" model.stca.position_bias=true
    run time_s"$s" seed="$s" model.stca.position_bias=true model.stca.time_bias=true
  done
  exit 0
fi
run full model.stca.position_bias=true                     # match + count + position bias
run plain $OFF                                             # STCA as in the paper
run match model.stca.count_channel=false
run match_pos model.stca.count_channel=false model.stca.position_bias=true
run match_count                                            # the default recipe
run pos $OFF model.stca.position_bias=true
run plain_900 $OFF trainer.max_steps=900                   # 3x the budget
run din_last50 model.tower=din model.din.last_n=50
run sim model.tower=sim
run pooling model.tower=pooling
$PY -m longseq.report "inputs=[$(ls -d "$RUNS"/*/ | sed 's#/$##' | paste -sd,)]" out="$RUNS/report"
