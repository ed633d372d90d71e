#!/usr/bin/env bash
# Every tower on a real log, several seeds, one budget, one selection rule: mean ± std of the test
# metrics (docs/results.md, "MovieLens-100K over seeds").
#
#   benchmarks/quality_real.sh [runs dir] [extra training overrides ...]
#   e.g. benchmarks/quality_real.sh runs/real
#        SEEDS="0 1 2 3 4" MODELS="stca din_last50" benchmarks/quality_real.sh runs/real_5seeds
#
# Data: $DATA (default data/ml100k; made by benchmarks/fetch_movielens.sh when missing).
# Each run: `torchrun -m longseq.train experiment=$EXPERIMENT seed=<s>` with the experiment's step
# budget and the trainer's defaults: evaluation on the valid split during training
# (trainer.select_split=auto), early stop after trainer.early_stop_patience evaluations without a
# new best, so that `checkpoints/best` is chosen on data the test never sees; then `longseq.eval` of `best` (the
# last checkpoint when no evaluation ran) on the test split into <run>/eval_test; finally
# `python -m longseq.report.seeds` writes <runs>/summary/seeds.md and seeds.json.
# Runs with <run>/eval_test/eval.json are skipped, so an interrupted sweep resumes.
# Budget on a 2-core CPU box: about 1-2 minutes per run for movielens_100k (6 models x 3 seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/real}
shift || true
DATA=${DATA:-data/ml100k}
EXPERIMENT=${EXPERIMENT:-movielens_100k}
SEEDS=${SEEDS:-0 1 2}
MODELS=${MODELS:-stca paper din_last50 pooling sim transformer}
WINDOW=${WINDOW:-1000}
NPROC=${NPROC:-2}
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

[ -f "$DATA/meta.json" ] || benchmarks/fetch_movielens.sh "$DATA"

overrides() {  # the model's overrides (same head, same budget; only the tower differs)
  case $1 in
    stca) ;;
    paper) echo "model.stca.match_bias=false model.stca.position_bias=false model.stca.count_channel=false" ;;
    din_last50) echo "model.tower=din model.din.last_n=50" ;;
    din) echo "model.tower=din" ;;
    pooling) echo "model.tower=pooling" ;;
    sim) echo "model.tower=sim" ;;
    transformer) echo "model.tower=transformer" ;;
    nofeat) echo "model.use_features=false" ;;  # the default model told to ignore side features
    rankmixer) echo "model.head=rankmixer" ;;
    rankmixer_nofeat) echo "model.head=rankmixer model.use_features=false" ;;
    stca_time) echo "model.stca.position_bias=true model.stca.time_bias=true" ;;  # time and position out of the tokens (needs the position bias)
    stca_related) echo "model.stca.soft_match=true model.stca.soft_match_cooccur=0.1 model.stca.soft_match_negatives=category" ;;
    *) echo "quality_real: unknown model '$1' (stca paper din_last50 din pooling sim transformer nofeat rankmixer rankmixer_nofeat stca_time stca_related)" >&2
       return 2 ;;
  esac
}

mkdir -p "$RUNS"
for model in $MODELS; do
  extra=$(overrides "$model")
  for seed in $SEEDS; do
    run="$RUNS/${model}_s${seed}"
    [ -f "$run/eval_test/eval.json" ] && continue
    rm -rf "$run"
    t0=$SECONDS
    # shellcheck disable=SC2086  # $extra is a list of overrides
    .venv/bin/torchrun --standalone --nproc-per-node "$NPROC" -m longseq.train \
      experiment="$EXPERIMENT" data.path="$DATA" run_dir="$run" seed="$seed" \
      trainer.select_split=valid trainer.progress=false $extra "$@"
    ckpt="$run"
    [ -f "$run/checkpoints/best" ] && ckpt="$run/checkpoints/best"
    $PY -m longseq.eval checkpoint="$ckpt" data.path="$DATA" data.split=test \
      out="$run/eval_test" "windows=[$WINDOW]" progress=false
    echo "${model}_s${seed}: $((SECONDS - t0)) s (trained and evaluated)" | tee -a "$RUNS/times.txt"
  done
done
$PY -m longseq.report.seeds runs="$RUNS" eval=eval_test out="$RUNS/summary" window="$WINDOW" \
  "title='$EXPERIMENT: test split; checkpoints/best chosen on valid; seeds $SEEDS'"
