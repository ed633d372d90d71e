"""A LongSeqModel sharded over 2 gloo ranks computes what the unsharded model computes.

How the weights get into the DMP: ``DistributedModelParallel.load_state_dict`` accepts the *full,
unsharded* state dict of the plain model (plain tensors under the same keys the DMP's own
``state_dict()`` reports, e.g. ``ec.embeddings.item.weight``); every rank copies the slice that
its local shards cover (row-, column- or table-wise). The ranks build their models from a
*different* seed than the reference, so the test fails if the load is a silent no-op. Careful:
TorchRec's load renames the keys of the dict it is given in place (``ec.…`` ->
``module.ec.…``), so pass it a copy.

The unsharded reference runs in the pytest process itself (no process group), on the very batch
each rank reads (the reader is deterministic with ``shuffle=False``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dist_common import WORLD, model_cfg, rank_batch, sizes

from longseq.parallel.spawn import run_ranks

pytestmark = pytest.mark.dist

LR = 10.0  # large: a history-only row's gradient is ~1e-9 at init
SHARDINGS = {
    "item_row_wise": {"item": "row_wise"},
    "item_table_wise": {"item": "table_wise"},
    "item_column_wise": {"item": "column_wise"},
}


def _local_shards(dmp) -> dict[str, list[tuple[list[int], torch.Tensor]]]:
    """``{key: [(offsets, shard copy), ...]}`` of every ShardedTensor this rank holds."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out = {}
    for key, value in dmp.state_dict().items():
        if isinstance(value, ShardedTensor):
            out[key] = [
                (list(s.metadata.shard_offsets), s.tensor.detach().clone())
                for s in value.local_shards()
            ]
    return out


def _parity_worker(rank: int, world: int, data: Path, ref_state: dict, lr: float) -> dict:
    from longseq.model.model import LongSeqModel
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model

    batch = rank_batch(data, rank)
    results = {}
    for name, tables in SHARDINGS.items():
        torch.manual_seed(1000 + rank)  # not the reference's weights (and not equal across ranks)
        model = LongSeqModel(model_cfg(), sizes(data), ["click"])
        cfg = ShardingConfig(tables=tables, sparse_optimizer="sgd", sparse_lr=lr)
        dmp = shard_model(model, cfg, torch.device("cpu"))
        with torch.no_grad():
            before_load = dmp(batch)
        dmp.load_state_dict(dict(ref_state))  # a copy: TorchRec renames the keys in place
        with torch.no_grad():
            logits = dmp(batch)
        shards_before = _local_shards(dmp)
        dmp.train()
        loss = model.loss(dmp(batch), batch)
        loss.backward()  # the fused sparse optimizer updates the tables here
        results[name] = {
            "before_load": before_load,
            "logits": logits,
            "request_ids": batch.request_ids.clone(),
            "before": shards_before,
            "after": _local_shards(dmp),
        }
    return results


def _looked_up_ids(batches, table: str) -> set[int]:
    from longseq.model.embeddings import TABLE_FEATURES

    ids: set[int] = set()
    for b in batches:
        for feat in TABLE_FEATURES[table]:
            ids |= set(b.sparse[feat].values().tolist())
    return ids


@pytest.fixture(scope="module")
def parity_run(tiny_data: Path):
    """Reference logits and table gradients in this process, then the 2-rank run."""
    from longseq.model.model import LongSeqModel

    torch.manual_seed(7)
    ref = LongSeqModel(model_cfg(), sizes(tiny_data), ["click"])
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    batches = [rank_batch(tiny_data, r) for r in range(WORLD)]
    with torch.no_grad():
        want = [ref(b) for b in batches]
    # TorchRec averages the table gradients over ranks, like DDP does for the dense ones
    # (torchrec.distributed.comm_ops: gradient division by world size, on by default)
    (sum(ref.loss(ref(b), b) for b in batches) / WORLD).backward()
    grads = {f"ec.embeddings.{n}.weight": e.weight.grad for n, e in ref.ec.embeddings.items()}
    got = run_ranks(WORLD, _parity_worker, tiny_data, state, LR, timeout=180)
    return state, grads, batches, want, got


@pytest.mark.parametrize("sharding", list(SHARDINGS))
def test_sharded_logits_equal_unsharded(parity_run, sharding):
    _, _, batches, want, got = parity_run
    for rank in range(WORLD):
        res = got[rank][sharding]
        assert torch.equal(res["request_ids"], batches[rank].request_ids)
        assert res["logits"].shape == want[rank].shape == (int(batches[rank].num_targets.sum()), 1)
        # the load mattered: the ranks' own initialisation gives other logits
        assert not torch.allclose(res["before_load"], want[rank], atol=1e-3)
        torch.testing.assert_close(res["logits"], want[rank], atol=1e-5, rtol=0)
    # different ranks scored different requests
    assert set(batches[0].request_ids.tolist()).isdisjoint(batches[1].request_ids.tolist())


@pytest.mark.parametrize("sharding", list(SHARDINGS))
def test_one_sparse_step_matches_unsharded_sgd_on_both_ranks(parity_run, sharding):
    full, grads, batches, _, got = parity_run
    for rank in range(WORLD):
        res = got[rank][sharding]
        assert res["before"], f"rank {rank} holds no shard"
        for key, shards in res["before"].items():
            ids = _looked_up_ids(batches, key.split(".")[-2])  # both ranks' lookups reach it
            for (off, before), (off2, after) in zip(shards, res["after"][key]):
                assert off == off2
                (r0, c0), (rows, cols) = off, before.shape
                sl = (slice(r0, r0 + rows), slice(c0, c0 + cols))
                # the load copied the right slice of the full table into this shard
                assert torch.equal(before, full[key][sl])
                # the fused SGD step is the unsharded step on the rank-averaged gradient ...
                step, g = (before - after) / LR, grads[key][sl]
                assert (step - g).abs().max() <= 1e-3 * g.abs().max(), (rank, key, off)
                # ... and touches no row that no rank looked up
                changed = (after != before).any(dim=1).nonzero().squeeze(1) + r0
                assert set(changed.tolist()) <= ids, (rank, key, off)
                assert changed.numel() > 0, (rank, key, off)


def test_shards_cover_each_table_exactly_once(parity_run):
    state, _, _, _, got = parity_run
    for sharding in SHARDINGS:
        for key, full in state.items():
            if not key.startswith("ec."):
                continue
            cover = np.zeros(tuple(full.shape), dtype=np.int64)
            for rank in range(WORLD):
                for (r0, c0), t in got[rank][sharding]["before"][key]:
                    cover[r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]] += 1
            assert (cover == 1).all(), (sharding, key)
