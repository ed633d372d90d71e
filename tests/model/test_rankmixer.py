"""RankMixer (`longseq.model.rankmixer`) and the ``model.head=rankmixer`` head: the fast forms
equal the readable loops (values and gradients), token mixing is a parameter-free permutation,
config errors name their key, request-level scoring equals pointwise scoring for the whole model,
the split user/candidate path and the serving `Scorer` give ``forward``'s scores, and the CLI
trains, evaluates and reloads a RankMixer checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longseq.data.collate import collate
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.rankmixer import (
    PerTokenFFN,
    RankMixer,
    RankMixerLayer,
    reference_per_token_ffn,
    reference_rankmixer,
    reference_token_mixing,
    token_mixing,
)
from longseq.model.rankmixer_head import RankMixerConfig
from longseq.model.stca import STCAConfig
from longseq.model.user_side import split_logits

# --------------------------------------------------------------------------- the backbone


@pytest.mark.parametrize(("t", "d", "h"), [(4, 16, 4), (3, 12, 3), (4, 16, 2), (2, 12, 6)])
def test_token_mixing_equals_the_loop(t, d, h):
    """Fast mixing == the paper's loop, also for ``H != T`` (``H`` tokens of width ``T D/H``)."""
    x = torch.randn(5, 2, t, d)
    out = token_mixing(x, h)
    assert out.shape == (5, 2, h, t * d // h)
    torch.testing.assert_close(out, reference_token_mixing(x, h), atol=0, rtol=0)


@pytest.mark.parametrize(("t", "d"), [(4, 16), (3, 9), (1, 5)])
def test_token_mixing_is_a_parameter_free_involutive_permutation(t, d):
    """Each output entry is exactly one input entry (a permutation of ``T D`` slots), and with
    ``H = T`` mixing twice gives the input back. The layer's parameters are the norms and the
    per-token FFN only."""
    x = torch.arange(t * d, dtype=torch.float64).reshape(t, d)
    mixed = token_mixing(x, t)
    assert sorted(mixed.flatten().tolist()) == x.flatten().tolist()
    torch.testing.assert_close(token_mixing(mixed, t), x, atol=0, rtol=0)
    layer = RankMixerLayer(t, d, 2.0, 0.0)
    owners = {name.split(".")[0] for name, _ in layer.named_parameters()}
    assert owners == {"norm_mix", "ffn", "norm_ffn"}


def test_per_token_ffn_equals_the_loop_and_tokens_own_their_weights():
    torch.manual_seed(0)
    ffn = PerTokenFFN(3, 8, 1.5).double()
    x = torch.randn(4, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(ffn(x), reference_per_token_ffn(ffn, x), atol=1e-12, rtol=0)
    before = ffn(x)
    with torch.no_grad():
        ffn.w1[1].add_(1.0)  # token 1's weights: tokens 0 and 2 do not see it
    after = ffn(x)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]], atol=0, rtol=0)
    assert not torch.allclose(after[:, 1], before[:, 1])


def test_rankmixer_equals_the_reference_in_values_and_gradients():
    torch.manual_seed(0)
    model = RankMixer(num_tokens=4, dim=16, num_layers=3, ffn_mult=2.0).double()
    x = torch.randn(6, 4, 16, dtype=torch.float64, requires_grad=True)
    grads = []
    outs = []
    for fn in (model, lambda v: reference_rankmixer(model, v)):
        model.zero_grad()
        x.grad = None
        out = fn(x)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape).double()).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad.clone()] + [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-12, rtol=0)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_rankmixer_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"rankmixer\.heads=2"):
        RankMixer(4, 16, 1, num_heads=2)
    with pytest.raises(ValueError, match=r"rankmixer\.dim=18"):
        RankMixer(4, 18, 1)
    with pytest.raises(ValueError, match=r"rankmixer\.layers"):
        RankMixer(4, 16, 0)
    with pytest.raises(ValueError, match=r"\[\.\.\., 4, 16\]"):
        RankMixer(4, 16, 1)(torch.randn(2, 3, 16))


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("over", "key"),
    [
        (dict(heads=3), r"model\.rankmixer\.heads=3"),
        (dict(heads=-1), r"model\.rankmixer\.heads"),
        (dict(dim=30), r"model\.rankmixer\.dim=30"),
        (dict(layers=0), r"model\.rankmixer\.layers"),
        (dict(ffn_mult=0.0), r"model\.rankmixer\.ffn_mult"),
        (dict(dropout=1.0), r"model\.rankmixer\.dropout"),
        (dict(history_token=False), r"model\.rankmixer\.dim=32 .* 3 tokens"),
    ],
)
def test_config_errors_name_the_key(over, key):
    dim = 30 if "dim" in over else 32
    cfg = ModelConfig(head="rankmixer", rankmixer=RankMixerConfig(**{"dim": dim, **over}))
    with pytest.raises(ValueError, match=key):
        cfg.validate()


def test_unknown_head_names_the_key():
    with pytest.raises(ValueError, match=r"model\.head='moe'.*mlp.*rankmixer"):
        ModelConfig(head="moe").validate()


def test_heads_equal_to_the_token_count_is_accepted():
    ModelConfig(head="rankmixer", rankmixer=RankMixerConfig(dim=32, heads=4)).validate()
    ModelConfig(head="rankmixer", rankmixer=RankMixerConfig(dim=33, history_token=False)).validate()


# --------------------------------------------------------------------------- the whole model


def _cfg(head: str = "rankmixer", **stca: object) -> ModelConfig:
    base = dict(d_model=16, num_heads=2, num_layers=2)
    return ModelConfig(
        embedding_dim=8,
        pos_dim=4,
        stca=STCAConfig(**{**base, **stca}),
        head=head,
        head_hidden=[16],
        rankmixer=RankMixerConfig(dim=16, layers=2, ffn_mult=2.0),
    )


WINDOWS = np.array([0, 1, 5, 1000, 17, 3, 64, 2, 8, 40])


def test_default_head_is_the_mlp_with_its_parameter_names(sizes):
    """``head`` defaults to ``mlp``: the same modules, names and parameter count as before."""
    assert ModelConfig().head == "mlp"
    model = LongSeqModel(dataclasses.replace(_cfg(), head="mlp"), sizes, ["click"])
    names = [n for n, _ in model.named_parameters() if ".head." in n]
    assert names == [
        "interaction.head.0.weight",
        "interaction.head.0.bias",
        "interaction.head.2.weight",
        "interaction.head.2.bias",
    ]


def test_a_checkpoint_config_without_head_loads_as_mlp():
    """Checkpoints written before ``model.head`` existed hold the MLP head."""
    from longseq.model.model import model_config_from_saved

    saved = dataclasses.asdict(ModelConfig())
    del saved["head"], saved["rankmixer"]
    assert model_config_from_saved(saved).head == "mlp"
    saved.update(head="rankmixer", rankmixer={"dim": 32, "layers": 1})
    cfg = model_config_from_saved(saved)
    assert (cfg.head, cfg.rankmixer.dim, cfg.rankmixer.layers) == ("rankmixer", 32, 1)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_request_level_rows_equal_pointwise_rows(requests_table, sizes, layout):
    """``head=rankmixer``: a request's targets scored in one row (the user side, its history
    token included, computed once and broadcast) == each target in its own row with its own copy
    of the user side: same logits, loss and gradients."""
    torch.manual_seed(0)
    kernel = "pairs" if layout == "packed" else "kv"
    # two logit columns (the data has one label: both columns learn it, through their own logit)
    model = LongSeqModel(_cfg(layout=layout, kernel=kernel), sizes, ["click", "click2"])
    rlb = collate(requests_table, ["click", "click"], WINDOWS)
    pw = collate(requests_table, ["click", "click"], WINDOWS, pointwise=True)
    assert pw.batch_size == int(rlb.num_targets.sum()) > rlb.batch_size
    logits, grads = [], []
    for batch in (rlb, pw):
        model.zero_grad()
        out = model(batch)
        model.loss(out, batch).backward()
        logits.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert logits[0].shape == (int(rlb.num_targets.sum()), 2)
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=0)
    assert logits[0].std() > 1e-4
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)
    assert grads[0]["interaction.head.user_proj.history.weight"].abs().sum() > 0


def test_split_path_equals_forward(requests_table, sizes):
    """``score_targets(encode_users(...))`` (what serving runs) == ``forward``, both layouts of
    the user state; without the targets' features the head says what it needs."""
    torch.manual_seed(0)
    model = LongSeqModel(_cfg(), sizes, ["click"]).eval()
    batch = collate(requests_table, ["click"], WINDOWS)
    with torch.no_grad():
        want = model(batch)
        torch.testing.assert_close(split_logits(model, batch), want, atol=1e-5, rtol=0)
        torch.testing.assert_close(split_logits(model, batch, True), want, atol=1e-5, rtol=0)
        inter = model.interaction
        emb = model.ec(batch.sparse)
        x, lengths, hid = inter.history_tokens(emb, batch.sparse)
        xt, tid = inter.target_tokens(emb, batch.sparse)
        user = inter.encode_users(x, lengths, hid)
        assert user.head_tokens is not None and user.head_tokens.shape == (10, 1, 16)
        with pytest.raises(ValueError, match=r"model\.head=rankmixer.*target_features"):
            inter.score_targets(user, xt, batch.num_targets, tid)


def test_scorer_scores_as_forward(requests_table, sizes):
    """The in-process `Scorer` (cached per-request states, head tokens included) scores as
    ``forward`` (the export: tests/serve/test_export.py)."""
    from longseq.serve import Scorer

    torch.manual_seed(0)
    model = LongSeqModel(_cfg(), sizes, ["click"]).eval()
    batch = collate(requests_table, ["click"], WINDOWS)
    with torch.no_grad():
        want = torch.sigmoid(model(batch))
    scorer = Scorer(model, 1 << 20)
    torch.testing.assert_close(scorer.score_batch(batch), want, atol=1e-5, rtol=0)
    versions = list(range(batch.batch_size))
    for _ in range(2):  # the second pass scores from the cache
        torch.testing.assert_close(scorer.score_requests(batch, versions), want, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- the CLI


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.e2e
def test_cli_trains_evaluates_and_reloads_a_rankmixer_checkpoint(tmp_path: Path):
    """``ci`` data, one process under torchrun, ``model.head=rankmixer``: trains a few steps,
    evaluates at the end, and the checkpoint reloads (`Scorer.from_checkpoint`) and scores as
    the eval CLI does."""
    from longseq.serve import Scorer

    data, run = tmp_path / "ci", tmp_path / "run"
    py = [sys.executable, "-m"]
    _run([*py, "longseq.datasets.synth", "preset=ci", f"out={data}", "seed=0", "num_users=1600"])
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "1", "-m"]
    _run(
        [
            *torchrun,
            "longseq.train",
            "experiment=ci",
            f"data.path={data}",
            f"run_dir={run}",
            "model.head=rankmixer",
            "model.rankmixer.layers=1",
            "trainer.max_steps=6",
            "trainer.checkpoint_every=6",
            "trainer.progress=false",
            "trainer.eval_at_end=true",
            "trainer.eval_windows=[50]",
        ]  # fmt: skip
    )
    saved = json.loads((run / "checkpoints/step_6/longseq.json").read_text())
    assert saved["model"]["head"] == "rankmixer" and saved["model"]["rankmixer"]["layers"] == 1
    out = tmp_path / "eval"
    _run([*py, "longseq.eval", f"checkpoint={run}", f"data.path={data}", f"out={out}",
          "progress=false", "windows=[50]"])  # fmt: skip
    scorer = Scorer.from_checkpoint(run, cache_mb=0)
    assert scorer.model.cfg.head == "rankmixer"
    assert type(scorer.model.interaction.head).__name__ == "RankMixerHead"
