"""In-process training for the tests: a one-process group from the environment (restored and
torn down after the test) and the ``experiment=tiny`` job composed as the CLI composes it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def one_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set torchrun's variables for one process (a free port) through ``monkeypatch``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    for k, v in env.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def one_process_group(monkeypatch: pytest.MonkeyPatch):
    """torchrun's variables for one process (restored afterwards); the group is destroyed at
    the end of the test."""
    one_process_env(monkeypatch)
    yield
    from longseq.parallel.env import destroy_distributed

    destroy_distributed()


def train_in_process(job) -> None:  # noqa: ANN001 - a TrainJobConfig
    """``longseq.train.loop.train(job)`` in a one-process group, environment restored and the
    group destroyed afterwards (for module-scoped fixtures)."""
    from longseq.parallel.env import destroy_distributed
    from longseq.train.loop import train

    with pytest.MonkeyPatch.context() as mp:
        one_process_env(mp)
        try:
            train(job)
        finally:
            destroy_distributed()


def tiny_job(data: Path, run: Path, steps: int, *overrides: str):
    """The `TrainJobConfig` of ``python -m longseq.train experiment=tiny ...`` (checkpoint and
    log every 2 steps, no progress bar)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR
    from longseq.train.config import register

    register()
    args = [
        "experiment=tiny",
        f"data.path={data}",
        f"run_dir={run}",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every=2",
        "trainer.log_every=2",
        "trainer.progress=false",
        *overrides,
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose("train", overrides=args))
