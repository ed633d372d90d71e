"""The packed layout (``pairs`` kernel) equals the padded one and the readable reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.data.collate import collate
from longseq.data.reader import list_parquet_files
from longseq.model.embeddings import TableSizes
from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.ops.dispatch import packed_history
from longseq.model.ops.history import PaddedHistory
from longseq.model.ops.pairs import request_pairs, segment_softmax
from longseq.model.stca import STCAConfig, STCATower, TargetAttention, reference_attention


def test_request_pairs_are_every_target_event_pair_of_a_request():
    hist, tgts = torch.tensor([2, 0, 3]), torch.tensor([1, 2, 2])
    pt, pe = request_pairs(hist, tgts)
    # targets 0 | 1,2 | 3,4 ; events 0,1 | - | 2,3,4
    want = [(0, 0), (0, 1), (3, 2), (3, 3), (3, 4), (4, 2), (4, 3), (4, 4)]
    assert list(zip(pt.tolist(), pe.tolist())) == want


def test_segment_softmax_matches_a_per_segment_softmax():
    torch.manual_seed(0)
    scores, seg = torch.randn(7, 2, dtype=torch.float64), torch.tensor([0, 0, 0, 2, 2, 2, 2])
    scores[3] += 800.0  # max-subtraction: no overflow
    got = segment_softmax(scores, seg, 3)
    for k in (0, 2):
        torch.testing.assert_close(got[seg == k], torch.softmax(scores[seg == k], 0))


def _ragged(rng: np.random.Generator, b: int, d: int):
    hist = torch.tensor(rng.integers(0, 6, b))
    tgts = torch.tensor(rng.integers(0, 4, b))
    x = torch.tensor(rng.standard_normal((int(hist.sum()), d)))
    q = torch.tensor(rng.standard_normal((int(tgts.sum()), d)))
    return hist, tgts, x, q


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 5),
    heads=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 99),
)
def test_pair_attention_equals_padded_kernels_and_reference(b, heads, seed):
    """Ragged histories (incl. empty ones) and ragged target counts (incl. none)."""
    rng = np.random.default_rng(seed)
    d = 4 * heads
    hist, tgts, x, q = _ragged(rng, b, d)
    torch.manual_seed(seed)
    attn = TargetAttention(d, heads, "pairs").double()
    kernel, history = packed_history("pairs", hist, tgts, q)
    got = attn(q, x, history, kernel)
    lmax, tmax = max(int(hist.max()), 1), max(int(tgts.max()), 1)
    xp, qp = jagged_to_padded(x, hist, lmax), jagged_to_padded(q, tgts, tmax)
    mask = torch.arange(lmax)[None, :] < hist[:, None]
    want = padded_to_jagged(reference_attention(attn, qp, xp, mask), tgts)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    for padded in ("kv", "absorbed", "sdpa", "reference"):
        out = attn(qp, xp, PaddedHistory(mask), padded)
        torch.testing.assert_close(padded_to_jagged(out, tgts), got)


@pytest.mark.parametrize("shared", [False, True])
def test_tower_packed_equals_padded_with_gradients(shared):
    rng = np.random.default_rng(1)
    hist, tgts, x, q = _ragged(rng, 4, 16)
    torch.manual_seed(0)
    tower = STCATower(STCAConfig(d_model=16, num_heads=2, num_layers=3, shared_hist_ffn=shared))
    tower = tower.double()
    outs, grads = [], []
    for layout in ("padded", "packed"):
        tower.zero_grad()
        xi, qi = x.clone().requires_grad_(), q.clone().requires_grad_()
        if layout == "packed":
            z = tower.forward_packed(xi, hist, qi, tgts)
        else:
            lmax, tmax = int(hist.max()), int(tgts.max())
            mask = torch.arange(lmax)[None, :] < hist[:, None]
            zp = tower(jagged_to_padded(xi, hist, lmax), mask, jagged_to_padded(qi, tgts, tmax))
            z = padded_to_jagged(zp, tgts)
        (z * torch.arange(z.numel(), dtype=z.dtype).view_as(z).cos()).sum().backward()
        outs.append(z.detach())
        grads.append([xi.grad, qi.grad] + [p.grad.clone() for p in tower.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_model_layouts_give_the_same_logits_and_gradients(tiny_data: Path, tiny_meta: dict):
    table = pq.read_table(list_parquet_files(tiny_data / "train")[0]).slice(3, 10)
    batch = collate(table, ["click"], np.array([0, 1, 5, 1000, 17, 3, 64, 2, 8, 40]))
    sizes = TableSizes(
        tiny_meta["num_items"], tiny_meta["num_categories"], tiny_meta["num_actions"]
    )
    results = []
    for layout, kernel in (("padded", "kv"), ("packed", "pairs")):
        torch.manual_seed(0)
        cfg = ModelConfig(
            embedding_dim=8, pos_dim=4, head_hidden=[16],
            stca=STCAConfig(d_model=16, num_heads=2, layout=layout, kernel=kernel),
        )  # fmt: skip
        model = LongSeqModel(cfg, sizes, ["click"])
        logits = model(batch)
        model.loss(logits, batch).backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-5)
    for name, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][name], atol=1e-6, rtol=1e-4)


def test_layout_config_error_names_the_key():
    with pytest.raises(ValueError, match="model.stca.layout"):
        STCAConfig(layout="ragged").validate()
    with pytest.raises(ValueError, match=r"model\.stca\.kernel=pairs runs on the packed layout"):
        STCAConfig(kernel="pairs").validate()


def test_packed_attention_runs_through_the_module_forward():
    """FSDP2 gathers parameters and activation checkpointing recomputes in forward hooks: the
    packed layout must call each attention module, not only read its weights."""
    rng = np.random.default_rng(2)
    hist, tgts, x, q = _ragged(rng, 3, 16)
    cfg = STCAConfig(d_model=16, num_heads=2, num_layers=2, layout="packed", kernel="pairs")
    tower = STCATower(cfg).double()
    calls = []
    for i, attn in enumerate(tower.attn):
        attn.register_forward_pre_hook(lambda mod, args, i=i: calls.append(i))
    tower.forward_packed(x, hist, q, tgts)
    assert calls == [0, 1]
