"""Sharded evaluation reuses the sharding the trainer recorded in ``longseq.json`` (``sharding``).

Unit level: `eval_sharding_config` and the config errors of `load_sharded_model`, which are raised
before any collective (no process group needed). The 2-process end-to-end run of sharded
evaluation is ``tests/e2e/test_cli.py``.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from dist_common import model_cfg, sizes
from omegaconf import OmegaConf

from longseq.eval.config import EvalConfig
from longseq.eval.load import FROM_CHECKPOINT, eval_sharding_config, load_sharded_model
from longseq.parallel.sharding import ShardingConfig

RECORDED = {
    "tables": {"item": "column_wise", "category": "row_wise"},
    "planner": False,
    "sparse_optimizer": "adam",  # GPU-only: scoring must not need it
    "sparse_lr": 0.1,
    "dense": "fsdp2",
}


def test_recorded_plan_is_reused():
    cfg = eval_sharding_config({"sharding": RECORDED})
    assert cfg.tables == RECORDED["tables"]
    assert (cfg.planner, cfg.dense) == (False, "fsdp2")
    assert cfg.sparse_optimizer == ShardingConfig().sparse_optimizer  # no step: the default
    cfg.validate("cpu")


def test_recorded_planner_is_reused():
    cfg = eval_sharding_config({"sharding": {**RECORDED, "planner": True}})
    assert cfg.planner


def test_old_checkpoint_gets_the_trainer_default():
    assert eval_sharding_config({}) == ShardingConfig()
    assert eval_sharding_config({"sharding": None}) == ShardingConfig()


def test_the_eval_config_default_is_the_recorded_plan():
    default = EvalConfig().sharding_tables
    assert set(default.values()) == {FROM_CHECKPOINT}
    assert eval_sharding_config({"sharding": RECORDED}, default).tables == RECORDED["tables"]
    assert eval_sharding_config({}, default) == ShardingConfig()


def test_explicit_tables_override_per_table():
    meta = {"sharding": {**RECORDED, "planner": True}}
    cfg = eval_sharding_config(meta, {"item": "table_wise", "action": "row_wise"})
    assert cfg.tables == {"item": "table_wise", "category": "row_wise", "action": "row_wise"}
    assert not cfg.planner  # explicit tables: no planner
    # without a recorded plan an explicit dict is the plan
    assert eval_sharding_config({}, {"item": "table_wise"}).tables == {"item": "table_wise"}


def _meta(tiny_data, sharding=None) -> dict:
    meta = {
        "model": OmegaConf.to_container(OmegaConf.structured(model_cfg())),
        "tables": asdict(sizes(tiny_data)),
        "tasks": ["click"],
    }
    if sharding is not None:
        meta["sharding"] = sharding
    return meta


def test_errors_name_sharding_tables_and_the_recorded_plan(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"sharding_tables\.itme: .*its tables are"):
        load_sharded_model(tmp_path, _meta(tiny_data), {"itme": "row_wise"})
    if torch.cuda.is_available():
        return  # data_parallel is valid there
    recorded = {**RECORDED, "tables": {"item": "data_parallel"}}  # written by a GPU run
    with pytest.raises(ValueError, match=r"sharding_tables\.item=data_parallel: .*recorded plan"):
        load_sharded_model(tmp_path, _meta(tiny_data, recorded))
