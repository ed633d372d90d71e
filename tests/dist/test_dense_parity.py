"""k training steps on 2 gloo ranks == k steps of one unsharded process, for DDP and FSDP2.

Each rank trains with the trainer's own pieces (`TrainTask`, `shard_model`, `build_optimizer`
with AdamW + gradient clipping, `PipelinedStepper` = TrainPipelineSparseDist) on its own batches;
the reference in the pytest process trains the plain `LongSeqModel` on the rank-averaged loss
(DDP/FSDP2 and TorchRec average gradients over ranks) with torch's SGD on the tables (what the
fused SGD does) and AdamW on the rest, clipping the dense gradients' global norm exactly as
`ClippedOptimizer` does. Per-step losses of each rank and the final weights must match. The
clip threshold is low enough to clip every step, so a wrong (e.g. per-shard) norm under FSDP2
would show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dist_common import WORLD, model_cfg, sizes

from longseq.parallel.spawn import run_ranks

pytestmark = pytest.mark.dist

STEPS = 3
SPARSE_LR = 2.0  # large: history-only rows get tiny gradients at init
DENSE = dict(lr=1e-2, weight_decay=0.01, betas=[0.9, 0.98], warmup_steps=0, min_lr_ratio=1.0)
CLIP = 0.05
SETUPS = {
    "ddp_item_row_wise": ("ddp", {"item": "row_wise"}),
    "ddp_item_table_wise": ("ddp", {"item": "table_wise"}),
    "fsdp2_item_row_wise": ("fsdp2", {"item": "row_wise"}),
    "fsdp2_item_table_wise": ("fsdp2", {"item": "table_wise"}),
}


def _batches(data: Path, rank: int) -> list:
    """The first STEPS unshuffled batches of ``rank``'s share of the train split."""
    from dist_common import BATCH

    from longseq.data.collate import collate
    from longseq.data.reader import RequestReader

    it = iter(RequestReader(data / "train", BATCH, rank, WORLD, shuffle=False))
    return [collate(next(it), ["click"]) for _ in range(STEPS)]


def _full_weights(dmp) -> dict[str, object]:
    """Dense weights as full tensors (FSDP2 DTensors gathered: collective), tables as local
    ``[(offsets, shard)]``."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor
    from torch.distributed.tensor import DTensor

    from longseq.parallel.checkpoint import model_state_dict

    out: dict[str, object] = {}
    for key, value in model_state_dict(dmp).items():
        if isinstance(value, ShardedTensor):
            out[key] = [
                (list(s.metadata.shard_offsets), s.tensor.detach().clone())
                for s in value.local_shards()
            ]
        elif isinstance(value, DTensor):
            out[key] = value.full_tensor().detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


def _worker(rank: int, world: int, data: Path, ref_state: dict) -> dict:
    from torch.distributed.tensor import DTensor

    from longseq.model.model import LongSeqModel
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model
    from longseq.train.optim import DenseOptimConfig, build_optimizer
    from longseq.train.stepper import PipelinedStepper
    from longseq.train.task import TrainTask

    batches = _batches(data, rank)
    tables = {k: v for k, v in ref_state.items() if k.startswith("ec.")}
    results = {}
    for name, (dense, sharding) in SETUPS.items():
        torch.manual_seed(1000 + rank)  # not the reference's weights
        model = LongSeqModel(model_cfg(), sizes(data), ["click"])
        model.interaction.load_state_dict(
            {k[len("interaction.") :]: v for k, v in ref_state.items() if k.startswith("inter")}
        )  # dense weights before sharding: fully_shard/DDP keep them
        cfg = ShardingConfig(tables=sharding, sparse_optimizer="sgd", sparse_lr=SPARSE_LR)
        cfg.dense = dense
        dmp = shard_model(TrainTask(model), cfg, torch.device("cpu"))
        dmp.load_state_dict({"model." + k: v for k, v in tables.items()}, strict=False)
        opt = build_optimizer(dmp, DenseOptimConfig(**DENSE, grad_clip=CLIP))
        dense_params = [p for n, p in dmp.named_parameters() if ".interaction." in n]
        stepper = PipelinedStepper(dmp, opt, iter(batches + batches[-1:]), torch.device("cpu"))
        losses = [float(stepper.step()[0]) for _ in range(STEPS)]
        results[name] = {
            "losses": losses,
            "pipelined": stepper.pipelined_modules(),
            "dtensor": [isinstance(p, DTensor) for p in dense_params],
            "local_numel": sum(
                (p.to_local() if isinstance(p, DTensor) else p).numel() for p in dense_params
            ),
            "weights": _full_weights(dmp),
        }
    return results


def _reference(ref: torch.nn.Module, batches: list[list]) -> list[list[float]]:
    """Train ``ref`` STEPS steps on the rank-averaged loss; per-step losses of each rank."""
    dense = [p for n, p in ref.named_parameters() if not n.startswith("ec.")]
    adamw = torch.optim.AdamW(
        dense, lr=DENSE["lr"], weight_decay=DENSE["weight_decay"], betas=tuple(DENSE["betas"])
    )
    sgd = torch.optim.SGD(ref.ec.parameters(), lr=SPARSE_LR)
    losses = []
    for step in range(STEPS):
        per_rank = [ref.loss(ref(bs[step]), bs[step]) for bs in batches]
        losses.append([float(x.detach()) for x in per_rank])
        (sum(per_rank) / WORLD).backward()
        sgd.step()
        torch.nn.utils.clip_grad_norm_(dense, CLIP)
        adamw.step()
        adamw.zero_grad()
        sgd.zero_grad()
    return losses


@pytest.fixture(scope="module")
def parity(tiny_data: Path):
    from longseq.model.model import LongSeqModel

    torch.manual_seed(7)
    ref = LongSeqModel(model_cfg(), sizes(tiny_data), ["click"])
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    batches = [_batches(tiny_data, r) for r in range(WORLD)]
    want_losses = _reference(ref, batches)
    got = run_ranks(WORLD, _worker, tiny_data, state, timeout=300)
    return state, ref.state_dict(), want_losses, got


@pytest.mark.parametrize("setup", list(SETUPS))
def test_losses_and_weights_match_one_process(parity, setup):
    init, want, want_losses, got = parity
    for rank in range(WORLD):
        res = got[rank][setup]
        assert res["pipelined"] > 0, "TrainPipelineSparseDist pipelined nothing"
        for step in range(STEPS):
            assert res["losses"][step] == pytest.approx(want_losses[step][rank], abs=1e-5), step
    for key, full in want.items():
        w0 = got[0][setup]["weights"][key]
        if isinstance(w0, torch.Tensor):  # dense: the full tensor on every rank
            for rank in range(WORLD):
                w = got[rank][setup]["weights"][key]
                torch.testing.assert_close(w, full, atol=2e-5, rtol=0, msg=f"{setup} {key}")
            continue
        gathered = torch.full_like(full, float("nan"))
        for rank in range(WORLD):
            for (r0, c0), t in got[rank][setup]["weights"][key]:
                gathered[r0 : r0 + t.shape[0], c0 : c0 + t.shape[1]] = t
        assert not gathered.isnan().any(), f"{setup} {key}: shards do not cover the table"
        torch.testing.assert_close(gathered, full, atol=2e-5, rtol=0, msg=f"{setup} {key}")
    # training moved the weights: the comparison is not between two initialisations
    for key in ("interaction.tower.out_proj.weight", "ec.embeddings.item.weight"):
        assert not torch.allclose(init[key], want[key], atol=1e-4), key


def test_fsdp2_shards_the_dense_weights(parity):
    """Under FSDP2 every dense parameter is a DTensor and each rank holds about half of them;
    under DDP they are plain replicated tensors."""
    _, _, _, got = parity
    for rank in range(WORLD):
        fsdp, ddp = got[rank]["fsdp2_item_row_wise"], got[rank]["ddp_item_row_wise"]
        assert fsdp["dtensor"] and all(fsdp["dtensor"])
        assert not any(ddp["dtensor"])
        assert fsdp["local_numel"] < 0.6 * ddp["local_numel"]
    total = sum(got[r]["fsdp2_item_row_wise"]["local_numel"] for r in range(WORLD))
    assert total == got[0]["ddp_item_row_wise"]["local_numel"]
