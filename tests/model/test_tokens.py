"""Event positions (0 = newest) on ragged rows, and the log-position encoding far beyond training
windows (length extrapolation)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.model.tokens import (
    LogPositionEncoding,
    Tokenizer,
    positions_from_most_recent,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=12))
def test_positions_from_most_recent_brute_force(lengths):
    got = positions_from_most_recent(torch.tensor(lengths, dtype=torch.int64))
    want = [n - 1 - j for n in lengths for j in range(n)]  # oldest -> newest per row
    assert got.dtype == torch.int64
    assert got.tolist() == want


def test_positions_examples():
    assert positions_from_most_recent(torch.tensor([3, 0, 1, 2])).tolist() == [2, 1, 0, 0, 1, 0]
    assert positions_from_most_recent(torch.tensor([], dtype=torch.int64)).numel() == 0


def test_position_encoding_is_finite_and_bounded_up_to_a_million():
    enc = LogPositionEncoding(16)
    p = torch.cat([torch.arange(0, 20_000), torch.tensor([10**5, 5 * 10**5, 10**6])])
    e = enc(p)
    assert e.shape == (p.numel(), 16)
    assert torch.isfinite(e).all()
    # each (sin, cos) pair lies on the unit circle
    torch.testing.assert_close(e[:, :8] ** 2 + e[:, 8:] ** 2, torch.ones(p.numel(), 8))
    # positions the model trains on (say up to 2k) encode distinctly
    near = e[:2048]
    dist = torch.cdist(near, near) + torch.eye(2048) * 10
    assert dist.min() > 1e-4


FAR = torch.tensor([10, 100, 1_000, 2_047, 10_000, 100_000, 999_999])


@pytest.mark.parametrize("dim", [2, 8, 16])
def test_neighbouring_far_positions_encode_close(dim):
    """``|e(p+1) - e(p)| <= |freqs| * log((p+2)/(p+1))``: shrinks like 1/p, so a position never
    seen in training (p > training window) sits next to the farthest trained ones. (Slack: in
    float32, log1p(p) of neighbours near 1e6 differ by about one ulp.)"""
    enc = LogPositionEncoding(dim)
    step = (enc(FAR + 1) - enc(FAR)).norm(dim=-1)
    bound = enc.freqs.norm() * torch.log((FAR + 2.0) / (FAR + 1.0))
    assert (step <= 2 * bound + 1e-5).all()
    assert (step[1:] < step[:-1]).all()  # closer and closer
    assert step[-1] < 1e-4
    # far positions are still told apart at a coarse scale: 1e4 vs 1e6
    assert (enc(torch.tensor([10_000])) - enc(torch.tensor([1_000_000]))).norm() > 0.1


def test_neighbouring_far_positions_encode_close_for_wide_encodings():
    enc = LogPositionEncoding(32)
    step = (enc(FAR + 1) - enc(FAR)).norm(dim=-1)
    assert step[FAR >= 2_047].max() < 0.05


def test_position_encoding_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        LogPositionEncoding(5)


def test_history_tokenizer_uses_positions_from_the_newest_event():
    """Two rows holding the same events at the same distance from their newest event get the
    same tokens, whatever is older in the row."""
    torch.manual_seed(0)
    tok = Tokenizer(emb_dim=4, pos_dim=4, d_model=6).history
    a = torch.randn(3, 4)
    older = torch.randn(5, 4)
    parts_row0 = [a] * 4
    parts_row1 = [torch.cat([older, a])] * 4
    out = tok([torch.cat([p0, p1]) for p0, p1 in zip(parts_row0, parts_row1)], torch.tensor([3, 8]))
    assert out.shape == (11, 6)
    torch.testing.assert_close(out[:3], out[-3:])
    assert not torch.allclose(out[:3], out[3:6])
    # a 1e6-event history still tokenizes to finite values
    big = tok([torch.zeros(10**6, 4)] * 4, torch.tensor([10**6]))
    assert torch.isfinite(big).all()


def test_target_and_history_tokens_share_the_item_space():
    """A target and a history event of the same item/category get nearby tokens."""
    torch.manual_seed(0)
    tok = Tokenizer(emb_dim=8, pos_dim=4, d_model=16)
    item, cat = torch.randn(7, 8), torch.randn(7, 8)
    t = tok.target(item, cat)
    assert t.shape == (7, 16)
    side = [torch.zeros(7, 8), torch.zeros(7, 8)]
    h = tok.history([item, cat] + side, torch.tensor([7]))
    cos = torch.nn.functional.cosine_similarity(t, h, dim=-1)
    other = torch.nn.functional.cosine_similarity(t, h.roll(1, 0), dim=-1)
    assert cos.mean() > other.mean() + 0.2


def test_encoding_values():
    """``[sin(log1p(p) f), cos(log1p(p) f)]`` with ``f_k = pi / 12 * 16^(k / (n - 1))``."""
    enc = LogPositionEncoding(4)
    ang = [math.log1p(99) * math.pi / 12 * 16**k for k in range(2)]
    want = [math.sin(a) for a in ang] + [math.cos(a) for a in ang]
    torch.testing.assert_close(enc(torch.tensor([99]))[0], torch.tensor(want))
