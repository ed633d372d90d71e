"""``trainer.precision``: bf16 autocast around the forward, float32 loss and weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from longseq.train.config import TrainerConfig
from longseq.train.task import TrainTask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dist"))
from dist_common import model_cfg, rank_batch, sizes  # noqa: E402


def _task(data: Path, precision: str, device: str = "cpu") -> TrainTask:
    from longseq.model.model import LongSeqModel

    torch.manual_seed(2)
    model = LongSeqModel(model_cfg(), sizes(data), ["click"]).to(device)
    return TrainTask(model, precision, device)


def _run(task: TrainTask, batch) -> dict:
    dtypes = {}
    tower = task.model.interaction.tower
    tower.attn[0].w_q.register_forward_hook(lambda m, i, o: dtypes.__setitem__("attn", o.dtype))
    task.model.interaction.head.register_forward_hook(
        lambda m, i, o: dtypes.__setitem__("logits", o.dtype)
    )
    loss, (counters, _probs, _labels) = task(batch)
    loss.backward()
    grads = [p.grad for p in task.parameters() if p.grad is not None]
    return {"loss": loss.detach(), "counters": counters, "dtypes": dtypes, "grads": grads}


def test_bf16_autocasts_the_forward_and_keeps_the_loss_in_fp32(tiny_data: Path):
    batch = rank_batch(tiny_data, 0)
    fp32 = _run(_task(tiny_data, "fp32"), batch)
    bf16 = _run(_task(tiny_data, "bf16"), batch)
    assert fp32["dtypes"] == {"attn": torch.float32, "logits": torch.float32}
    assert bf16["dtypes"] == {"attn": torch.bfloat16, "logits": torch.bfloat16}
    assert bf16["loss"].dtype == fp32["loss"].dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in bf16["grads"])
    assert all(p.dtype == torch.float32 for p in _task(tiny_data, "bf16").parameters())
    # the same model, rounded: close but not bit-identical
    assert float(bf16["loss"]) == pytest.approx(float(fp32["loss"]), abs=2e-2)
    assert float(bf16["loss"]) != float(fp32["loss"])
    torch.testing.assert_close(bf16["counters"][1:], fp32["counters"][1:])


def test_precision_errors_name_the_key():
    with pytest.raises(ValueError, match=r"trainer\.precision='fp16'"):
        TrainerConfig(precision="fp16").validate("cpu")
    with pytest.raises(ValueError, match=r"trainer\.activation_checkpointing='x'"):
        TrainerConfig(activation_checkpointing="x").validate("cpu")
    TrainerConfig(precision="bf16", activation_checkpointing="stca_layers").validate("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda(tiny_data: Path):  # pragma: no cover - no GPU in CI
    batch = rank_batch(tiny_data, 0).to(torch.device("cuda"))
    fp32 = _run(_task(tiny_data, "fp32", "cuda"), batch)
    bf16 = _run(_task(tiny_data, "bf16", "cuda"), batch)
    assert bf16["dtypes"]["attn"] == torch.bfloat16
    assert bf16["loss"].dtype == torch.float32
    assert float(bf16["loss"]) == pytest.approx(float(fp32["loss"]), abs=2e-2)
