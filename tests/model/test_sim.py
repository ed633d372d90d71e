"""SIM hard search: retrieval by category and recency, then attention over the retrieved only."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.model.baselines.sim import SIMConfig, SIMTower, hard_search_mask


def test_hard_search_keeps_the_k_most_recent_events_of_the_targets_category():
    hist_cat = torch.tensor([[1, 2, 1, 1, 3, 1, 0]])
    hist_mask = torch.tensor([[True] * 6 + [False]])  # the last slot is padding (category 0)
    tgt_cat = torch.tensor([[1, 3, 0, 4]])
    keep = hard_search_mask(hist_mask, hist_cat, tgt_cat, top_k=2)
    assert keep[0, 0].nonzero().flatten().tolist() == [3, 5]  # the two newest 1s
    assert keep[0, 1].nonzero().flatten().tolist() == [4]
    assert not keep[0, 2].any()  # padding never matches, even with the same id
    assert not keep[0, 3].any()
    assert hard_search_mask(hist_mask, hist_cat, tgt_cat, 0)[0, 0].sum() == 4  # 0 = all


def _loop(tower: SIMTower, hist, lengths, tgt, hist_cat, tgt_cat, k):
    """Per target: retrieve by hand, then softmax attention over the retrieved events."""
    b, t, d = tgt.shape
    h, dh = tower.h, tower.dh
    z = torch.zeros(b, t, d, dtype=tgt.dtype)
    for i in range(b):
        x = tower.hist_ln(hist[i, : lengths[i]])
        for j in range(t):
            idx = [p for p in range(lengths[i]) if hist_cat[i, p] == tgt_cat[i, j]]
            idx = idx[-k:] if k else idx
            q = tower.w_q(tower.tgt_ln(tgt[i, j]))
            heads = []
            for r in range(h):
                sl = slice(r * dh, (r + 1) * dh)
                if not idx:
                    heads.append(torch.zeros(dh, dtype=tgt.dtype))
                    continue
                kr = x[idx] @ tower.w_k.weight[sl].T
                vr = x[idx] @ tower.w_v.weight[sl].T
                heads.append(torch.softmax(kr @ q[sl] / math.sqrt(dh), 0) @ vr)
            o = tower.w_o(torch.cat(heads))
            z[i, j] = tower.out_ffn(tower.out_proj(torch.cat([o, tgt[i, j]])))
    return z


@pytest.mark.parametrize("top_k", [0, 2])
def test_tower_equals_a_per_target_loop(top_k):
    torch.manual_seed(0)
    tower = SIMTower(SIMConfig(d_model=8, num_heads=2, top_k=top_k)).double().eval()
    lengths = [6, 0, 3]
    hist = torch.randn(3, 6, 8, dtype=torch.float64)
    hist_cat = torch.randint(0, 3, (3, 6))
    tgt = torch.randn(3, 4, 8, dtype=torch.float64)
    tgt_cat = torch.randint(0, 3, (3, 4))
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        got = tower(hist, mask, tgt, hist_cat, tgt_cat)
        want = _loop(tower, hist, lengths, tgt, hist_cat, tgt_cat, top_k)
    torch.testing.assert_close(got, want)


def test_events_of_other_categories_do_not_matter():
    torch.manual_seed(1)
    tower = SIMTower(SIMConfig(d_model=8, num_heads=2, top_k=0)).double().eval()
    hist = torch.randn(1, 5, 8, dtype=torch.float64)
    hist_cat = torch.tensor([[1, 2, 1, 2, 2]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    tgt, tgt_cat = torch.randn(1, 1, 8, dtype=torch.float64), torch.tensor([[1]])
    with torch.no_grad():
        before = tower(hist, mask, tgt, hist_cat, tgt_cat)
        hist[0, [1, 3, 4]] += torch.randn(3, 8, dtype=torch.float64)  # the category-2 events
        torch.testing.assert_close(tower(hist, mask, tgt, hist_cat, tgt_cat), before)
        hist[0, 2] += torch.randn(8, dtype=torch.float64)  # a retrieved event
        assert (tower(hist, mask, tgt, hist_cat, tgt_cat) - before).abs().max() > 1e-3


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="model.sim.top_k"):
        SIMConfig(top_k=-1).validate()
    with pytest.raises(ValueError, match="model.sim.d_model"):
        SIMConfig(d_model=10, num_heads=4).validate()
