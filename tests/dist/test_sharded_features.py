"""Side-feature tables sharded over 2 gloo ranks: the sharded model computes the unsharded
model's logits (every feature kind, feature tables row-, column- and table-wise, both heads), and
one sparse SGD step updates the feature tables as the unsharded gradient says.

Same method as tests/dist/test_sharded_parity.py: the ranks load the reference's full state dict
into their DMP (built from another seed, so a no-op load fails), score their own batch, step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dist_common import WORLD, features, model_cfg, rank_batch, sizes

from longseq.parallel.spawn import run_ranks

pytestmark = pytest.mark.dist

LR = 10.0
TABLES = {
    "item": "row_wise",
    "feat_creator": "row_wise",
    "feat_interests": "column_wise",
    "feat_age": "table_wise",
    "feat_hour": "table_wise",
}
HEADS = ("mlp", "rankmixer")


def _cfg(head: str):
    cfg = model_cfg()
    cfg.head = head
    return cfg


def _worker(rank: int, world: int, data: Path, states: dict) -> dict:
    from longseq.model.model import LongSeqModel
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model

    batch = rank_batch(data, rank)
    out = {}
    for head in HEADS:
        torch.manual_seed(1000 + rank)
        model = LongSeqModel(_cfg(head), sizes(data), ["click"], features=features(data))
        cfg = ShardingConfig(tables=TABLES, sparse_optimizer="sgd", sparse_lr=LR)
        dmp = shard_model(model, cfg, torch.device("cpu"))
        dmp.load_state_dict(dict(states[head]))  # a copy: TorchRec renames the keys in place
        with torch.no_grad():
            logits = dmp(batch)
        dmp.train()
        model.loss(dmp(batch), batch).backward()
        full = {}
        for key, value in dmp.state_dict().items():  # the stepped feature tables, gathered
            if "feat_" in key and hasattr(value, "local_shards"):
                full[key] = [(list(s.metadata.shard_offsets), s.tensor.detach().clone())
                             for s in value.local_shards()]  # fmt: skip
        out[head] = {"logits": logits, "after": full}
    return out


@pytest.fixture(scope="module")
def run(tiny_feature_data: Path):
    from longseq.model.model import LongSeqModel

    data = tiny_feature_data
    states, want, grads = {}, {}, {}
    batches = [rank_batch(data, r) for r in range(WORLD)]
    for head in HEADS:
        torch.manual_seed(7)
        ref = LongSeqModel(_cfg(head), sizes(data), ["click"], features=features(data))
        states[head] = {k: v.detach().clone() for k, v in ref.state_dict().items()}
        with torch.no_grad():
            want[head] = [ref(b) for b in batches]
        (sum(ref.loss(ref(b), b) for b in batches) / WORLD).backward()
        grads[head] = {
            f"ec.embeddings.{n}.weight": e.weight.grad for n, e in ref.ec.embeddings.items()
        }
    got = run_ranks(WORLD, _worker, data, states, timeout=240)
    return states, want, grads, got


@pytest.mark.parametrize("head", HEADS)
def test_sharded_feature_tables_give_the_unsharded_logits(run, head):
    _, want, _, got = run
    for rank in range(WORLD):
        torch.testing.assert_close(got[rank][head]["logits"], want[head][rank], atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_one_sparse_step_on_the_feature_tables(run, head):
    states, _, grads, got = run
    seen = set()
    for rank in range(WORLD):
        for key, shards in got[rank][head]["after"].items():
            seen.add(key.split(".")[-2])
            full_key = key.removeprefix("module.").removeprefix("model.")
            for (r0, c0), after in shards:
                rows, cols = after.shape
                sl = (slice(r0, r0 + rows), slice(c0, c0 + cols))
                before, g = states[head][full_key][sl], grads[head][full_key][sl]
                step = (before - after) / LR
                assert g.abs().max() > 0 or key.endswith("feat_hour.weight")
                assert (step - g).abs().max() <= 1e-3 * max(g.abs().max(), 1e-12), (rank, key)
    assert {"feat_creator", "feat_interests", "feat_age"} <= seen
