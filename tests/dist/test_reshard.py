"""A checkpoint written by ONE process loads into TWO (1 -> 2 reshard) and training goes on.

One rank trains two steps with the trainer's pieces (TrainTask, fused RowWiseAdagrad, AdamW) and
writes a checkpoint with `save_checkpoint`. Two ranks then build the model with another sharding
plan (item table-wise -> row-wise) and DDP or FSDP2 for the dense part, restore it with
the trainer's `restore_training_state`, and must hold exactly the written weights and optimizer
states (tables, row-wise Adagrad momenta, AdamW moments and step), score a batch exactly as the
writer did, and train on. The reverse (2 -> 1) is tests/dist/test_checkpoint.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dist_common import WORLD, model_cfg, rank_batch, sizes

from longseq.parallel.spawn import run_ranks

pytestmark = pytest.mark.dist

WRITER_TABLES = {"item": "table_wise"}
READER_TABLES = {"item": "row_wise", "category": "table_wise"}


def _local(value) -> object:
    """A tensor as this rank holds it: full (plain or gathered DTensor: collective) or
    ``[(offsets, shard)]`` of a ShardedTensor."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    if isinstance(value, ShardedTensor):
        return [
            (list(s.metadata.shard_offsets), s.tensor.detach().clone())
            for s in value.local_shards()
        ]
    if isinstance(value, DTensor):
        return value.full_tensor().detach().clone()
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _snapshot(dmp, opt) -> dict[str, object]:
    """Model weights and every optimizer state tensor, keyed ``model/<k>``, ``optim/<k>/<s>``."""
    from longseq.train.resume import training_state

    state = training_state(dmp, opt)
    out = {f"model/{k}": _local(v) for k, v in state["model"].items()}
    for key, per in state["optim"]["state"].items():
        for name, v in per.items():
            out[f"optim/{key}/{name}"] = _local(v)
    return out


def _build(data: Path, tables: dict, dense: str):
    from longseq.model.model import LongSeqModel
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model
    from longseq.train.optim import DenseOptimConfig, build_optimizer
    from longseq.train.task import TrainTask

    model = LongSeqModel(model_cfg(), sizes(data), ["click"], device="meta")
    cfg = ShardingConfig(tables=tables, dense=dense)
    dmp = shard_model(TrainTask(model), cfg, torch.device("cpu"))
    return dmp, build_optimizer(dmp, DenseOptimConfig(lr=1e-2, warmup_steps=0))


def _score(dmp, data: Path) -> float:
    with torch.no_grad():
        loss, _ = dmp(rank_batch(data, 0))  # the same batch on every rank
    return float(loss)


def _writer(rank: int, world: int, data: Path, run_dir: Path, meta: dict) -> dict:
    from longseq.parallel.checkpoint import save_checkpoint
    from longseq.train.resume import training_state
    from longseq.train.stepper import PlainStepper

    torch.manual_seed(3)
    dmp, opt = _build(data, WRITER_TABLES, "ddp")
    stepper = PlainStepper(dmp, opt, iter([rank_batch(data, 0), rank_batch(data, 1)]))
    stepper.step()
    stepper.step()
    rank_state = {"reader": {"epoch": 0, "batches_emitted": 2, "rows_emitted": 12}}
    path = save_checkpoint(run_dir, 2, training_state(dmp, opt), meta, rank_state)
    return {"path": str(path), "state": _snapshot(dmp, opt), "score": _score(dmp, data)}


def _reader(
    rank: int, world: int, data: Path, ckpt: str, dense: str, tables: dict | None = None
) -> dict:
    from longseq.train.resume import restore_training_state
    from longseq.train.stepper import PipelinedStepper

    torch.manual_seed(100 + rank)  # not the writer's initialisation
    dmp, opt = _build(data, tables or READER_TABLES, dense)
    before = _score(dmp, data)
    meta = restore_training_state(dmp, opt, ckpt)
    out = {"meta": meta, "before": before, "state": _snapshot(dmp, opt), "score": _score(dmp, data)}
    batches = [rank_batch(data, rank)] * 3
    stepper = PipelinedStepper(dmp, opt, iter(batches), torch.device("cpu"))
    out["losses"] = [float(stepper.step()[0]) for _ in range(2)]
    out["after"] = _snapshot(dmp, opt)
    return out


def _readers(rank: int, world: int, data: Path, ckpt: str) -> dict:
    """Both dense wrappings, then the column-wise case that must refuse (last: it fails)."""
    out = {dense: _reader(rank, world, data, ckpt, dense) for dense in ("ddp", "fsdp2")}
    try:
        _reader(rank, world, data, ckpt, "ddp", {"item": "row_wise", "category": "column_wise"})
        out["column_wise_error"] = None
    except ValueError as e:
        out["column_wise_error"] = str(e)
    return out


def _assemble(like: torch.Tensor, per_rank: list) -> torch.Tensor:
    """Put ShardedTensor pieces of every rank into one tensor shaped ``like``."""
    full = torch.full_like(like, float("nan"))
    for pieces in per_rank:
        for offsets, t in pieces:
            full[tuple(slice(o, o + n) for o, n in zip(offsets, t.shape))] = t
    assert not full.isnan().any(), "shards do not cover the tensor"
    return full


@pytest.fixture(scope="module")
def written(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    from longseq.train.config import TrainJobConfig
    from longseq.train.loop import checkpoint_meta

    cfg = TrainJobConfig(run_dir="unused", model=model_cfg())
    cfg.data.path = str(tiny_data)
    meta = checkpoint_meta(cfg, sizes(tiny_data), ["click"], 1)
    run_dir = tmp_path_factory.mktemp("one_rank")
    written = run_ranks(1, _writer, tiny_data, run_dir, meta, timeout=180)[0]
    return written, run_ranks(WORLD, _readers, tiny_data, written["path"], timeout=300)


@pytest.mark.parametrize("dense", ["ddp", "fsdp2"])
def test_one_process_checkpoint_loads_and_trains_on_two(written, dense: str):
    written, readers = written
    got = [r[dense] for r in readers]
    assert got[0]["meta"]["world_size"] == 1 and got[0]["meta"]["step"] == 2
    want = written["state"]
    # a table-wise table's optimizer state lives only on the rank that holds the table
    assert set(got[0]["state"]) | set(got[1]["state"]) == set(want)
    assert any(k.startswith("optim/") and "momentum" in k for k in want)  # row-wise Adagrad
    assert any(k.endswith("/exp_avg") for k in want)  # AdamW
    for key, w in want.items():
        if isinstance(w, list):  # one writer rank: a single shard covering the whole tensor
            assert len(w) == 1 and not any(w[0][0]), key
            w = w[0][1]
        holders = [r for r in range(WORLD) if key in got[r]["state"]]
        for rank in holders:
            g = got[rank]["state"][key]
            if isinstance(g, list):  # this run's shards of all ranks together
                g = _assemble(w, [got[r]["state"][key] for r in holders])
            torch.testing.assert_close(g, w, rtol=0, atol=0, msg=f"{dense} {key}")
    for rank in range(WORLD):
        assert got[rank]["before"] != pytest.approx(written["score"], abs=1e-6)
        assert got[rank]["score"] == pytest.approx(written["score"], abs=1e-6)
        assert all(torch.isfinite(torch.tensor(got[rank]["losses"])))
    # training went on from the loaded state: AdamW's step counter continues at 3, 4
    step_keys = [k for k in want if k.endswith("/step")]
    assert step_keys
    for k in step_keys:
        assert float(want[k]) == 2 and float(got[0]["after"][k]) == 4
    moved = [
        k
        for k in want
        if k.startswith("model/") and not isinstance(got[0]["after"][k], list)
        if not torch.equal(got[0]["after"][k], got[0]["state"][k])
    ]
    assert "model/interaction.tower.out_proj.weight" in moved


def test_column_wise_row_wise_adagrad_state_refuses_to_reshard_clearly(written):
    """Row-wise Adagrad keeps a momentum per row and column shard: 1 column shard's state has
    another global size than 2 shards'; the load names the reason instead of DCP's size error."""
    _, readers = written
    for r in readers:
        assert r["column_wise_error"] is not None
        assert "category" in r["column_wise_error"]
        assert "per column shard" in r["column_wise_error"]
