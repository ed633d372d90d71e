"""Write a probe data set whose label needs target-to-history matching, with no noise.

    python benchmarks/probes/make_count_task.py <out> <history length> <min count>

Each request has ``L`` history events over 50 categories (item id = 10 x category) and 8 targets;
a target's label is 1 iff its category occurs at least ``min count`` times in the history
(``min count = 1``: "is it in the history at all"). Used in docs/results.md to separate "the
model cannot match" from "the model cannot count".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUM_CATEGORIES, TARGETS = 50, 8


def make(rng: np.random.Generator, n: int, start: int, length: int, min_count: int) -> pa.Table:
    rows = []
    for r in range(n):
        h = rng.integers(0, NUM_CATEGORIES, length)
        t = rng.integers(0, NUM_CATEGORIES, TARGETS)
        if min_count == 1:
            t[:4] = h[-4:]  # half the targets present, so both labels occur
        y = np.array([(h == c).sum() for c in t]) >= min_count
        rows.append(
            {
                "request_id": start + r,
                "user_id": start + r,
                "request_ts": 10**6,
                "hist_item_id": (h * 10).tolist(),
                "hist_category_id": h.tolist(),
                "hist_action": [0] * length,
                "hist_ts": list(range(length)),
                "tgt_item_id": (t * 10).tolist(),
                "tgt_category_id": t.tolist(),
                "tgt_click": y.astype(np.int8).tolist(),
                "tgt_p_true": y.astype(float).tolist(),
            }
        )
    return pa.Table.from_pylist(rows)


def main() -> None:
    out, length, min_count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    for split, n, start in (("train", 4000, 0), ("test", 500, 100_000)):
        (out / split).mkdir(parents=True, exist_ok=True)
        table = make(rng, n, start, length, min_count)
        pq.write_table(table, out / split / "part-0.parquet", row_group_size=256)
    meta = {
        "tasks": ["click"],
        "num_items": NUM_CATEGORIES * 10,
        "num_categories": NUM_CATEGORIES,
        "num_actions": 2,
    }
    (out / "meta.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
