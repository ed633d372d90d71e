"""Snapshot a model's logits and gradients for fixed configs, to prove a refactor bit-identical.

    python tools/model_parity.py <data set> <out.pt>           # in the old and the new checkout
    python tools/model_parity.py --compare <old.pt> <new.pt>    # every tensor must be equal

Nine configs (STCA with and without the recipe, the sdpa / absorbed kernels, the packed layout,
and every baseline tower), seed 0, one collated batch of the data set's first train file with
ragged served windows (0 to 1000 events). Run the snapshot with ``PYTHONPATH`` set to each
checkout (e.g. a ``git worktree`` of the old commit). Used for issue 24's structural step.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from longseq.data.collate import collate
from longseq.data.reader import list_parquet_files
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.stca import STCAConfig


def compare(old: str, new: str) -> int:
    a, b = torch.load(old), torch.load(new)
    bad = []
    for case in a:
        if set(a[case]) != set(b.get(case, {})):
            bad.append(f"{case}: tensors differ in name")
            continue
        bad += [f"{case}/{k}" for k in a[case] if not torch.equal(a[case][k], b[case][k])]
    n = sum(len(v) for v in a.values())
    print(f"{n} tensors compared, {len(bad)} differ" + (f": {bad[:10]}" if bad else ""))
    return 1 if bad else 0


if sys.argv[1] == "--compare":
    sys.exit(compare(sys.argv[2], sys.argv[3]))
data = Path(sys.argv[1])
meta = json.loads((data / "meta.json").read_text())
sizes = TableSizes(meta["num_items"], meta["num_categories"], meta["num_actions"])
table = pq.read_table(list_parquet_files(data / "train")[0]).slice(0, 12)
windows = np.array([0, 1, 5, 1000, 17, 3, 64, 2, 8, 40, 300, 7])
CASES = {
    "stca_recipe": dict(stca=dict(match_bias=True, count_channel=True)),
    "stca_paper": dict(stca=dict()),
    "stca_pos_sdpa": dict(
        stca=dict(match_bias=True, count_channel=True, position_bias=True, kernel="sdpa")
    ),
    "stca_absorbed": dict(stca=dict(kernel="absorbed")),
    "stca_packed_pairs": dict(
        stca=dict(match_bias=True, count_channel=True, layout="packed", kernel="pairs")
    ),
    "pooling": dict(tower="pooling"),
    "din": dict(tower="din"),
    "transformer": dict(tower="transformer"),
    "sim": dict(tower="sim"),
}
out = {}
for name, case in CASES.items():
    torch.manual_seed(0)
    cfg = ModelConfig(embedding_dim=8, pos_dim=4, head_hidden=[16])
    stca = dict(d_model=16, num_heads=2, num_layers=2, **case.get("stca", {}))
    cfg.stca = STCAConfig(**stca)
    if "tower" in case:
        cfg.tower = case["tower"]
    model = LongSeqModel(cfg, sizes, ["click"])
    batch = collate(table, ["click"], windows)
    logits = model(batch)
    model.loss(logits, batch).backward()
    out[name] = {
        "logits": logits.detach(),
        **{n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
    }
torch.save(out, sys.argv[2])
print("saved", len(out), "cases")
