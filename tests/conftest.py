"""Shared fixtures: one tiny synthetic data set per test session, small model configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

#: ``configs/preset/tiny.yaml`` as keyword arguments (kept literal so fixtures need no Hydra).
TINY_PRESET = dict(
    num_users=128,
    targets_per_request=8,
    hist_len=256,
    hist_len_dist="lognormal",
    hist_len_median=96,
    hist_len_sigma=0.8,
    hist_len_min=8,
    num_categories=20,
    items_per_category=20,
    m=2,
    R=2,
    w_s=16,
    rho=0.05,
    chunk_users=64,
    row_group_size=32,
)


def make_tiny(out: Path, seed: int = 1, **over: object) -> Path:
    """Write the tiny synthetic data set into ``out`` (about a second) and return ``out``."""
    from longseq.datasets.synth import SynthConfig, generate

    cfg = SynthConfig(out=str(out), seed=seed, progress=False, **{**TINY_PRESET, **over})
    cfg.oracle_windows = [16]
    generate(cfg)
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the tests run many tiny ops, where OpenMP workers only contend (on a
    busy 2-core machine a 5 s module took over 70 s with the default thread count); it also
    makes float reductions reproducible. Restored at the end of the session."""
    try:
        import torch
    except ImportError:  # pragma: no cover - every test environment has torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset (seed 1): ``train/`` and ``test/`` Parquet, ``meta.json``. Read-only."""
    return make_tiny(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_feature_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with the generator's side features on (``features=true``: user, context
    and candidate features of every kind, declared in ``meta.json``; a valid split). Read-only."""
    return make_tiny(tmp_path_factory.mktemp("tiny_features"), features=True, valid_fraction=0.1)


@pytest.fixture(scope="session")
def tiny_meta(tiny_data: Path) -> dict:
    return json.loads((tiny_data / "meta.json").read_text())
