"""The ``flex`` kernel (packed FlexAttention, `longseq.model.ops.flex`) equals the readable
reference, the ``pairs`` kernel and the padded tower, on ragged requests (empty histories and requests without
targets included) with every target-aware bias.

Every case keeps ``N <= 16`` targets and ``E <= 128`` events, so all of them share one bucketed
shape and the suite compiles FlexAttention once per bias set (a few seconds each on CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longseq.model.attention import TargetAttention, reference_attention
from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.match import AttentionBias, count_tables
from longseq.model.ops.dispatch import packed_history
from longseq.model.ops.flex import BLOCK, bucket, packed_batch, use_flex
from longseq.model.ops.history import match_padded, match_pairs, positions_padded
from longseq.model.ops.kernels import Kernel
from longseq.model.ops.pairs import request_pairs
from longseq.model.stca import STCAConfig, STCATower
from longseq.model.tokens import positions_from_most_recent

BIASES = {
    "plain": {},
    "match": {"match_bias": True},
    "recipe": {"match_bias": True, "count_channel": True},
    "all": {"match_bias": True, "count_channel": True, "position_bias": True},
}
HIST = torch.tensor([30, 0, 41, 5, 1])  # an empty history
TGTS = torch.tensor([3, 2, 5, 0, 4])  # a request without targets


def test_bucket_is_a_small_grid_of_block_multiples():
    for block in BLOCK:
        sizes = set()
        for n in range(0, 64 * block + 1, 7):
            b = bucket(n, block)
            assert b >= max(n, 1) and b % block == 0
            if n > 8 * block:
                assert b <= 1.25 * n + block  # a quarter of padding at most, past 8 blocks
            sizes.add(b)
        for k in range(3, 6):  # at most four sizes per doubling
            assert len({s for s in sizes if (1 << k) * block < s <= (2 << k) * block}) <= 4


def test_use_flex_only_without_autograd_on_cpu():
    x = torch.zeros(2)
    assert not use_flex(x)  # grad mode on, CPU: FlexAttention has no CPU backward
    with torch.no_grad():
        assert use_flex(x)


def test_count_tables_equal_the_per_pair_count():
    g = torch.Generator().manual_seed(0)
    e, n, h = int(HIST.sum()), int(TGTS.sum()), 3
    hist_ids = torch.randint(0, 4, (e, 2), generator=g) * 10**12  # large ids: densified first
    tgt_ids = torch.randint(0, 4, (n, 2), generator=g) * 10**12
    bias = AttentionBias(h, 8, 2, 4, False, True)
    torch.nn.init.normal_(bias.count_pos_w.weight, generator=g)
    pos = positions_from_most_recent(HIST)
    pb = packed_batch(HIST, TGTS, hist_ids, tgt_ids, pos, count=True)
    pt, pe = request_pairs(HIST, TGTS)
    want = bias.count_pairs(match_pairs(hist_ids, tgt_ids, pt, pe), pos[pe], pt, n)
    got = bias.count_proj(torch.log1p(count_tables(bias.window(pos), pb.count_groups)))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(bias.count_grouped(pos, pb.count_groups), want)


def _attention(which: str, d: int = 16, heads: int = 4, seed: int = 0) -> TargetAttention:
    torch.manual_seed(seed)
    cfg = STCAConfig(d_model=d, num_heads=heads, **BIASES[which])
    bias = STCATower._bias(cfg)
    attn = TargetAttention(d, heads, "pairs", bias)
    for p in attn.parameters():  # non-zero biases, so every term is exercised
        torch.nn.init.normal_(p, std=0.3)
    return attn


@pytest.mark.parametrize("which", ["plain", "recipe", "all"])  # "match" is inside "recipe"
def test_flex_attention_equals_the_reference_and_the_pairs_kernel(which: str):
    attn, d = _attention(which), 16
    g = torch.Generator().manual_seed(1)
    e, n = int(HIST.sum()), int(TGTS.sum())
    x, q = torch.randn(e, d, generator=g), torch.randn(n, d, generator=g)
    hist_ids = torch.randint(0, 3, (e, 2), generator=g)
    tgt_ids = torch.randint(0, 3, (n, 2), generator=g)
    pos = positions_from_most_recent(HIST)
    count = attn.bias is not None and attn.bias.count
    ids = (hist_ids, tgt_ids)
    with torch.no_grad():
        flex, flex_history = packed_history("flex", HIST, TGTS, q, pos, *ids, count=count)
        pairs, pair_history = packed_history("pairs", HIST, TGTS, q, pos, *ids, count=count)
        assert (flex, pairs) == (Kernel.FLEX, Kernel.PAIRS)
        got = attn(q, x, flex_history, flex)
        want = attn(q, x, pair_history, pairs)
        lm, tm = int(HIST.max()), int(TGTS.max())
        mask = torch.arange(lm)[None] < HIST[:, None]
        xp, qp = jagged_to_padded(x, HIST, lm), jagged_to_padded(q, TGTS, tm)
        mp = match_padded(jagged_to_padded(hist_ids, HIST, lm), jagged_to_padded(tgt_ids, TGTS, tm))
        ref = reference_attention(attn, qp, xp, mask, mp, positions_padded(mask))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, padded_to_jagged(ref, TGTS), rtol=1e-5, atol=1e-5)
    req_t = torch.repeat_interleave(torch.arange(len(HIST)), TGTS)
    empty = HIST[req_t] == 0
    assert empty.any()  # a request without history: its targets get exactly zero
    assert torch.equal(got[empty], torch.zeros_like(got[empty]))


@pytest.mark.parametrize(
    "which,hist,tgts",
    [("plain", HIST, TGTS), ("all", HIST, TGTS),
     ("all", torch.tensor([600, 0, 0, 130, 7]), torch.tensor([40, 3, 10, 0, 5]))],
)  # fmt: skip
def test_flex_tower_equals_the_padded_tower(which: str, hist: torch.Tensor, tgts: torch.Tensor):
    """The last case has several row and event blocks: row blocks that straddle requests and
    full blocks (where the kernel skips the mask)."""
    torch.manual_seed(0)
    kw = dict(d_model=16, num_heads=4, num_layers=3, **BIASES[which])
    padded = STCATower(STCAConfig(kernel="kv", **kw)).eval()
    flex = STCATower(STCAConfig(kernel="flex", layout="packed", **kw)).eval()
    flex.load_state_dict(padded.state_dict())  # every form has the same weights
    g = torch.Generator().manual_seed(2)
    e, n = int(hist.sum()), int(tgts.sum())
    x, t = torch.randn(e, 16, generator=g), torch.randn(n, 16, generator=g)
    hid, tid = torch.randint(0, 3, (e, 2), generator=g), torch.randint(0, 3, (n, 2), generator=g)
    lm, tm = int(hist.max()), int(tgts.max())
    mask = torch.arange(lm)[None] < hist[:, None]
    with torch.no_grad():
        got = flex.forward_packed(x, hist, t, tgts, hid, tid)
        state = flex.encode_user_packed(x, hist, hid)
        split = flex.score_packed(state, t, tgts, tid)
        pairs = flex.score_packed(state, t, tgts, tid, kernel="pairs")
        want = padded(
            jagged_to_padded(x, hist, lm),
            mask,
            jagged_to_padded(t, tgts, tm),
            jagged_to_padded(hid, hist, lm),
            jagged_to_padded(tid, tgts, tm),
        )
    want = padded_to_jagged(want, tgts)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split, got, rtol=0, atol=0)
    torch.testing.assert_close(pairs, want, rtol=1e-5, atol=1e-5)


def test_flex_tower_trains_on_cpu_through_the_pairs_kernel():
    """With autograd on CPU the flex tower runs the ``pairs`` kernel (the same function) and
    backward works; its gradients equal the pairs tower's."""
    torch.manual_seed(0)
    kw = dict(d_model=16, num_heads=2, num_layers=2, **BIASES["recipe"])
    flex = STCATower(STCAConfig(kernel="flex", layout="packed", **kw))
    kv = STCATower(STCAConfig(kernel="pairs", layout="packed", **kw))
    kv.load_state_dict(flex.state_dict())
    rng = np.random.default_rng(0)
    e, n = int(HIST.sum()), int(TGTS.sum())
    x = torch.tensor(rng.standard_normal((e, 16)), dtype=torch.float32)
    t = torch.tensor(rng.standard_normal((n, 16)), dtype=torch.float32)
    hid, tid = torch.zeros(e, 2, dtype=torch.long), torch.zeros(n, 2, dtype=torch.long)
    for tower in (flex, kv):
        tower.forward_packed(x, HIST, t, TGTS, hid, tid).square().sum().backward()
    for (name, a), b in zip(flex.named_parameters(), kv.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_flex_tower_on_an_empty_batch_and_without_targets():
    """No requests, or no targets at all: the same empty/zero outputs as the pairs kernel."""
    tower = STCATower(STCAConfig(d_model=8, num_heads=2, kernel="flex", layout="packed",
                                 **BIASES["recipe"])).eval()  # fmt: skip
    z0 = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        out = tower.forward_packed(
            torch.zeros(0, 8),
            z0,
            torch.zeros(0, 8),
            z0,
            z0.view(0, 2).expand(0, 2),
            z0.view(0, 2).expand(0, 2),
        )
        assert out.shape == (0, 8)
        hist, tgts = torch.tensor([3, 2]), torch.tensor([0, 0])
        ids = torch.zeros(5, 2, dtype=torch.long)
        out = tower.forward_packed(torch.randn(5, 8), hist, torch.zeros(0, 8), tgts, ids, ids[:0])
        assert out.shape == (0, 8)


def test_flex_needs_the_packed_layout():
    with pytest.raises(ValueError, match=r"model\.stca\.kernel=flex .*model\.stca\.layout"):
        STCAConfig(kernel="flex").validate()
    with pytest.raises(ValueError, match="kernel must be one of"):
        STCAConfig(kernel="flash", layout="packed").validate()


CASES = [((100, 300, 100), (3, 0, 3)), ((600, 0, 0), (40, 3, 10)), ((0, 0), (5, 2))]


@pytest.mark.parametrize("seed", range(-len(CASES), 10))
def test_request_block_mask_equals_torchs_dense_construction(seed: int):
    """The offsets-built block mask selects the same blocks as `create_block_mask` evaluating
    the mask everywhere, with full blocks only where every element is True: random ragged
    batches, a request without targets between two (its events are in no row block), full
    blocks, and histories all empty."""
    from torch.nn.attention.flex_attention import create_block_mask

    rng = np.random.default_rng(seed + 100)
    if seed < 0:
        hist, tgts = (torch.tensor(c) for c in CASES[seed])
    else:
        b = int(rng.integers(1, 12))
        hist = torch.from_numpy(rng.choice([0, 1, 7, 100, 300], b))
        tgts = torch.from_numpy(rng.choice([0, 0, 1, 5, 16, 40], b))
    b = len(hist)
    block = (16, 128) if seed % 2 else (8, 32)
    pb = packed_batch(hist, tgts, block=block)
    req = torch.arange(b)
    qr = torch.cat([torch.repeat_interleave(req, tgts), torch.full((pb.n_pad - pb.n,), -1)])
    kr = torch.cat([torch.repeat_interleave(req, hist), torch.full((pb.e_pad - pb.e,), -2)])
    dense = (qr[:, None] == kr[None, :]).to(torch.int64)
    got = pb.block_mask.to_dense()[0, 0]  # blocks selected (partial or full)
    want = create_block_mask(
        lambda _b, _h, q, k: qr[q] == kr[k], None, None, pb.n_pad, pb.e_pad, BLOCK_SIZE=block,
        device="cpu",
    ).to_dense()[0, 0]  # fmt: skip
    assert torch.equal(got, want)
    qb, kb = block
    blocks = dense.view(pb.n_pad // qb, qb, pb.e_pad // kb, kb).sum((1, 3))
    nfull = pb.block_mask.full_kv_num_blocks[0, 0]
    for i in range(blocks.shape[0]):  # every full block is all True
        for j in pb.block_mask.full_kv_indices[0, 0, i, : int(nfull[i])].tolist():
            assert blocks[i, j] == qb * kb


def test_pairs_kernel_runs_under_bf16_autocast():
    """CPU training with ``trainer.precision=bf16``: the flex tower's pairs fallback mixes an fp32
    query side with bf16 values under autocast; its accumulation takes the values' dtype."""
    tower = STCATower(STCAConfig(d_model=16, num_heads=2, kernel="flex", layout="packed"))
    e, n = int(HIST.sum()), int(TGTS.sum())
    x, t = torch.randn(e, 16), torch.randn(n, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tower.forward_packed(x, HIST, t, TGTS)
    out.float().sum().backward()
    assert out.shape == (n, 16) and torch.isfinite(out.float()).all()
