"""Target-aware attention signals (match bias, position bias, count channel): every padded
kernel and both layouts against the readable reference loop, and what the count channel counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.match import AttentionBias
from longseq.model.ops.history import PaddedHistory, match_padded, positions_padded
from longseq.model.ops.kernels import kernels_of
from longseq.model.stca import STCAConfig, STCATower, TargetAttention, reference_attention

HYP = settings(max_examples=20, deadline=None)
BIASES = [
    (True, True, True),
    (True, False, False),
    (False, True, False),
    (True, True, False),
    (True, False, True),
]


def _inputs(hist_lens, n_tgt, d, seed, ncat=3):
    g = torch.Generator().manual_seed(seed)
    b, L, T = len(hist_lens), max(max(hist_lens), 1), max(n_tgt)
    mask = torch.arange(L)[None, :] < torch.tensor(hist_lens)[:, None]
    tmask = torch.arange(T)[None, :] < torch.tensor(n_tgt)[:, None]
    x = torch.randn(b, L, d, generator=g, dtype=torch.float64)
    q = torch.randn(b, T, d, generator=g, dtype=torch.float64)
    hist_ids = torch.randint(0, ncat, (b, L, 2), generator=g)
    tgt_ids = torch.randint(0, ncat, (b, T, 2), generator=g)
    return x, mask, q, tmask, hist_ids, tgt_ids


def _biased(d, h, kernel, match, pos, count, seed):
    torch.manual_seed(seed)
    bias = AttentionBias(h, d, 2 if match else 0, 8, pos, count)
    attn = TargetAttention(d, h, kernel, bias).double()
    with torch.no_grad():  # non-zero biases (they start at zero)
        for p in bias.parameters():
            p.normal_(0.0, 1.0)
    return attn


@HYP
@given(
    reqs=st.lists(st.tuples(st.integers(0, 9), st.integers(1, 4)), min_size=1, max_size=4),
    which=st.sampled_from(BIASES),
    seed=st.integers(0, 99),
)
def test_biased_kernels_match_the_reference(reqs, which, seed):
    d, h = 6, 2
    hist_lens, n_tgt = [r[0] for r in reqs], [r[1] for r in reqs]
    x, mask, q, tmask, hid, tid = _inputs(hist_lens, n_tgt, d, seed)
    match, pos = match_padded(hid, tid), positions_padded(mask)
    base = _biased(d, h, "kv", *which, seed)
    ref = reference_attention(base, q, x, mask, match, pos)
    for kernel in kernels_of("padded"):
        attn = _biased(d, h, kernel, *which, seed)
        attn.load_state_dict(base.state_dict())
        out = attn(q, x, PaddedHistory(mask, match, pos))
        torch.testing.assert_close(out[tmask], ref[tmask], atol=1e-10, rtol=1e-10)
    empty = torch.tensor(hist_lens) == 0  # no history: exactly zero, count channel included
    assert torch.equal(ref[empty], torch.zeros_like(q[empty]))


def test_the_biases_change_the_output():
    x, mask, q, tmask, hid, tid = _inputs([5, 7], [3, 2], 6, 0)
    plain = TargetAttention(6, 2, "kv").double()
    biased = _biased(6, 2, "kv", True, True, True, 0)
    biased.load_state_dict(plain.state_dict(), strict=False)
    a = plain(q, x, PaddedHistory(mask))
    b = biased(q, x, PaddedHistory(mask, match_padded(hid, tid), positions_padded(mask)))
    assert (a - b)[tmask].abs().max() > 1e-3


def test_count_channel_counts_matching_events():
    """An open position window (g = 1): the channel is ``log1p(events of the target's
    category)`` (item matches get zero weight here); padding is not counted."""
    bias = AttentionBias(heads=1, d=1, num_match=2, pos_dim=8, position_bias=False, count=True)
    attn = TargetAttention(1, 1, "kv", bias).double()
    with torch.no_grad():
        for w in (attn.w_q, attn.w_k, attn.w_v, attn.w_o):
            w.weight.zero_()
        bias.count_tau.fill_(5.0)  # sigmoid(8 * 5) = 1
        bias.count_proj.weight.copy_(torch.tensor([[0.0, 1.0]]))  # category counts only
    cats = torch.tensor([[3, 1, 3, 3, 2, 0]])
    hist_ids = torch.stack([torch.zeros_like(cats), cats], -1)
    tgt_ids = torch.tensor([[[0, 3], [0, 2], [0, 5]]])
    mask = torch.tensor([[True] * 5 + [False]])  # the last slot (category 0) is padding
    out = attn(
        torch.zeros(1, 3, 1, dtype=torch.float64),
        torch.zeros(1, 6, 1, dtype=torch.float64),
        PaddedHistory(mask, match_padded(hist_ids, tgt_ids), positions_padded(mask)),
    )
    want = torch.log1p(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out[0, :, 0], want, atol=1e-6, rtol=0)


def test_count_window_selects_positions():
    """A window open only for the far past counts only the far matches."""
    bias = AttentionBias(heads=1, d=1, num_match=1, pos_dim=8, position_bias=False, count=True)
    far = torch.tensor([0, 1, 2, 50, 60, 70])
    # fit g(p) ~ [p >= 40] with a few steps of logistic regression on the window's parameters
    opt = torch.optim.Adam([bias.count_tau, bias.count_pos_w.weight], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        g = bias.window(far)[:, 0].clamp(1e-6, 1 - 1e-6)
        want = (far >= 40).float()
        loss = -(want * g.log() + (1 - want) * (1 - g).log()).mean()
        loss.backward()
        opt.step()
    g = bias.window(far)[:, 0]
    assert (g[:3] < 0.05).all() and (g[3:] > 0.95).all(), g


def test_count_channel_needs_the_match_bias():
    with pytest.raises(ValueError, match="match bias"):
        AttentionBias(heads=1, d=1, num_match=0, pos_dim=8, position_bias=True, count=True)
    with pytest.raises(ValueError, match="model.stca.match_bias"):
        STCAConfig(count_channel=True).validate()


def test_position_bias_is_a_function_of_distance_from_the_newest():
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert positions_padded(mask).tolist() == [[2, 1, 0, 0], [3, 2, 1, 0]]


@pytest.mark.parametrize("which", BIASES)
def test_tower_packed_equals_padded_with_biases(which):
    match, pos, count = which
    cfg = STCAConfig(
        d_model=8, num_heads=2, match_bias=match, position_bias=pos, count_channel=count
    )
    torch.manual_seed(0)
    padded = STCATower(cfg).double()
    packed = STCATower(STCAConfig(**{**cfg.__dict__, "layout": "packed", "kernel": "pairs"}))
    packed = packed.double()
    packed.load_state_dict(padded.state_dict())
    for p in padded.parameters():  # non-zero biases
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    packed.load_state_dict(padded.state_dict())
    lens, n_tgt = torch.tensor([4, 0, 6]), torch.tensor([2, 1, 3])
    x, mask, q, tmask, hid, tid = _inputs(lens.tolist(), n_tgt.tolist(), 8, 1)
    z_pad = padded(x, mask, q, hid, tid)
    flat_x, flat_q = padded_to_jagged(x, lens), padded_to_jagged(q, n_tgt)
    flat_h, flat_t = padded_to_jagged(hid, lens), padded_to_jagged(tid, n_tgt)
    z_packed = packed.forward_packed(flat_x, lens, flat_q, n_tgt, flat_h, flat_t)
    torch.testing.assert_close(jagged_to_padded(z_packed, n_tgt, 3)[tmask], z_pad[tmask])
    z_packed.sum().backward()
    for name, p in packed.named_parameters():
        if ".bias." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_checkpoint_config_without_the_switches_is_the_papers_tower():
    """Checkpoints written before the switches existed hold plain STCA: absent means off, while a
    new ModelConfig turns the recipe on."""
    from longseq.model.model import ModelConfig, model_config_from_saved

    old = model_config_from_saved({"embedding_dim": 16, "stca": {"d_model": 32, "num_heads": 2}})
    assert (old.embedding_dim, old.stca.d_model) == (16, 32)
    assert not (old.stca.match_bias or old.stca.count_channel or old.stca.position_bias)
    new = ModelConfig()
    assert new.stca.match_bias and new.stca.count_channel and not new.stca.position_bias
    saved = model_config_from_saved({"stca": {"match_bias": True, "count_channel": True}})
    assert saved.stca.match_bias and saved.stca.count_channel


@pytest.mark.parametrize(
    "old, layout, kernel",
    [
        ({"attention": "absorbed"}, "padded", "absorbed"),
        ({"attention": "sdpa", "layout": "padded"}, "padded", "sdpa"),
        ({"attention": "kv", "layout": "jagged"}, "packed", "pairs"),
        ({"attention": "absorbed", "layout": "jagged"}, "packed", "pairs"),
        ({"attention": "flex", "layout": "jagged"}, "packed", "flex"),
        ({}, "padded", "kv"),
    ],
)
def test_a_checkpoint_config_in_the_earlier_kernel_words_loads(old, layout, kernel):
    """Checkpoints written before ``kernel`` replaced ``attention`` (and ``packed`` the
    ``jagged`` layout) load as the same model in today's words."""
    from longseq.model.model import model_config_from_saved

    cfg = model_config_from_saved({"stca": old, "transformer": {"attention": "absorbed"}})
    assert (cfg.stca.layout, cfg.stca.kernel) == (layout, kernel)
    assert cfg.transformer.kernel == "absorbed"
    cfg.validate()
