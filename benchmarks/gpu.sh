#!/usr/bin/env bash
# Every benchmark suite on one CUDA GPU in bf16, into one folder, then the report. `packed` also
# runs the FlexAttention training path (forward and backward parity against the pair form,
# then timing), which needs CUDA.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default: benchmarks/results/gpu
#
# Needs only `python` on PATH with torch (plus numpy; pyarrow, torchrec and matplotlib are used
# when present): without torchrec the rlb suite records its torchrec parts as skipped in the
# JSON, without pyarrow its stored-bytes part too. Env knobs: QUICK=true for the small grid
# (default false: the full grid), REPORT=0 to skip regenerating docs/benchmarks.md (e.g. on a
# machine from which only OUT_DIR is copied back; the report runs anywhere later). Each suite
# runs on its own, so one failing suite does not stop the others; the exit status is non-zero
# when any failed.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-benchmarks/results/gpu}"
QUICK="${QUICK:-false}"
REPORT="${REPORT:-1}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

python - <<'PY' || exit 1
import torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False)"
print("[gpu.sh] torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

status=0
for suite in scaling kernel serve packed rlb; do
  echo "[gpu.sh] suite=$suite -> $OUT_DIR"
  python -m longseq.bench suite="$suite" quick="$QUICK" device=cuda dtype=bf16 out="$OUT_DIR" \
    || { echo "[gpu.sh] suite=$suite FAILED" >&2; status=1; }
done
if [ "$REPORT" != "0" ]; then
  python -m longseq.bench.report results="$(dirname "$OUT_DIR")" doc=docs/benchmarks.md \
    || status=1
fi
exit $status
