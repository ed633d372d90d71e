#!/usr/bin/env bash
# Long-history experiments of docs/results.md ("Make it long"), one training run after another.
#
#   benchmarks/quality_long.sh <queue>   queue: diag1k | recipe1k | long2k | ci | seeds1k |
#                                        related1k | coarse1k | time1k
#
# SEEDS="0 1 2" (the seeds1k, related1k and coarse1k queues: one training run per seed, same
# data), RUNS (where runs go), DATA_ROOT (where the generated presets go), NPROC (ranks).
#
# Every run: `torchrun --nproc-per-node 2 -m longseq.train experiment=<exp> ...` on the preset's
# data (seed 0), then `python -m longseq.eval` at the preset's served windows. Runs that already
# have eval/eval.json are skipped, so a queue can be resumed.
set -euo pipefail
cd "$(dirname "$0")/.."
QUEUE=${1:?usage: benchmarks/quality_long.sh diag1k|recipe1k|long2k|ci|seeds1k|related1k|coarse1k|time1k}
RUNS=${RUNS:-runs/long}
DATA_ROOT=${DATA_ROOT:-data}
SEEDS=${SEEDS:-0 1 2}
# STCA's learned relatedness (docs/results.md, "Coarse categories"): soft match, co-occurrence
# loss, same-category negatives
RELATED=(model.stca.soft_match=true model.stca.soft_match_cooccur=0.1
  model.stca.soft_match_negatives=category)
NPROC=${NPROC:-2}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

data() {  # data <preset> <seed>
  local out=$DATA_ROOT/$1_s$2
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
  seeds1k)  # the default recipe on long1k, one run per training seed
    D=$(data long1k 0)
    for s in $SEEDS; do run recipe1k_s"$s" long1k "$D" "$W1K" seed="$s"; done
    ;;
  related1k)  # the same with the relatedness switches on: no regression on exact categories?
    D=$(data long1k 0)
    for s in $SEEDS; do run related1k_s"$s" long1k "$D" "$W1K" seed="$s" "${RELATED[@]}"; done
    ;;
  time1k)  # the recipe with time and position out of the tokens (model.stca.time_bias)
    D=$(data long1k 0)
    for s in $SEEDS; do run time1k_s"$s" long1k "$D" "$W1K" seed="$s" model.stca.time_bias=true; done
    ;;
  coarse1k)  # coarse categories over finer hidden topics (run with NPROC=1 for the table's layout)
    D=$(data coarse1k 0)
    for s in $SEEDS; do
      run coarse_recipe1k_s"$s" long1k "$D" "$W1K" seed="$s"
      run coarse_related1k_s"$s" long1k "$D" "$W1K" seed="$s" "${RELATED[@]}"
    done
    ;;
  *) echo "unknown queue $QUEUE" >&2; exit 2 ;;
esac
