"""The model traces with TorchRec's fx tracer the way `TrainPipelineSparseDist` traces it.

The pipeline rewrites the model's graph so the embedding lookup's input comes straight from the
batch (that is what lets it start the next batch's input all-to-all early). That needs: one fx
trace of the top-level forward with every non-sharded child as a leaf, and the embedding module
called on an attribute of the batch. If a change makes the forward untraceable (data-dependent
Python control flow at the top level, a second lookup, a lookup on a computed KJT), this fails
here, on one process, instead of as a silent fallback of the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch import fx
from torchrec.distributed.train_pipeline.tracing import _get_leaf_module_names
from torchrec.distributed.train_pipeline.utils import Tracer

from longseq.data.collate import collate
from longseq.data.reader import list_parquet_files
from longseq.model.embeddings import TableSizes
from longseq.model.model import TOWERS, LongSeqModel, ModelConfig
from longseq.model.stca import STCAConfig


@pytest.fixture(scope="module")
def batch(tiny_data: Path):
    table = pq.read_table(list_parquet_files(tiny_data / "train")[0]).slice(0, 6)
    return collate(table, ["click"])


@pytest.mark.parametrize("tower", [*sorted(TOWERS), "stca_recipe"])
def test_model_traces_like_the_pipeline_and_runs_the_same(tiny_meta, batch, tower):
    torch.manual_seed(0)
    recipe = tower == "stca_recipe"  # match bias + count channel: the ids go in as well
    cfg = ModelConfig(
        embedding_dim=8, pos_dim=4, tower="stca" if recipe else tower, head_hidden=[16],
        stca=STCAConfig(d_model=16, num_heads=2, match_bias=recipe, count_channel=recipe),
    )  # fmt: skip
    cfg.tower_config.d_model = 16
    sizes = TableSizes(
        tiny_meta["num_items"], tiny_meta["num_categories"], tiny_meta["num_actions"]
    )
    model = LongSeqModel(cfg, sizes, ["click"]).eval()
    # Sharded, the pipeline's tracer stops at the ShardedModule (ec) and at every child without
    # one (`_get_leaf_module_names`); unsharded, it finds no sharded child, so name both here.
    assert _get_leaf_module_names(model) == []
    graph = Tracer(leaf_modules=["ec", "interaction"]).trace(model)
    gm = fx.GraphModule(model, graph)

    calls = [n for n in graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["ec", "interaction"]  # ONE lookup, then the rest
    (ec_arg,) = calls[0].args
    assert ec_arg.op == "call_function" and ec_arg.args[1] == "sparse"  # getattr(batch, "sparse")
    assert ec_arg.args[0].op == "placeholder"

    with torch.no_grad():
        torch.testing.assert_close(gm(batch), model(batch))
