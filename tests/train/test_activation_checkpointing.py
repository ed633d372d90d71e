"""``trainer.activation_checkpointing=tower_layers`` (``stca_layers``, its earlier name, still
selects it): same loss and gradients, fewer saved activations, the tower's layers really
recomputed, and TrainPipelineSparseDist still pipelines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from longseq.parallel.ac import apply_activation_checkpointing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dist"))
from dist_common import model_cfg, rank_batch, sizes  # noqa: E402

from longseq.parallel.spawn import run_ranks  # noqa: E402


def _model(data: Path, ac: str, seed: int = 5, **model_over):
    from longseq.model.model import LongSeqModel

    torch.manual_seed(seed)
    cfg = model_cfg()
    for k, v in model_over.items():
        setattr(cfg, k, v)
    model = LongSeqModel(cfg, sizes(data), ["click"])
    names = apply_activation_checkpointing(model, ac)
    return model, names


def _loss_grads_saved(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(model(batch), batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved[0]


def test_same_loss_and_gradients_with_fewer_saved_activations(tiny_data: Path):
    batch = rank_batch(tiny_data, 0)
    plain, none = _model(tiny_data, "none")
    ac, names = _model(tiny_data, "tower_layers")
    assert none == []
    assert _model(tiny_data, "stca_layers")[1] == names  # the earlier name: the same mode
    layers = model_cfg().stca.num_layers
    assert len(names) == 2 * layers + (layers - 1)  # hist_ffn, attn per layer; fuse_ffn 2..M
    # recomputation happens: the layers' inner modules start again in backward (pre-hooks:
    # the non-reentrant recompute stops early, once it has every tensor backward needs)
    calls = {"hist_ffn": 0, "attn": 0}
    tower = ac.interaction.tower
    for key, inner in (("hist_ffn", tower.hist_ffn[0].blocks[0]), ("attn", tower.attn[1].w_k)):
        inner.register_forward_pre_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))

    loss0, grads0, saved0 = _loss_grads_saved(plain, batch)
    loss1, grads1, saved1 = _loss_grads_saved(ac, batch)
    assert calls == {"hist_ffn": 2, "attn": 2}
    assert saved1 < 0.8 * saved0, (saved1, saved0)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    assert grads0.keys() == grads1.keys()
    # parameter names are unchanged (checkpoints and optimizer keys do not move)
    assert list(dict(plain.named_parameters())) == list(dict(ac.named_parameters()))
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], rtol=0, atol=1e-7, msg=k)
    assert any(g.abs().sum() > 0 for k, g in grads0.items() if "hist_ffn" in k)


def test_config_errors_name_the_key(tiny_data: Path):
    with pytest.raises(ValueError, match="trainer.activation_checkpointing='all'"):
        _model(tiny_data, "all")
    with pytest.raises(ValueError, match=r"tower_layers: .*MeanPoolingTower.*checkpoint_layers"):
        _model(tiny_data, "tower_layers", tower="pooling")


def _pipelined_worker(rank: int, world: int, data: Path, ac: str) -> dict:
    from longseq.model.model import LongSeqModel
    from longseq.parallel.checkpoint import model_state_dict
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model
    from longseq.train.optim import DenseOptimConfig, build_optimizer
    from longseq.train.stepper import PipelinedStepper
    from longseq.train.task import TrainTask

    torch.manual_seed(0)
    model = LongSeqModel(model_cfg(), sizes(data), ["click"], device="meta")
    apply_activation_checkpointing(model, ac)
    dmp = shard_model(TrainTask(model), ShardingConfig(), torch.device("cpu"))
    opt = build_optimizer(dmp, DenseOptimConfig(warmup_steps=0))
    batches = [rank_batch(data, 0)] * 4
    stepper = PipelinedStepper(dmp, opt, iter(batches), torch.device("cpu"))
    losses = [float(stepper.step()[0]) for _ in range(3)]
    state = {  # one rank: every table is a single local shard
        k: (v.local_shards()[0].tensor if hasattr(v, "local_shards") else v).detach().clone()
        for k, v in model_state_dict(dmp).items()
    }
    return {"pipelined": stepper.pipelined_modules(), "losses": losses, "weights": state}


@pytest.mark.dist
def test_pipeline_still_pipelines_and_trains_identically(tiny_data: Path):
    """One rank, the trainer's DMP + TrainPipelineSparseDist: AC on pipelines the embedding
    lookup as AC off does, and 3 steps give the same losses and weights."""
    off = run_ranks(1, _pipelined_worker, tiny_data, "none", timeout=180)[0]
    on = run_ranks(1, _pipelined_worker, tiny_data, "tower_layers", timeout=180)[0]
    assert on["pipelined"] == off["pipelined"] > 0
    assert on["losses"] == pytest.approx(off["losses"], abs=1e-6)
    assert off["losses"][0] != pytest.approx(off["losses"][-1], abs=1e-4)  # it trained
    for k, w in off["weights"].items():
        torch.testing.assert_close(on["weights"][k], w, rtol=0, atol=1e-6, msg=k)
