"""RankMixer (Zhu et al., ByteDance, arXiv 2507.15551): token mixing + per-token FFNs (pure torch).

Input: ``T`` tokens of width ``D`` (``[..., T, D]``). Each of the ``L`` layers is

* multi-head token mixing (no parameters): split every token into ``H`` heads of ``D / H``;
  new token ``h`` is the concatenation of head ``h`` of all ``T`` tokens (width ``T D / H``),
  then ``S = LN(X + TokenMixing(X))``;
* a per-token FFN: token position ``t`` has its OWN two-layer GELU MLP (``D -> k D -> D``),
  then ``X' = LN(S + PFFN(S))``.

The residual needs the mixed tokens in the shape of the input, i.e. ``H`` tokens of width
``T D / H`` equal to ``T`` tokens of width ``D``: that is ``H = T`` (the paper sets it so). We
require it (``num_heads`` defaults to ``num_tokens``; anything else is refused) and ``D``
divisible by ``T``. With ``H = T`` the mixing is a transpose of the ``[T, H]`` grid of head
slices, hence an involution: mixing twice gives the input back.

`token_mixing` and `PerTokenFFN` are the fast forms (one reshape/transpose; one batched einsum
over token-specific weights); `reference_token_mixing` and `reference_per_token_ffn` are plain
loops over heads and tokens, and `reference_rankmixer` runs a `RankMixer`'s parameters through
them (tests/model/test_rankmixer.py checks values and gradients). Out of scope: the paper's
Sparse-MoE variant of the per-token FFN (dense FFNs only here). The pooling and the task logits
sit in `longseq.model.rankmixer_head`.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def token_mixing(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[..., T, D]`` -> ``[..., H, T D / H]``: mixed token ``h`` is head ``h`` (the ``h``-th
    slice of width ``D / H``) of every input token, concatenated in token order."""
    *lead, t, d = x.shape
    if d % num_heads:
        raise ValueError(f"token width {d} is not divisible by {num_heads} heads")
    heads = x.reshape(*lead, t, num_heads, d // num_heads).transpose(-3, -2)
    return heads.reshape(*lead, num_heads, t * (d // num_heads))


def reference_token_mixing(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """`token_mixing` as the paper writes it: a loop over heads, a concatenation over tokens."""
    t, d = x.shape[-2:]
    dh = d // num_heads
    mixed = [
        torch.cat([x[..., i, h * dh : (h + 1) * dh] for i in range(t)], dim=-1)
        for h in range(num_heads)
    ]
    return torch.stack(mixed, dim=-2)


class PerTokenFFN(nn.Module):
    """``T`` independent two-layer GELU MLPs, ``D -> mult D -> D``, one per token position.

    The weights are stacked (``w1 [T, D, mult D]``, ``w2 [T, mult D, D]``) and applied as one
    batched einsum; `reference_per_token_ffn` is the same map as a loop of per-token linears.
    Initialised as ``nn.Linear`` would initialise each token's layers.
    """

    def __init__(self, num_tokens: int, dim: int, mult: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, int(round(mult * dim)))
        self.w1 = nn.Parameter(torch.empty(num_tokens, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_tokens, hidden))
        self.w2 = nn.Parameter(torch.empty(num_tokens, hidden, dim))
        self.b2 = nn.Parameter(torch.empty(num_tokens, dim))
        self.dropout = nn.Dropout(dropout)
        for w, b, fan_in in ((self.w1, self.b1, dim), (self.w2, self.b2, hidden)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., T, D]`` -> ``[..., T, D]``, token ``t`` through its own MLP."""
        h = F.gelu(torch.einsum("...td,tdf->...tf", x, self.w1) + self.b1)
        return self.dropout(torch.einsum("...tf,tfd->...td", h, self.w2) + self.b2)


def reference_per_token_ffn(ffn: PerTokenFFN, x: torch.Tensor) -> torch.Tensor:
    """`PerTokenFFN` as a plain loop: token ``t`` through ``F.linear`` with its own weights."""
    out = []
    for t in range(x.shape[-2]):
        h = F.gelu(F.linear(x[..., t, :], ffn.w1[t].T, ffn.b1[t]))
        out.append(ffn.dropout(F.linear(h, ffn.w2[t].T, ffn.b2[t])))
    return torch.stack(out, dim=-2)


class RankMixerLayer(nn.Module):
    """``S = LN(X + TokenMixing(X))``, ``X' = LN(S + PFFN(S))``."""

    def __init__(self, num_tokens: int, dim: int, ffn_mult: float, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_tokens
        self.norm_mix = nn.LayerNorm(dim)
        self.ffn = PerTokenFFN(num_tokens, dim, ffn_mult, dropout)
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.norm_mix(x + token_mixing(x, self.num_heads))
        return self.norm_ffn(s + self.ffn(s))


class RankMixer(nn.Module):
    """``L`` RankMixer layers over ``[..., T, D]`` tokens; returns the tokens ``[..., T, D]``.

    Args:
        num_tokens: ``T``.
        dim: token width ``D`` (divisible by ``T``).
        num_layers: ``L >= 1``.
        num_heads: mixing heads ``H``; ``None`` means ``T``, the only value the residual allows
            (see the module doc).
        ffn_mult: per-token FFN expansion ``k`` (hidden width ``k D``).
        dropout: on each per-token FFN's output.
    """

    def __init__(
        self,
        num_tokens: int,
        dim: int,
        num_layers: int,
        num_heads: int | None = None,
        ffn_mult: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_shape(num_tokens, dim, num_layers, num_heads, ffn_mult, dropout)
        self.num_tokens, self.dim = num_tokens, dim
        self.layers = nn.ModuleList(
            RankMixerLayer(num_tokens, dim, ffn_mult, dropout) for _ in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., T, D]`` -> ``[..., T, D]``."""
        if tuple(x.shape[-2:]) != (self.num_tokens, self.dim):
            raise ValueError(
                f"RankMixer takes [..., {self.num_tokens}, {self.dim}] tokens, got {list(x.shape)}"
            )
        for layer in self.layers:
            x = layer(x)
        return x


def check_shape(
    num_tokens: int,
    dim: int,
    num_layers: int,
    num_heads: int | None = None,
    ffn_mult: float = 4.0,
    dropout: float = 0.0,
    prefix: str = "rankmixer",
) -> None:
    """Raise ``ValueError`` naming ``{prefix}.<key>`` for a RankMixer shape that cannot run."""
    if num_tokens < 1:
        raise ValueError(f"{prefix}: RankMixer needs at least one token, got {num_tokens}")
    if num_layers < 1:
        raise ValueError(f"{prefix}.layers must be >= 1, got {num_layers}")
    if num_heads is not None and num_heads != num_tokens:
        raise ValueError(
            f"{prefix}.heads={num_heads}: token mixing keeps the {num_tokens} tokens (for the "
            f"residual) only with heads == tokens; set it to 0 (= the token count) or {num_tokens}"
        )
    if dim < 1 or dim % num_tokens:
        raise ValueError(
            f"{prefix}.dim={dim} must be a positive multiple of the {num_tokens} tokens (each "
            "token is split into one head per token)"
        )
    if ffn_mult <= 0:
        raise ValueError(f"{prefix}.ffn_mult must be > 0, got {ffn_mult}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{prefix}.dropout must be in [0, 1), got {dropout}")


def reference_rankmixer(model: RankMixer, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` through `reference_token_mixing` and `reference_per_token_ffn`."""
    for layer in cast(list[RankMixerLayer], list(model.layers)):
        s = layer.norm_mix(x + reference_token_mixing(x, layer.num_heads))
        x = layer.norm_ffn(s + reference_per_token_ffn(layer.ffn, s))
    return x
