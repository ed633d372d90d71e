"""`longseq.model.ops.tables` / `longseq.model.ops.matched` / `longseq.model.stca_tables`: a state
whose events are indexed by id scores every candidate as the padded kernels do (fp32, 1e-5),
through the grouped and the pair-gathered corrections and the dense fallback, and its tables
stay exactly those of a fresh build under appends and evictions."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.model.ops import dispatch, matched
from longseq.model.ops import tables as tables_mod
from longseq.model.ops.matched import attend_lse, table_attention
from longseq.model.ops.tables import MatchTables, TableHistory
from longseq.model.stca import STCAConfig, STCATower
from longseq.model.stca_tables import tables_apply, with_tables

ATOL = 1e-5


def _ids(n: int, gen: torch.Generator, items: int = 30, cats: int = 4) -> torch.Tensor:
    """``[n, 2]`` (item, category) ids drawn from few values: large groups, many matches."""
    item = torch.randint(0, items, (n,), generator=gen)
    return torch.stack([item, item % cats], -1)


def test_appends_and_evictions_keep_the_tables_of_a_fresh_build() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = _ids(400, gen)
    tables, start, end = MatchTables.build(ids[:0]), 0, 0
    for step, n in enumerate([1, 1, 7, 50, 0, 3, 120, 1, 90, 128]):
        tables, end = tables.append(ids[end : end + n]), end + n
        if step % 3 == 2:  # a bounded window: the oldest leave
            drop = min(25, end - start)
            tables, start = tables.drop_oldest(drop), start + drop
        fresh = MatchTables.build(ids[start:end])
        assert torch.equal(tables.order, fresh.order) and torch.equal(
            tables.sorted_ids, fresh.sorted_ids
        )
    lo, hi = fresh.lookup(torch.tensor([[3, 3], [999, 3]]))
    want_item = int((ids[start:end, 0] == 3).sum())
    assert int(hi[0, 0] - lo[0, 0]) == want_item and int(hi[0, 1] - lo[0, 1]) == 0
    assert int(hi[1, 1] - lo[1, 1]) == int((ids[start:end, 1] == 3).sum())


def test_attend_lse_fused_equals_the_readable_form(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, n, 8, generator=gen) for n in (5, 70, 70))
    pb = torch.randn(4, 70, generator=gen)
    fused = attend_lse(q, k, v, pb, 0.3)
    monkeypatch.setattr(matched, "FOLD_MIN", 1)  # the bias folded into the keys
    folded = attend_lse(q, k, v, pb, 0.3)
    monkeypatch.setattr(matched, "_flash_cpu", lambda: None)
    readable = attend_lse(q, k, v, pb, 0.3)
    s = torch.einsum("hne,hme->hnm", q, k) * 0.3 + pb[:, None, :]
    for got in (fused, folded, readable):
        torch.testing.assert_close(got[1], torch.logsumexp(s, -1), atol=ATOL, rtol=0)
        torch.testing.assert_close(got[0], torch.softmax(s, -1) @ v, atol=ATOL, rtol=0)


def _dense(q, k, v, pb, beta, hist_ids, tgt_ids):  # noqa: ANN001, ANN202 - the bias built densely
    match = (tgt_ids[:, None, :] == hist_ids[None]).float()  # [T, L, F]
    s = torch.einsum("the,lhe->htl", q, k) / math.sqrt(q.shape[-1])
    s = s + pb.T[:, None, :] + (match @ beta).permute(2, 0, 1)
    return torch.einsum("htl,lhe->the", torch.softmax(s, -1), v)


@pytest.mark.parametrize("group_pairs", [1, 300, 10**9])  # every group fused / some / none
@pytest.mark.parametrize("sign", [1.0, -1.0])  # -1: weights that cancel most of the mass
def test_the_kernel_equals_the_dense_bias(
    monkeypatch: pytest.MonkeyPatch, group_pairs: int, sign: float
) -> None:
    monkeypatch.setattr(matched, "GROUP_PAIRS", group_pairs)
    gen = torch.Generator().manual_seed(2)
    length, t, h, dh = 500, 24, 4, 8
    hist_ids = _ids(length, gen)
    tgt_ids = torch.cat([_ids(t - 3, gen), torch.tensor([[77, 9], [78, 2], [5, 9]])])  # absent
    q = torch.randn(t, h, dh, generator=gen)
    k, v = torch.randn(length, h, dh, generator=gen), torch.randn(length, h, dh, generator=gen)
    pb = torch.randn(length, h, generator=gen)
    beta = sign * (0.5 + 3 * torch.rand(2, h, generator=gen))
    if sign < 0:
        beta[1] = -9.0  # the category: most of the mass, all but cancelled -> the dense fallback
    tables = MatchTables.build(hist_ids)
    history = TableHistory.build(tables, hist_ids, tgt_ids, None)
    want = _dense(q, k, v, pb, beta, hist_ids, tgt_ids)
    got = table_attention(q[None], (k[None], v[None]), history, (pb, beta), heads_first=False)
    torch.testing.assert_close(got[0], want, atol=ATOL, rtol=0)
    sdpa_form = (k.transpose(0, 1)[None], v.transpose(0, 1)[None])
    got = table_attention(q[None], sdpa_form, history, (pb, beta), heads_first=True)
    torch.testing.assert_close(got[0], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("features", [1, 2])
def test_huge_weights_fall_back_instead_of_overflowing(features: int) -> None:
    """Weights near fp32's exp limit overflow the correction's sums (not its denominator when
    only a few events match): those candidates take the dense bias."""
    length, h, dh = 8, 2, 4
    hist_ids = torch.zeros(length, features, dtype=torch.int64)
    hist_ids[1:] = 1  # the candidate matches event 0 only
    tgt_ids = torch.zeros(2, features, dtype=torch.int64)
    q, k = torch.zeros(2, h, dh), torch.zeros(length, h, dh)
    v = torch.full((length, h, dh), 10.0)
    v[0] = 3.0
    beta = torch.full((features, h), 88.5 / features)
    history = TableHistory.build(MatchTables.build(hist_ids), hist_ids, tgt_ids, None)
    pb = torch.zeros(length, h)
    got = table_attention(q[None], (k[None], v[None]), history, (pb, beta), heads_first=False)
    want = _dense(q, k, v, pb, beta, hist_ids, tgt_ids)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[0], want, atol=ATOL, rtol=0)


def _tower(kernel: str, **kw) -> STCATower:  # noqa: ANN003
    cfg = STCAConfig(d_model=16, num_heads=2, num_layers=2, kernel=kernel, match_bias=True,
                     count_channel=True, **kw)  # fmt: skip
    torch.manual_seed(0)
    tower = STCATower(cfg).eval()
    with torch.no_grad():  # every bias and the count channel matter
        for p in tower.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return tower


@pytest.mark.parametrize(
    "kernel,extra",
    [
        ("kv", {}),
        ("sdpa", {"position_bias": True}),
        ("reference", {"position_bias": True}),
        ("kv", {"position_bias": True, "time_bias": True}),
    ],
)
def test_a_tower_scores_an_indexed_state_as_the_padded_one(
    monkeypatch: pytest.MonkeyPatch, kernel: str, extra: dict
) -> None:
    monkeypatch.setattr(matched, "GROUP_PAIRS", 40)  # groups fused and pairs gathered
    monkeypatch.setattr(tables_mod, "MAX_MATCHED_SHARE", 1.0)  # few ids: most pairs match
    calls = []

    def counted(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return table_attention(*args, **kw)

    monkeypatch.setattr(dispatch, "table_attention", counted)
    tower = _tower(kernel, **extra)
    gen = torch.Generator().manual_seed(3)
    length, t = 120, 9
    hist = torch.randn(1, length, 16, generator=gen)
    hist_ids = _ids(length, gen)[None]
    if tower.cfg.time_bias:  # the events' time-delta buckets, last
        hist_ids = torch.cat([hist_ids, torch.randint(0, 64, (1, length, 1), generator=gen)], -1)
    tgt = torch.randn(1, t, 16, generator=gen)
    tgt_ids = torch.cat([hist_ids[:, :5, :2], _ids(t - 5, gen)[None]], 1)
    with torch.no_grad():
        state = tower.encode_user(hist, torch.ones(1, length, dtype=torch.bool), hist_ids)
        indexed = with_tables(tower, state)
        assert indexed.tables is not None and state.tables is None
        want = tower.score(state, tgt, tgt_ids)
        got = tower.score(indexed, tgt, tgt_ids)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=ATOL)  # outputs of a few units
        assert want.std() > 1e-3 and len(calls) == tower.cfg.num_layers  # the tables ran
        monkeypatch.setattr(tables_mod, "MAX_MATCHED_SHARE", 0.04)  # too many matches: dense
        torch.testing.assert_close(tower.score(indexed, tgt, tgt_ids), want, atol=ATOL, rtol=0)
        assert len(calls) == tower.cfg.num_layers
        monkeypatch.setattr(tables_mod, "MAX_MATCHED_SHARE", 1.0)
        none = tower.score(indexed, tgt[:, :0], tgt_ids[:, :0])  # a request without candidates
        assert none.shape == (1, 0, 16) and len(calls) == 2 * tower.cfg.num_layers


def test_tables_apply_only_where_the_kernel_reads_them() -> None:
    gen = torch.Generator().manual_seed(4)
    hist, ids = torch.randn(2, 10, 16, generator=gen), _ids(20, gen).view(2, 10, 2)
    full = torch.ones(2, 10, dtype=torch.bool)
    tower = _tower("kv")
    with torch.no_grad():
        one = tower.encode_user(hist[:1], full[:1], ids[:1])
        assert tables_apply(tower, one)
        assert not tables_apply(tower, tower.encode_user(hist, full, ids))  # two requests
        padding = full[:1].clone()
        padding[0, :3] = False
        assert not tables_apply(tower, tower.encode_user(hist[:1], padding, ids[:1]))
        for other in (_tower("absorbed"), _tower("kv", soft_match=True)):
            assert not tables_apply(other, other.encode_user(hist[:1], full[:1], ids[:1]))
        with pytest.raises(ValueError, match="tables of 3 events for a state of 10"):
            with_tables(tower, one, MatchTables.build(ids[0, :3]))
