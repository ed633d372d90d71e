"""Every reference config of a converted data set composes with the trainer's schema, as
``python -m longseq.train experiment=<name> data.path=...`` would, and passes its checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from longseq.config import CONFIG_DIR

NAMES = sorted(
    p.stem
    for pattern in ("kuairand_*.yaml", "taobao_*.yaml", "movielens_*.yaml")
    for p in (Path(CONFIG_DIR) / "experiment").glob(pattern)
)


def test_there_is_a_config_per_data_set() -> None:
    assert {n.split("_")[0] for n in NAMES} == {"kuairand", "taobao", "movielens"}


@pytest.mark.parametrize("name", NAMES)
def test_reference_config_composes(name: str, tmp_path: Path) -> None:
    from longseq.train.config import TrainJobConfig, register

    register()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"experiment={name}", f"data.path={tmp_path}", f"run_dir={tmp_path}/r"],
        )
    job = OmegaConf.to_object(cfg)
    assert isinstance(job, TrainJobConfig)
    assert job.name == name and job.data.path == str(tmp_path)
    job.model.validate()
    job.data.window.validate("data.window")
    job.sharding.validate("cuda")
    tc = job.trainer
    assert tc.eval_at_end and tc.eval_windows and tc.eval_split == "test"
    assert tc.eval_every in (-1, 0) or tc.eval_every % tc.checkpoint_every == 0
    # the real-data defaults: best on the valid split, early stopping (docs/training.md)
    assert tc.eval_every == -1 and tc.select_split == "auto" and tc.early_stop_patience > 0
