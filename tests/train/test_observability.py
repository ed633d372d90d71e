"""Training observability, in process: windowed AUC/NE (torchrec.metrics) against scikit-learn,
the TensorBoard backend, rank-aware logging, the progress lines, the one config validation,
the preemption flag and the sharding key in the checkpoint meta."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score


def _batches(seed: int = 0, n: int = 9, tasks: int = 2):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        rows = int(torch.randint(10, 40, (), generator=g))
        p = torch.rand(rows, tasks, generator=g)
        out.append((p, (torch.rand(rows, tasks, generator=g) < p).float()))
    return out


def test_window_auc_equals_sklearn_on_the_last_window_targets():
    from longseq.train.train_metrics import WindowedRecMetrics

    window = 100
    m = WindowedRecMetrics(["click", "buy"], window)
    batches = _batches()
    for p, y in batches:
        m.update(p, y)
    got = m.compute()
    probs = torch.cat([p for p, _ in batches])[-window:]
    labels = torch.cat([y for _, y in batches])[-window:]
    for k, task in enumerate(["click", "buy"]):
        want = roc_auc_score(labels[:, k].numpy(), probs[:, k].numpy())
        assert got[f"train/auc/{task}"] == pytest.approx(want, abs=1e-6)


def test_window_ne_is_log_loss_over_the_entropy_of_the_window_rate():
    """TorchRec's window NE keeps the most recent whole batches totalling <= window targets."""
    from longseq.train.train_metrics import WindowedRecMetrics

    window = 100
    m = WindowedRecMetrics(["click"], window)
    batches = _batches(seed=3, tasks=1)
    for p, y in batches:
        m.update(p, y)
    kept, size = [], 0
    for p, y in reversed(batches):
        if size + len(p) > window:
            break
        kept.append((p, y))
        size += len(p)
    p = torch.cat([b[0] for b in kept]).double().numpy()[:, 0]
    y = torch.cat([b[1] for b in kept]).double().numpy()[:, 0]
    ce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    r = y.mean()
    want = ce / -(r * np.log(r) + (1 - r) * np.log(1 - r))
    assert m.compute()["train/ne/click"] == pytest.approx(want, rel=1e-6)


def test_tensorboard_backend_writes_the_loss(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from longseq.train.logging import MetricsLogger

    log = MetricsLogger(tmp_path, enabled=True, tensorboard=True)
    log.log(2, {"loss": 0.7, "train/auc/click": None, "note": "x"})
    log.log(4, {"loss": 0.5})
    log.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("loss")] == [(2, 0.7), (4, 0.5)]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()]
    assert rows[0] == {"step": 2, "loss": 0.7, "train/auc/click": None, "note": "x"}
    assert not MetricsLogger(tmp_path / "r1", enabled=False, tensorboard=True).backends


def test_logging_is_rank_aware(capsys):
    from longseq.log import get_logger, setup_logging

    log = get_logger("longseq.train")
    try:
        setup_logging(0)
        log.info("hello")
        err = capsys.readouterr().err
        assert err.startswith("[longseq rank0 ") and err.rstrip().endswith("] hello")
        setup_logging(1)
        log.info("quiet")
        log.warning("loud")
        err = capsys.readouterr().err
        assert "quiet" not in err and "[longseq rank1 " in err and "loud" in err
        ours = [
            h for h in logging.getLogger("longseq").handlers if type(h).__name__ == "_StderrHandler"
        ]
        assert len(ours) == 1  # idempotent (other handlers, e.g. pytest's capture, may be there)
    finally:
        setup_logging(0)


def test_progress_logs_one_line_per_log_step_without_a_tty(capsys):
    from longseq.log import setup_logging
    from longseq.train.progress import Progress

    setup_logging(0)
    p = Progress(0, 10, enabled=True, bar=True)  # stderr is captured: not a TTY
    for _ in range(5):
        p.update()
    p.logged(5, {"loss": 0.5, "targets_per_s": 100.0})
    p.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "step 5/10 loss 0.5000 targets/s 100 eta" in err


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("trainer", "log_every", 0, "trainer.log_every must be >= 1"),
        ("trainer", "metrics_window", -1, "trainer.metrics_window must be >= 0"),
        ("data", "batch_size", 0, "data.batch_size must be > 0"),
        ("sharding", "dense", "zero", "sharding.dense"),
        ("wandb", "mode", "loud", "wandb.mode must be"),
    ],
)
def test_job_validate_names_the_key(section: str, key: str, value, match: str):
    from longseq.train.config import TrainJobConfig

    cfg = TrainJobConfig(run_dir="r")
    cfg.validate("cpu")
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate("cpu")


def test_preemption_flag_without_a_process_group():
    from longseq.train.preemption import Preemption

    p = Preemption()
    assert p.local() == 0.0 and not p.agreed()
    p.flag = True
    assert p.local() == 1.0 and p.agreed()


def test_sharding_is_recorded_and_a_changed_sharding_still_resumes(tiny_data: Path, tmp_path):
    from longseq.train.config import TrainJobConfig
    from longseq.train.guards import check_resume_compatible
    from longseq.train.run_meta import checkpoint_meta, read_dataset_meta, table_sizes

    cfg = TrainJobConfig(run_dir=str(tmp_path))
    cfg.data.path = str(tiny_data)
    sizes = table_sizes(read_dataset_meta(tiny_data))
    saved = checkpoint_meta(cfg, sizes, ["click"], 2)
    assert saved["sharding"]["tables"] == {"item": "row_wise"}
    cfg.sharding.tables = {"item": "table_wise"}
    cfg.sharding.dense = "fsdp2"
    now = checkpoint_meta(cfg, sizes, ["click"], 1)
    schema = type(cfg.model)
    check_resume_compatible(tmp_path, saved, now, schema)  # DCP reshards: allowed
    old = {k: v for k, v in saved.items() if k != "sharding"}  # written before the key existed
    check_resume_compatible(tmp_path, old, now, schema)


def test_grad_norm_is_the_mean_of_the_steps_since_the_last_read():
    from torchrec.optim.keyed import KeyedOptimizerWrapper

    from longseq.train.optim import ClippedOptimizer

    w = torch.nn.Parameter(torch.zeros(3))
    opt = ClippedOptimizer(
        [("dense", KeyedOptimizerWrapper({"w": w}, lambda p: torch.optim.SGD(p, lr=0.0)))],
        [w],
        max_norm=1.0,
    )
    for g in ([3.0, 4.0, 0.0], [0.0, 0.0, 1.0]):
        w.grad = torch.tensor(g)
        opt.step()
    assert opt.pop_grad_norm() == pytest.approx(3.0)  # (5 + 1) / 2, before clipping
    assert opt.pop_grad_norm() is None


def _two_rank_worker(rank: int, world: int, window: int) -> dict:
    from longseq.train.train_metrics import WindowedRecMetrics

    m = WindowedRecMetrics(["click"], window, world, rank)
    for p, y in _batches(seed=10 + rank, tasks=1):
        m.update(p, y)
    return m.compute()


@pytest.mark.dist
def test_window_auc_over_two_gloo_ranks_gathers_both_windows():
    """Each rank keeps its last ceil(window / 2) targets; rank 0 gets the AUC of their union."""
    from longseq.parallel.spawn import run_ranks

    window = 100
    out = run_ranks(2, _two_rank_worker, window, timeout=120)
    assert out[1] == {}
    probs, labels = [], []
    for rank in range(2):
        batches = _batches(seed=10 + rank, tasks=1)
        probs.append(torch.cat([p for p, _ in batches])[-window // 2 :, 0])
        labels.append(torch.cat([y for _, y in batches])[-window // 2 :, 0])
    want = roc_auc_score(torch.cat(labels).numpy(), torch.cat(probs).numpy())
    assert out[0]["train/auc/click"] == pytest.approx(want, abs=1e-6)
