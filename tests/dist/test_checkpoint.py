"""DCP checkpoints: written by 2 sharded ranks, read back by ONE unsharded process.

The ranks train one step (fused sparse optimizer + AdamW, as the trainer does), save with
`save_checkpoint` and return their local shards, which this process assembles into the full
tables. `load_model` (what ``longseq.eval`` uses) must then hold exactly those weights and score
each rank's batch exactly as that rank's DMP does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dist_common import BATCH, WORLD, model_cfg, rank_batch, sizes

from longseq.parallel.spawn import run_ranks

pytestmark = pytest.mark.dist

TABLES = {"item": "row_wise", "category": "column_wise"}


def _ckpt_meta(data: Path) -> dict:
    """The trainer's own ``longseq.json`` content for this model (the keys `load_model` reads)."""
    from longseq.train.config import TrainJobConfig
    from longseq.train.loop import checkpoint_meta

    cfg = TrainJobConfig(run_dir="unused", model=model_cfg())
    cfg.data.path = str(data)
    return checkpoint_meta(cfg, sizes(data), ["click"], WORLD)


def _save_worker(rank: int, world: int, data: Path, run_dir: Path, meta: dict) -> dict:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    from longseq.model.model import LongSeqModel
    from longseq.parallel.checkpoint import save_checkpoint
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model
    from longseq.train.optim import DenseOptimConfig, build_optimizer

    torch.manual_seed(3)
    model = LongSeqModel(model_cfg(), sizes(data), ["click"], device="meta")  # as the trainer
    dmp = shard_model(model, ShardingConfig(tables=TABLES), torch.device("cpu"))
    opt = build_optimizer(dmp, DenseOptimConfig(lr=1e-2, warmup_steps=0))
    batch = rank_batch(data, rank)
    model.loss(dmp(batch), batch).backward()
    opt.step()
    opt.zero_grad()
    path = save_checkpoint(
        run_dir,
        1,
        {"model": dmp.state_dict(), "optim": opt.state_dict()},
        meta,
        {"reader": {"epoch": 0, "batches_emitted": 1, "rows_emitted": BATCH}},
    )
    with torch.no_grad():
        logits = dmp(batch)
    weights: dict[str, object] = {}
    for key, value in dmp.state_dict().items():
        if isinstance(value, ShardedTensor):
            weights[key] = [
                (list(s.metadata.shard_offsets), s.tensor.detach().clone())
                for s in value.local_shards()
            ]
        else:
            weights[key] = value.detach().clone()
    return {"path": str(path), "weights": weights, "logits": logits}


@pytest.fixture(scope="module")
def saved(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("run")
    got = run_ranks(WORLD, _save_worker, tiny_data, run_dir, _ckpt_meta(tiny_data), timeout=180)
    return run_dir, got


def test_two_rank_checkpoint_loads_into_one_unsharded_process(saved, tiny_data: Path):
    from longseq.eval.load import load_model, resolve_checkpoint
    from longseq.parallel.checkpoint import latest_checkpoint

    run_dir, got = saved
    ckpt = latest_checkpoint(run_dir)
    assert ckpt == run_dir / "checkpoints" / "step_1"
    assert got[0]["path"] == got[1]["path"] == str(ckpt)
    assert resolve_checkpoint(run_dir) == ckpt
    assert sorted(p.name for p in ckpt.glob("rank_*.json")) == ["rank_0.json", "rank_1.json"]
    meta = json.loads((ckpt / "longseq.json").read_text())
    assert meta["step"] == 1

    model = load_model(ckpt, meta)  # no process group here
    state = model.state_dict()
    assert set(state) == set(got[0]["weights"])
    for key, full in state.items():
        w0 = got[0]["weights"][key]
        if isinstance(w0, torch.Tensor):  # dense (DDP-replicated): same on both ranks
            assert torch.equal(w0, got[1]["weights"][key]), key
            assert torch.equal(full, w0), key
            continue
        gathered = torch.full_like(full, float("nan"))
        for rank in range(WORLD):
            for (r0, c0), t in got[rank]["weights"][key]:
                gathered[r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]] = t
        assert not gathered.isnan().any(), f"{key}: shards do not cover the table"
        assert torch.equal(full, gathered), key

    for rank in range(WORLD):
        with torch.no_grad():
            logits = model(rank_batch(tiny_data, rank))
        torch.testing.assert_close(logits, got[rank]["logits"], atol=1e-5, rtol=0)


def test_checkpoint_holds_the_trained_step_not_the_init(saved, tiny_data: Path):
    """Weights after one AdamW step differ from a fresh model's (the load is not a no-op)."""
    from longseq.eval.load import load_model
    from longseq.model.model import LongSeqModel

    run_dir, _ = saved
    ckpt = run_dir / "checkpoints" / "step_1"
    loaded = load_model(ckpt, json.loads((ckpt / "longseq.json").read_text())).state_dict()
    torch.manual_seed(3)
    fresh = LongSeqModel(model_cfg(), sizes(tiny_data), ["click"]).state_dict()
    differ = [k for k in fresh if not torch.equal(fresh[k], loaded[k])]
    assert "interaction.tower.out_proj.weight" in differ
    assert "ec.embeddings.item.weight" in differ


def _complete(folder: Path, step: int) -> None:
    folder.mkdir(parents=True)
    (folder / "longseq.json").write_text(json.dumps({"step": step}))


def test_latest_checkpoint_never_reports_a_tmp_folder(tmp_path: Path):
    from longseq.parallel.checkpoint import checkpoint_root, latest_checkpoint

    root = checkpoint_root(tmp_path)
    assert latest_checkpoint(tmp_path) is None
    # a crash after rank 0 wrote longseq.json into the tmp folder but before the rename
    _complete(root / "step_9.tmp", 9)
    assert latest_checkpoint(tmp_path) is None
    _complete(root / "step_2", 2)
    assert latest_checkpoint(tmp_path) == root / "step_2"  # found by scanning (no pointer)
    (root / "latest").write_text("step_2\n")
    assert latest_checkpoint(tmp_path) == root / "step_2"
    # numeric, not lexicographic, order; an incomplete step folder is skipped
    _complete(root / "step_10", 10)
    (root / "step_11").mkdir()
    (root / "latest").unlink()
    assert latest_checkpoint(tmp_path) == root / "step_10"
    # a stale pointer (its folder pruned) falls back to the scan
    (root / "latest").write_text("step_1\n")
    assert latest_checkpoint(tmp_path) == root / "step_10"
