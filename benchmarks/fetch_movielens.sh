#!/usr/bin/env bash
# MovieLens-100K from the package index, converted to the request-level format.
#
#   benchmarks/fetch_movielens.sh <out dir> [converter overrides ...]
#   e.g. benchmarks/fetch_movielens.sh data/ml100k
#        benchmarks/fetch_movielens.sh data/ml100k_combo recbole.category_rule=combination
#
# RecBole ships MovieLens-100K as atomic files inside its wheel. This script downloads the
# `recbole==1.2.1` wheel (`pip download --no-deps`: nothing is installed), checks its SHA-256,
# unpacks `recbole/dataset_example/ml-100k/` (`ml-100k.inter`, `.item`, `.user`) and runs
# `python -m longseq.datasets.convert dataset=recbole` on it. Wheel and atomic files stay in a
# cache outside the repository: $LONGSEQ_CACHE, default ${XDG_CACHE_HOME:-~/.cache}/longseq.
# The data is GroupLens's, under their terms (research use, no redistribution, cite Harper &
# Konstan 2015); never commit it (docs/datasets.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: benchmarks/fetch_movielens.sh <out dir> [converter overrides ...]}
shift
PY=${PY:-.venv/bin/python}
CACHE=${LONGSEQ_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/longseq}
VERSION=1.2.1
WHEEL="$CACHE/wheels/recbole-$VERSION-py3-none-any.whl"
SHA256=9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407
RAW="$CACHE/recbole-$VERSION/ml-100k"

real() { "$PY" -c 'import os, sys; print(os.path.realpath(sys.argv[1]))' "$1"; }
case "$(real "$CACHE")/" in
  "$(real .)"/*)
    echo "fetch_movielens: cache $CACHE is inside the repository; set LONGSEQ_CACHE elsewhere" >&2
    exit 2 ;;
esac

if [ ! -f "$WHEEL" ]; then
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps "recbole==$VERSION" \
    -d "$CACHE/wheels"
fi
if [ ! -f "$RAW/ml-100k.inter" ]; then
  "$PY" - "$WHEEL" "$SHA256" "$RAW" <<'EOF'
import hashlib, sys, zipfile
from pathlib import Path

wheel, want, raw = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
got = hashlib.sha256(wheel.read_bytes()).hexdigest()
if got != want:
    sys.exit(f"fetch_movielens: {wheel}: SHA-256 {got}, expected {want}; delete it and rerun")
prefix = "recbole/dataset_example/ml-100k/"
raw.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
        (raw / name).write_bytes(z.read(prefix + name))
print(f"unpacked {prefix} -> {raw}")
EOF
fi
"$PY" -m longseq.datasets.convert dataset=recbole src="$RAW" out="$OUT" progress=false "$@"
