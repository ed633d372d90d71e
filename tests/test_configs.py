"""The Hydra config tree: every primary config shares one header, every experiment composes with
every model size and sharding setup of the groups, and the groups are what experiments use."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from longseq.config import CONFIG_DIR

ROOT = Path(CONFIG_DIR)
PRIMARY = sorted(p for p in ROOT.glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (ROOT / "model").glob("*.yaml"))
SHARDINGS = sorted(p.stem for p in (ROOT / "sharding").glob("*.yaml"))


@pytest.mark.parametrize("path", PRIMARY, ids=lambda p: p.name)
def test_primary_configs_use_the_shared_hydra_header(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert "hydra/longseq" in doc["defaults"], f"{path}: list hydra/longseq in its defaults"
    assert "hydra" not in doc, f"{path}: Hydra settings belong in configs/hydra/longseq.yaml"


def _train(*overrides: str):
    from longseq.train.config import TrainJobConfig, register

    register()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["run_dir=r", "data.path=d", *overrides])
    job = OmegaConf.to_object(cfg)
    assert isinstance(job, TrainJobConfig)
    return job


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_picks_a_model_size_from_the_group(name: str) -> None:
    doc = yaml.safe_load((ROOT / "experiment" / f"{name}.yaml").read_text())
    picks = [d for d in doc.get("defaults", []) if isinstance(d, dict)]
    assert picks and "override /model" in picks[0], f"experiment/{name}.yaml: pick a model size"
    assert picks[0]["override /model"] in MODELS
    job = _train(f"experiment={name}")
    assert job.name == name
    job.model.validate()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("sharding", SHARDINGS)
def test_groups_compose_and_set_what_they_say(model: str, sharding: str) -> None:
    job = _train("experiment=ci", f"model={model}", f"sharding={sharding}")
    want_model = yaml.safe_load((ROOT / "model" / f"{model}.yaml").read_text())
    assert job.model.embedding_dim == want_model["embedding_dim"]
    assert job.model.stca.d_model == want_model["stca"]["d_model"]
    want_sharding = yaml.safe_load((ROOT / "sharding" / f"{sharding}.yaml").read_text())
    assert job.sharding.planner == want_sharding["planner"]
    assert job.sharding.dense == want_sharding["dense"]
    job.model.validate()
    job.sharding.validate("cuda")
    assert job.trainer.max_steps == 800  # the experiment's own keys still apply
