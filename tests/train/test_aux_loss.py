"""The model's auxiliary loss (STCA's co-occurrence loss) in the training step: added to the
labels' loss once, counted apart, and absent when the model has none or is not training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from longseq.model.model import LongSeqModel
from longseq.train.task import TrainTask, step_counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dist"))
from dist_common import model_cfg, rank_batch, sizes  # noqa: E402


def _task(data: Path, cooccur: float) -> TrainTask:
    torch.manual_seed(2)
    cfg = model_cfg()
    cfg.stca.match_bias = True  # the category negatives compare category ids
    cfg.stca.soft_match = True
    cfg.stca.soft_match_cooccur = cooccur
    cfg.stca.soft_match_negatives = "category"
    return TrainTask(LongSeqModel(cfg, sizes(data), ["click"]))


@pytest.mark.parametrize("cooccur", [0.0, 0.5])
def test_the_step_adds_the_aux_loss_once_and_counts_it_apart(tiny_data: Path, cooccur: float):
    batch = rank_batch(tiny_data, 0)
    task = _task(tiny_data, cooccur)
    loss, (counters, _probs, _labels) = task(batch)
    c = step_counters(counters)
    assert task.model.aux_loss() is None  # the step took it: it is counted once
    with torch.no_grad():  # the same weights: the labels' loss (no aux loss without grad)
        bce = task.model.loss(task.model(batch), batch)
    assert task.model.aux_loss() is None
    assert c["loss"] == pytest.approx(float(bce), rel=1e-6)
    assert float(loss) == pytest.approx(c["loss"] + c["aux_loss"], rel=1e-6)
    if not cooccur:
        assert c["aux_loss"] == 0.0
        return
    assert c["aux_loss"] > 0.0
    loss.backward()  # the aux loss reaches the soft match's projection
    assert task.model.interaction.tower.soft.proj.weight.grad.abs().sum() > 0
    task.eval()
    with torch.no_grad():
        _, (counters, _p, _l) = task(batch)
    assert step_counters(counters)["aux_loss"] == 0.0  # no aux loss outside training
