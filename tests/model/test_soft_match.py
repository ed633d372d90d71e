"""The soft match (`longseq.model.soft_match`): its padded and packed forms against the readable
loop, the tower's every path (forward, state, packed, every padded kernel) with it, and off =
the tower of before."""

from __future__ import annotations

import pytest
import torch

from longseq.model.cooccur import (
    category_target_loss,
    category_target_reference,
    user_target_loss,
    user_target_reference,
)
from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.ops.history import match_padded, positions_padded
from longseq.model.soft_match import SoftMatch, soft_match_reference
from longseq.model.stca import STCAConfig, STCATower, reference_attention
from tests.model.test_match import _inputs

LENS, N_TGT = [4, 0, 6], [2, 1, 3]


def _cfg(**over) -> STCAConfig:
    base = {"d_model": 8, "num_heads": 2, "match_bias": True, "position_bias": True}
    return STCAConfig(**{**base, "count_channel": True, "soft_match": True, **over})


def _tower(**over) -> STCATower:
    torch.manual_seed(0)
    tower = STCATower(_cfg(**over)).double()
    with torch.no_grad():  # non-zero biases (they start at zero)
        for p in tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tower


def test_padded_and_pairs_match_the_loop():
    torch.manual_seed(1)
    soft = SoftMatch(8, 4).double()
    x, mask, q, _, _, _ = _inputs(LENS, N_TGT, 8, 2)
    want = soft_match_reference(soft, x, q, mask)
    got = soft.padded(soft.embed(x), soft.embed(q))
    torch.testing.assert_close(got * mask[:, None, :, None], want)
    lens, n_tgt = torch.tensor(LENS), torch.tensor(N_TGT)
    flat_x, flat_q = padded_to_jagged(x, lens), padded_to_jagged(q, n_tgt)
    req_e = torch.repeat_interleave(torch.arange(3), lens)
    req_t = torch.repeat_interleave(torch.arange(3), n_tgt)
    pt, pe = (req_t[:, None] == req_e[None, :]).nonzero(as_tuple=True)
    pairs = soft.pairs(soft.embed(flat_x), soft.embed(flat_q), pt, pe)
    tmask = torch.arange(3)[None, :] < n_tgt[:, None]
    dense = want[tmask][:, mask.any(0)]  # [N, L', 1] rows of the real targets
    t_of = torch.arange(int(n_tgt.sum()))
    e_in_req = pe - torch.cumsum(lens, 0)[req_e[pe]] + lens[req_e[pe]]
    torch.testing.assert_close(pairs[:, 0], dense[t_of[pt], e_in_req, 0])


def test_one_layer_equals_the_reference_attention():
    tower = _tower()
    x, mask, q, tmask, hid, tid = _inputs(LENS, N_TGT, 8, 3)
    soft = soft_match_reference(tower.soft, x, q, mask)
    match = torch.cat([match_padded(hid, tid), soft], -1)
    attn = tower.attn[0]
    history = tower._history(mask, positions_padded(mask), hid, tid, tower._rel(x), q)
    got = attn(q, x, history)
    want = reference_attention(attn, q, x, mask, match, positions_padded(mask))
    torch.testing.assert_close(got[tmask], want[tmask])


@pytest.mark.parametrize("kernel", ["kv", "absorbed", "sdpa", "reference"])
def test_every_path_is_the_same_function(kernel):
    tower = _tower()
    x, mask, q, tmask, hid, tid = _inputs(LENS, N_TGT, 8, 4)
    z = tower(x, mask, q, hid, tid)
    other = STCATower(_cfg(kernel=kernel)).double()
    other.load_state_dict(tower.state_dict())
    torch.testing.assert_close(other(x, mask, q, hid, tid)[tmask], z[tmask])
    state = tower.encode_user(x, mask, hid)
    assert tower.state_names()[-1] == "hist_rel" and state.hist_rel is not None
    torch.testing.assert_close(tower.score(state, q, tid)[tmask], z[tmask])
    lens, n_tgt = torch.tensor(LENS), torch.tensor(N_TGT)
    flat = [padded_to_jagged(a, lens) for a in (x, hid)] + [
        padded_to_jagged(a, n_tgt) for a in (q, tid)
    ]
    packed = tower.forward_packed(flat[0], lens, flat[2], n_tgt, flat[1], flat[3])
    torch.testing.assert_close(jagged_to_padded(packed, n_tgt, 3)[tmask], z[tmask])
    pstate = tower.encode_user_packed(flat[0], lens, flat[1])
    scored = tower.score_packed(pstate, flat[2], n_tgt, flat[3], kernel="flex")  # runs pairs
    torch.testing.assert_close(scored, packed)
    packed.sum().backward()
    assert tower.soft.proj.weight.grad.abs().sum() > 0  # relatedness learns from the loss


def test_off_is_the_tower_of_before():
    cfg = _cfg(soft_match=False)
    torch.manual_seed(0)
    tower = STCATower(cfg)
    assert tower.soft is None and "hist_rel" not in tower.state_names()
    assert not any("soft" in n for n, _ in tower.named_parameters())
    with pytest.raises(ValueError, match="soft_match"):
        STCATower(_cfg(match_bias=False, count_channel=False))


# -- the co-occurrence loss ------------------------------------------------------------------


def test_user_target_loss_matches_the_loop():
    torch.manual_seed(2)
    lens, n_tgt = torch.tensor([5, 0, 3, 7]), torch.tensor([2, 1, 0, 3])
    rel = torch.nn.functional.normalize(torch.randn(15, 4, dtype=torch.float64), dim=-1)
    tgt = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    b = torch.arange(4)
    user = rel.new_zeros(4, 4).index_add(0, torch.repeat_interleave(b, lens), rel)
    got = user_target_loss(tgt, user, torch.repeat_interleave(b, n_tgt))
    torch.testing.assert_close(got, user_target_reference(tgt, rel, lens, n_tgt))
    assert user_target_loss(tgt, user[:1], torch.zeros(6, dtype=torch.long)).item() == 0.0


def _objective(tower: STCATower, z: torch.Tensor) -> torch.Tensor:
    """What the training step backpropagates: the output's loss plus the tower's aux loss."""
    aux = tower.pop_aux_loss()
    return z if aux is None else z + aux


def test_cooccur_joins_the_objective_only_in_training():
    tower = _tower(soft_match_cooccur=0.5)
    x, mask, q, tmask, hid, tid = _inputs(LENS, N_TGT, 8, 5)
    q = q * tmask[..., None]  # padded targets are zero tokens (as `jagged_to_padded` makes them)
    z = tower(x, mask, q, hid, tid)
    torch.testing.assert_close(z, _tower()(x, mask, q, hid, tid))  # the output is unchanged
    aux = tower.pop_aux_loss()
    assert tower.pop_aux_loss() is None  # returned once
    lens, n_tgt = torch.tensor(LENS), torch.tensor(N_TGT)
    rel = tower.soft.embed(padded_to_jagged(x, lens))
    tgt = tower.soft.embed(padded_to_jagged(q, n_tgt))
    want_aux = 0.5 * user_target_reference(tgt, rel, lens, n_tgt)
    torch.testing.assert_close(aux, want_aux)
    (z[tmask].sum() + aux).backward()
    with_aux = tower.soft.proj.weight.grad.clone()
    tower.zero_grad()
    plain = _tower()
    plain(x, mask, q, hid, tid)[tmask].sum().backward()
    (want,) = torch.autograd.grad(want_aux, tower.soft.proj.weight)
    torch.testing.assert_close(with_aux, plain.soft.proj.weight.grad + want)
    flat_x, flat_q = padded_to_jagged(x, lens), padded_to_jagged(q, n_tgt)
    flat_h, flat_t = padded_to_jagged(hid, lens), padded_to_jagged(tid, n_tgt)
    tower.zero_grad()
    z = tower.forward_packed(flat_x, lens, flat_q, n_tgt, flat_h, flat_t)
    _objective(tower, z.sum()).backward()
    torch.testing.assert_close(tower.soft.proj.weight.grad, with_aux)  # packed: the same
    tower.eval()
    with torch.no_grad():
        tower(x, mask, q, hid, tid)
    assert tower.pop_aux_loss() is None  # no loss in eval / no_grad


def test_category_target_loss_matches_the_loop():
    torch.manual_seed(3)
    lens, n_tgt = torch.tensor([5, 0, 3, 7]), torch.tensor([2, 1, 0, 4])
    rel = torch.nn.functional.normalize(torch.randn(15, 4, dtype=torch.float64), dim=-1)
    tgt = torch.nn.functional.normalize(torch.randn(7, 4, dtype=torch.float64), dim=-1)
    hist_cat = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2, 0, 0, 1, 3, 3, 2, 1])
    # targets: own category present + others have it; request 1 has no events; category 3 is
    # request 3's only (no negative); category 4 nobody's
    tgt_cat = torch.tensor([1, 2, 0, 1, 3, 4, 0])
    b = torch.arange(4)
    req_e, req_t = torch.repeat_interleave(b, lens), torch.repeat_interleave(b, n_tgt)
    got = category_target_loss(tgt, tgt_cat, req_t, rel, hist_cat, req_e)
    want = category_target_reference(tgt, tgt_cat, n_tgt, rel, hist_cat, lens)
    torch.testing.assert_close(got, want)
    # only 4 of the 7 targets take part: the loss is their mean, not over all 7
    assert want.item() > 0
    none = category_target_loss(tgt[4:6], tgt_cat[4:6], req_t[4:6], rel, hist_cat, req_e)
    assert none.item() == 0.0 and none.requires_grad is False


def test_category_negatives_reach_the_gradient_in_every_layout():
    over = {"soft_match_cooccur": 0.5, "soft_match_negatives": "category"}
    tower = _tower(**over)
    x, mask, q, tmask, hid, tid = _inputs(LENS, N_TGT, 8, 5)
    q = q * tmask[..., None]
    _objective(tower, tower(x, mask, q, hid, tid)[tmask].sum()).backward()
    with_aux = tower.soft.proj.weight.grad.clone()
    plain = _tower()
    plain(x, mask, q, hid, tid)[tmask].sum().backward()
    lens, n_tgt = torch.tensor(LENS), torch.tensor(N_TGT)
    flat_h, flat_t = padded_to_jagged(hid, lens), padded_to_jagged(tid, n_tgt)
    rel = tower.soft.embed(padded_to_jagged(x, lens))
    tgt = tower.soft.embed(padded_to_jagged(q, n_tgt))
    aux = 0.5 * category_target_reference(tgt, flat_t[:, 1], n_tgt, rel, flat_h[:, 1], lens)
    (want,) = torch.autograd.grad(aux, tower.soft.proj.weight)
    assert want.abs().sum() > 0  # the inputs give the loss something to do
    torch.testing.assert_close(with_aux, plain.soft.proj.weight.grad + want)
    tower.zero_grad()
    flat_x, flat_q = padded_to_jagged(x, lens), padded_to_jagged(q, n_tgt)
    z = tower.forward_packed(flat_x, lens, flat_q, n_tgt, flat_h, flat_t)
    _objective(tower, z.sum()).backward()
    torch.testing.assert_close(tower.soft.proj.weight.grad, with_aux)


def test_negatives_key_is_checked():
    with pytest.raises(ValueError, match="soft_match_negatives"):
        _cfg(soft_match_negatives="users").validate()
