"""STCA: the padded attention kernels against the per-target reference, masking, request-level
sharing (one row per request == one row per target), config errors, parameters and gradients."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.data.collate import collate
from longseq.model.layers import FFNStack, jagged_to_padded
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.ops.history import PaddedHistory
from longseq.model.stca import STCAConfig, STCATower, TargetAttention, reference_attention

HYP = settings(max_examples=25, deadline=None)


def _ragged(hist_lens: list[int], n_tgt: list[int], d: int, seed: int, garbage: float = 0.0):
    """Padded history ``[B,L,d]`` + mask and padded targets ``[B,T,d]`` (float64).

    Padded slots hold ``garbage * N(0, 1)`` (zeros when ``garbage == 0``).
    """
    g = torch.Generator().manual_seed(seed)
    b, L, T = len(hist_lens), max(max(hist_lens), 1), max(n_tgt)
    lengths = torch.tensor(hist_lens)
    mask = torch.arange(L)[None, :] < lengths[:, None]
    hist = torch.randn(b, L, d, generator=g, dtype=torch.float64)
    tgt = torch.randn(b, T, d, generator=g, dtype=torch.float64)
    tmask = torch.arange(T)[None, :] < torch.tensor(n_tgt)[:, None]
    noise_h = garbage * torch.randn(b, L, d, generator=g, dtype=torch.float64)
    noise_t = garbage * torch.randn(b, T, d, generator=g, dtype=torch.float64)
    hist = torch.where(mask[..., None], hist, noise_h)
    tgt = torch.where(tmask[..., None], tgt, noise_t)
    return hist, mask, tgt, tmask


requests = st.lists(
    st.tuples(st.integers(0, 9), st.integers(1, 4)), min_size=1, max_size=5
)  # (history length incl. 0, targets) per request


def _attn_pair(d: int, h: int, seed: int) -> tuple[TargetAttention, TargetAttention]:
    torch.manual_seed(seed)
    kv = TargetAttention(d, h, "kv").double()
    absorbed = TargetAttention(d, h, "absorbed").double()
    absorbed.load_state_dict(kv.state_dict())
    return kv, absorbed


@HYP
@given(
    reqs=requests, heads=st.sampled_from([1, 2, 4]), dh=st.integers(1, 3), seed=st.integers(0, 99)
)
def test_attention_kernels_match_reference(reqs, heads, dh, seed):
    d = heads * dh
    hist_lens, n_tgt = [r[0] for r in reqs], [r[1] for r in reqs]
    x, mask, q, tmask = _ragged(hist_lens, n_tgt, d, seed)
    kv, absorbed = _attn_pair(d, heads, seed)
    ref = reference_attention(kv, q, x, mask)
    sdpa = TargetAttention(d, heads, "sdpa").double()
    sdpa.load_state_dict(kv.state_dict())
    for attn in (kv, absorbed, sdpa):
        out = attn(q, x, PaddedHistory(mask))
        assert out.shape == q.shape
        torch.testing.assert_close(out[tmask], ref[tmask], atol=1e-10, rtol=1e-10)
    # a request without history attends to nothing: exactly zero output (w_o has no bias)
    empty = torch.tensor(hist_lens) == 0
    for attn in (kv, sdpa):
        assert torch.equal(attn(q, x, PaddedHistory(mask))[empty], torch.zeros_like(q[empty]))


def test_reference_is_not_trivially_equal():
    """The parity above can fail: other weights, or an ignored mask, give other outputs."""
    x, mask, q, _ = _ragged([5, 2, 7], [2, 1, 3], 8, seed=0)
    kv, _ = _attn_pair(8, 2, seed=0)
    other, _ = _attn_pair(8, 2, seed=1)
    ref = reference_attention(kv, q, x, mask)
    assert not torch.allclose(other(q, x, PaddedHistory(mask)), ref)
    full = torch.ones_like(mask)
    assert not torch.allclose(kv(q, x, PaddedHistory(full)), ref)


def _tower_pair(cfg: STCAConfig, seed: int) -> tuple[STCATower, STCATower]:
    torch.manual_seed(seed)
    kv = STCATower(STCAConfig(**{**cfg.__dict__, "kernel": "kv"})).double()
    absorbed = STCATower(STCAConfig(**{**cfg.__dict__, "kernel": "absorbed"})).double()
    absorbed.load_state_dict(kv.state_dict())
    return kv, absorbed


@HYP
@given(
    reqs=requests,
    layers=st.integers(1, 3),
    shared=st.booleans(),
    fused_ln=st.booleans(),
    seed=st.integers(0, 99),
)
def test_tower_kv_equals_absorbed(reqs, layers, shared, fused_ln, seed):
    cfg = STCAConfig(
        d_model=8, num_heads=2, num_layers=layers, shared_hist_ffn=shared, fused_query_ln=fused_ln
    )
    kv, absorbed = _tower_pair(cfg, seed)
    x, mask, q, tmask = _ragged([r[0] for r in reqs], [r[1] for r in reqs], 8, seed)
    a, b = kv(x, mask, q), absorbed(x, mask, q)
    assert a.shape == q.shape
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a[tmask], b[tmask], atol=1e-10, rtol=1e-10)


@HYP
@given(reqs=requests, kernel=st.sampled_from(["kv", "absorbed", "sdpa"]), seed=st.integers(0, 99))
def test_padding_values_do_not_change_the_output(reqs, kernel, seed):
    """History and target padding filled with large garbage instead of zeros."""
    cfg = STCAConfig(d_model=8, num_heads=2, num_layers=2, kernel=kernel)
    torch.manual_seed(seed)
    tower = STCATower(cfg).double()
    hist_lens, n_tgt = [r[0] for r in reqs], [r[1] for r in reqs]
    clean = _ragged(hist_lens, n_tgt, 8, seed, garbage=0.0)
    dirty = _ragged(hist_lens, n_tgt, 8, seed, garbage=1e3)
    assert torch.equal(clean[0][clean[1]], dirty[0][dirty[1]])  # same valid values
    tmask = clean[3]
    a = tower(clean[0], clean[1], clean[2])
    b = tower(dirty[0], dirty[1], dirty[2])
    torch.testing.assert_close(a[tmask], b[tmask], atol=1e-10, rtol=1e-10)
    # the extra padding columns of a longer batch change nothing either
    wider = [torch.cat([t, 7.0 + t[:, :2]], dim=1) for t in (dirty[0], dirty[2])]
    wmask = torch.cat([dirty[1], torch.zeros_like(dirty[1][:, :2])], dim=1)
    c = tower(wider[0], wmask, wider[1])[:, : tmask.shape[1]]
    torch.testing.assert_close(c[tmask], a[tmask], atol=1e-10, rtol=1e-10)


@HYP
@given(reqs=requests, seed=st.integers(0, 99))
def test_each_target_is_scored_independently_of_its_siblings(reqs, seed):
    """Tower level: T targets of one request in one row == each target alone (T = 1)."""
    torch.manual_seed(seed)
    tower = STCATower(STCAConfig(d_model=8, num_heads=2, num_layers=3)).double()
    x, mask, q, tmask = _ragged([r[0] for r in reqs], [r[1] for r in reqs], 8, seed)
    together = tower(x, mask, q)
    for j in range(q.shape[1]):
        alone = tower(x, mask, q[:, j : j + 1])[:, 0]
        rows = tmask[:, j]
        torch.testing.assert_close(together[rows, j], alone[rows], atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------- LongSeqModel level


def _small_cfg(**stca: object) -> ModelConfig:
    base = dict(d_model=16, num_heads=2, num_layers=2)
    return ModelConfig(
        embedding_dim=8, pos_dim=4, stca=STCAConfig(**{**base, **stca}), head_hidden=[16]
    )


@pytest.mark.parametrize("kernel", ["kv", "absorbed", "sdpa"])
@pytest.mark.parametrize("weighting", ["impression", "request"])
def test_request_level_rows_equal_pointwise_rows(requests_table, sizes, kernel, weighting):
    """A request's targets scored in one row == the same targets as separate (pointwise) rows:
    same logits in the same order, same loss and same gradients (impression weighting is the
    pointwise objective exactly; the tiny data has equal targets per request, so request
    weighting coincides too)."""
    torch.manual_seed(0)
    cfg = _small_cfg(kernel=kernel)
    cfg.loss_weighting = weighting
    model = LongSeqModel(cfg, sizes, ["click"])
    windows = np.array([0, 1, 5, 1000, 17, 3, 64, 2, 8, 40])
    rlb = collate(requests_table, ["click"], windows)
    pw = collate(requests_table, ["click"], windows, pointwise=True)
    assert rlb.batch_size == 10 and pw.batch_size == int(rlb.num_targets.sum()) == 80
    assert int(rlb.history_lengths()[0]) == 0  # a request served no history at all

    grads = []
    logits = []
    for batch in (rlb, pw):
        model.zero_grad()
        out = model(batch)
        model.loss(out, batch).backward()
        logits.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=0)
    assert logits[0].std() > 1e-4  # the targets are not scored alike
    torch.testing.assert_close(model.loss(logits[0], rlb), model.loss(logits[1], pw))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def test_request_weighting_is_the_mean_over_requests_of_the_target_mean(sizes):
    torch.manual_seed(0)
    cfg = _small_cfg()
    cfg.loss_weighting = "request"
    model = LongSeqModel(cfg, sizes, ["click", "like"])
    logits = torch.randn(6, 2)
    labels = torch.tensor([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0], [0, 0]], dtype=torch.float32)
    batch = SimpleNamespace(num_targets=torch.tensor([1, 3, 2]), labels=labels)  # what loss reads
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per = per.mean(1)
    want = torch.stack([per[0:1].mean(), per[1:4].mean(), per[4:6].mean()]).mean()
    torch.testing.assert_close(model.loss(logits, batch), want)
    model.cfg.loss_weighting = "impression"
    torch.testing.assert_close(model.loss(logits, batch), per.mean())


# --------------------------------------------------------------------------- config & params


@pytest.mark.parametrize(
    "over, key",
    [
        (dict(d_model=10, num_heads=4), "model.stca.d_model"),
        (dict(kernel="flash"), "model.stca.kernel"),
        (dict(kernel="flex"), "model.stca.layout=padded"),
        (dict(layout="packed"), "model.stca.kernel=kv runs on the padded layout"),
        (dict(layout="jagged", kernel="pairs"), "model.stca.layout must be one of"),
        (dict(num_layers=0), "model.stca.num_layers"),
        (dict(num_heads=0), "model.stca.num_heads"),
        (dict(ffn_depth=0), "model.stca.ffn_depth"),
    ],
)
def test_config_errors_name_the_key(over, key):
    cfg = STCAConfig(**over)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cfg.validate()
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        STCATower(cfg)
    with pytest.raises(ValueError, match=r"custom\.prefix"):
        cfg.validate(prefix="custom.prefix")


def test_model_config_errors_name_the_key(sizes):
    with pytest.raises(ValueError, match=r"model\.loss_weighting"):
        LongSeqModel(ModelConfig(loss_weighting="user"), sizes, ["click"])


def test_odd_pos_dim_error_names_the_key(sizes):
    with pytest.raises(ValueError, match=r"model\.pos_dim"):
        LongSeqModel(ModelConfig(pos_dim=5), sizes, ["click"])


@pytest.mark.parametrize("hidden", [[0], [16, 0], [-3]])
def test_head_widths_below_one_name_the_key(sizes, hidden):
    """``model.head_hidden=[0]`` is refused at validation, not left to torch's Linear."""
    with pytest.raises(ValueError, match=r"model\.head_hidden.*>= 1"):
        ModelConfig(head_hidden=hidden).validate()
    with pytest.raises(ValueError, match=r"model\.head_hidden"):
        LongSeqModel(ModelConfig(head_hidden=hidden), sizes, ["click"])
    ModelConfig(head_hidden=[]).validate()  # no hidden layer: a linear head, allowed


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_shared_history_ffn_has_fewer_parameters_and_runs(layers):
    base = dict(d_model=8, num_heads=2, num_layers=layers, ffn_depth=2)
    per_layer = STCATower(STCAConfig(**base))
    shared = STCATower(STCAConfig(**base, shared_hist_ffn=True))
    one_hist = _n_params(FFNStack(8, 8, 2.0, 2)) + _n_params(torch.nn.LayerNorm(8))
    assert _n_params(per_layer) - _n_params(shared) == (layers - 1) * one_hist
    if layers > 1:
        assert _n_params(shared) < _n_params(per_layer)
    x, mask, q, tmask = _ragged([3, 0, 6], [2, 1, 3], 8, seed=0)
    shared = shared.double()
    enc = shared.encode_history(x)
    assert len(enc) == layers and all(e is enc[0] for e in enc)
    out = shared(x, mask, q)
    assert out.shape == q.shape and torch.isfinite(out).all()
    out[tmask].sum().backward()
    assert all(p.grad is not None for p in shared.parameters())


@pytest.mark.parametrize(
    "stca",
    [
        dict(num_layers=1),
        dict(num_layers=3),
        dict(num_layers=3, ffn_depth=2, kernel="absorbed"),
        dict(num_layers=3, shared_hist_ffn=True, fused_query_ln=False),
    ],
    ids=["1-layer", "3-layers", "3-layers-deep-absorbed", "3-layers-shared"],
)
def test_gradients_reach_every_parameter(requests_table, sizes, stca):
    torch.manual_seed(0)
    model = LongSeqModel(_small_cfg(**stca), sizes, ["click", "like"])
    table = requests_table.append_column("tgt_like", requests_table.column("tgt_click"))
    batch = collate(table, ["click", "like"], np.full(table.num_rows, 12))
    model.loss(model(batch), batch).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"unused parameters: {no_grad}"
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f"zero gradients: {zero}"


def test_jagged_to_padded_round_trip_layout():
    """The tower's input layout: row b holds its events first, zeros after."""
    lengths = torch.tensor([2, 0, 3])
    values = torch.arange(5, dtype=torch.float64)[:, None].repeat(1, 2)
    padded = jagged_to_padded(values, lengths, 4)
    assert padded[:, :, 0].tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [2, 3, 4, 0]]
