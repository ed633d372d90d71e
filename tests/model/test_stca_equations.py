"""Pin the STCA tower to the paper's equations (docs/model.md §9) with an independent, loop-based version.

The loop below is written from the equations, one request, one target, one head at a time, with
plain matrix products on the module's weight tensors; it shares no code with `STCATower` beyond
reading those weights. Every variant the config offers (per-layer or shared history FFN, LN on
fused queries or not, residual FFNs or the literal ones, each attention form) is checked.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longseq.model.stca import STCAConfig, STCATower


def _swiglu(block, x: torch.Tensor) -> torch.Tensor:
    """FFN(x) = ((x W_u) ⊙ SiLU(x W_v)) W_o with W_u, W_v the two halves of the fused weight."""
    w_u, w_v = block.w_uv.weight.chunk(2, dim=0)
    return ((x @ w_u.T) * F.silu(x @ w_v.T)) @ block.w_o.weight.T


def _ffn(stack, x: torch.Tensor, residual: bool) -> torch.Tensor:
    for block in stack.blocks:
        x = x + _swiglu(block, x) if residual else _swiglu(block, x)
    return x


def _ln(mod, x: torch.Tensor) -> torch.Tensor:
    if isinstance(mod, torch.nn.Identity):
        return x
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def stca_by_the_equations(
    tower: STCATower, hist: torch.Tensor, lengths: list[int], tgt: torch.Tensor
) -> torch.Tensor:
    """§9, literally: per request, per target, per layer, per head."""
    cfg, res = tower.cfg, tower.cfg.ffn_residual
    b, t, d = tgt.shape
    h = cfg.num_heads
    dh = d // h
    z = torch.zeros(b, t, d, dtype=tgt.dtype)
    for i in range(b):
        x = hist[i, : lengths[i]]  # X: this request's events only [L_i, d]
        x_tilde = []
        for layer in range(cfg.num_layers):  # X̃_i = LN(FFN_hist_i(X)), user side
            k = 0 if cfg.shared_hist_ffn else layer
            x_tilde.append(_ln(tower.hist_ln[k], _ffn(tower.hist_ffn[k], x, res)))
        for j in range(t):
            xt = tgt[i, j]
            q = _ln(tower.tgt_ln, _ffn(tower.tgt_ffn, xt, res))  # q_1 = LN(FFN_tgt(x_t))
            outs = []
            for layer in range(cfg.num_layers):
                if layer > 0:  # q_i = LN(FFN_q_i([o_1..o_{i-1}, x_t] W_C_i))
                    w_c = tower.fuse_proj[layer - 1].weight
                    fused = torch.cat(outs + [xt]) @ w_c.T
                    q = _ln(tower.fuse_ln[layer - 1], _ffn(tower.fuse_ffn[layer - 1], fused, res))
                attn = tower.attn[layer]
                heads = []
                for r in range(h):
                    rows = slice(r * dh, (r + 1) * dh)
                    w_q, w_k = attn.w_q.weight[rows].T, attn.w_k.weight[rows].T  # [d, d_h]
                    w_v = attn.w_v.weight[rows].T
                    u = (q @ w_q) @ w_k.T  # u = (q W_Q)(W_K)ᵀ  [d]
                    scores = x_tilde[layer] @ u / math.sqrt(dh)  # u X̃ᵀ / sqrt(d_h)  [L]
                    if lengths[i] == 0:  # nothing to attend to: a zero output
                        heads.append(torch.zeros(dh, dtype=tgt.dtype))
                        continue
                    a = torch.softmax(scores, 0)
                    heads.append((a @ x_tilde[layer]) @ w_v)  # o^r = (a X̃) W_V
                outs.append(torch.cat(heads) @ attn.w_o.weight.T)  # o_i = concat_r(o^r) W_O
            w_z = tower.out_proj.weight
            z[i, j] = _ffn(tower.out_ffn, torch.cat(outs + [xt]) @ w_z.T, res)  # no LN on z
    return z


VARIANTS = [
    dict(),
    dict(shared_hist_ffn=True),
    dict(fused_query_ln=False),
    dict(ffn_residual=False, ffn_depth=2),
    dict(num_layers=3, kernel="absorbed"),
    dict(kernel="sdpa"),
    dict(kernel="reference"),
]


@pytest.mark.parametrize("over", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_tower_matches_the_equations(over):
    torch.manual_seed(3)
    cfg = STCAConfig(d_model=16, num_heads=4, num_layers=over.pop("num_layers", 2), **over)
    tower = STCATower(cfg).double().eval()
    with torch.no_grad():  # a non-trivial LN affine, so it is exercised
        for m in tower.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    lengths = [5, 1, 0, 3]
    hist = torch.randn(4, 5, 16, dtype=torch.float64)
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    tgt = torch.randn(4, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        got = tower(hist, mask, tgt)
        want = stca_by_the_equations(tower, hist, lengths, tgt)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_the_equations_are_sensitive_to_the_weights():
    """Guard against a vacuous pin: perturbing one attention weight changes the loop's output."""
    torch.manual_seed(0)
    tower = STCATower(STCAConfig(d_model=16, num_heads=2, num_layers=2)).double().eval()
    hist = torch.randn(2, 4, 16, dtype=torch.float64)
    tgt = torch.randn(2, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        before = stca_by_the_equations(tower, hist, [4, 2], tgt)
        tower.attn[1].w_k.weight.add_(0.1 * torch.randn(16, 16, dtype=torch.float64))
        after = stca_by_the_equations(tower, hist, [4, 2], tgt)
    assert (before - after).abs().max() > 1e-4
