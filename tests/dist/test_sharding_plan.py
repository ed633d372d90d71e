"""Every sharding type of `PLAN_BUILDERS` builds the plan it names, or is refused with a clear error.

The plans are inspected without a process group (`build_plan` is pure). The GPU-only type
(``data_parallel``) is planned for ``cuda`` here, refused for ``cpu``, and run for real by
`test_data_parallel_runs_on_gpu` where CUDA exists (skipped cleanly otherwise).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from dist_common import model_cfg, rank_batch, sizes

from longseq.parallel.sharding import (
    DEFAULT_TABLE_SHARDING,
    GPU_ONLY,
    PLAN_BUILDERS,
    SHARDING_TYPES,
    ShardingConfig,
    build_plan,
)

WORLD = 2


def _model(data: Path):
    from longseq.model.model import LongSeqModel

    return LongSeqModel(model_cfg(), sizes(data), ["click"], device="meta")


def _types(plan) -> dict[str, str]:
    """``{table: sharding_type}`` of the plan's only module."""
    (module_plan,) = plan.plan.values()
    return {name: ps.sharding_type for name, ps in module_plan.items()}


def test_sharding_types_are_the_builder_table():
    assert SHARDING_TYPES == tuple(PLAN_BUILDERS)
    assert set(GPU_ONLY) <= set(SHARDING_TYPES)
    assert "table_row_wise" not in SHARDING_TYPES  # the EC sharder has no such sharding


@pytest.mark.parametrize("kind", SHARDING_TYPES)
def test_every_type_builds_the_plan_it_names(tiny_data, kind):
    model = _model(tiny_data)
    device = "cuda" if kind in GPU_ONLY else "cpu"
    plan = build_plan(model, ShardingConfig(tables={"item": kind}), WORLD, device)
    types = _types(plan)
    assert types["item"] == kind
    assert {t for n, t in types.items() if n != "item"} == {DEFAULT_TABLE_SHARDING}
    (module_plan,) = plan.plan.values()
    if kind != "data_parallel":  # TorchRec gives data-parallel tables the dense kernel
        assert module_plan["item"].compute_kernel == "fused"


@pytest.mark.parametrize("kind", sorted(GPU_ONLY))
def test_gpu_only_types_are_a_config_error_on_cpu(kind):
    # checked once, by the job's entry point (TrainJobConfig.validate), not by build_plan
    with pytest.raises(ValueError, match=rf"sharding\.tables\.item={kind}: not supported on CPU"):
        ShardingConfig(tables={"item": kind}).validate("cpu")


@pytest.mark.parametrize("kind", ["table_row_wise", "rowwise"])
def test_unknown_types_are_a_config_error(kind):
    with pytest.raises(ValueError, match=rf"sharding\.tables\.item={kind!r}: choose one of"):
        ShardingConfig(tables={"item": kind}).validate("cuda")


def test_misspelt_table_names_the_key_and_the_real_tables(tiny_data):
    cfg = ShardingConfig(tables={"itme": "row_wise"})
    with pytest.raises(ValueError, match=r"sharding\.tables\.itme: .*\['action', .*'item'"):
        build_plan(_model(tiny_data), cfg, WORLD, "cpu")
    with pytest.raises(ValueError, match=r"sharding\.tables\.itme"):
        build_plan(_model(tiny_data), ShardingConfig(tables=cfg.tables, planner=True), 2, "cpu")


def test_default_plan_unchanged(tiny_data):
    """The trainer's default: ``item`` row-wise, the rest table-wise round-robin, fused kernel."""
    model = _model(tiny_data)
    plan = build_plan(model, ShardingConfig(), WORLD, "cpu")
    (module_plan,) = plan.plan.values()
    names = [c.name for c in model.ec.embedding_configs()]
    for i, name in enumerate(names):
        ps = module_plan[name]
        assert ps.compute_kernel == "fused"
        if name == "item":
            assert ps.sharding_type == "row_wise"
            assert ps.ranks == [0, 1]
        else:
            assert ps.sharding_type == "table_wise"
            assert ps.ranks == [i % WORLD]


def _dp_worker(rank: int, world: int, data: Path) -> dict:
    from longseq.model.model import LongSeqModel
    from longseq.parallel.wrap import shard_model

    device = torch.device("cuda", rank)
    torch.manual_seed(7)  # the same weights on every rank: the table is replicated
    model = LongSeqModel(model_cfg(), sizes(data), ["click"], device=device)
    ref = copy.deepcopy(model)
    batch = rank_batch(data, rank).to(device)
    with torch.no_grad():
        want = ref(batch)
    cfg = ShardingConfig(tables={"item": "data_parallel"}, sparse_optimizer="sgd")
    dmp = shard_model(model, cfg, device)
    with torch.no_grad():
        got = dmp(batch)
    dmp.train()
    model.loss(dmp(batch), batch).backward()
    return {"plan": _types(dmp.plan), "got": got.cpu(), "want": want.cpu()}


@pytest.mark.gpu
@pytest.mark.dist
@pytest.mark.skipif(not torch.cuda.is_available(), reason="data_parallel sequence tables: CUDA")
def test_data_parallel_runs_on_gpu(tiny_data):
    from longseq.parallel.spawn import run_ranks

    world = min(2, torch.cuda.device_count())  # NCCL: one GPU per rank
    for res in run_ranks(world, _dp_worker, tiny_data, timeout=300, backend="nccl"):
        assert res["plan"]["item"] == "data_parallel"
        torch.testing.assert_close(res["got"], res["want"], atol=1e-4, rtol=1e-4)
