"""STCA: stacked target-to-history cross-attention (paper §1, §9), request-level in compute.

Shapes: ``B`` requests, ``L`` padded history length, ``T`` padded targets per request, ``d`` width,
``h`` heads, ``d_h = d / h``. The user side (``X̃_i = LN(FFN_i(X))`` and, in the ``kv`` form, the
keys/values) is computed once per request; only the queries are per target. Pointwise batching is
the special case ``T = 1``.

Three exact attention forms, chosen by ``attention``:

* ``kv``: precompute ``K = X̃ W_K`` and ``V = X̃ W_V`` once per request, then one query per target.
* ``absorbed``: ``u = (q W_Q) W_Kᵀ``, scores ``u X̃ᵀ``, then ``(α X̃) W_V``; never builds the
  ``L × d`` keys/values (paper §1.6).

* ``sdpa``: the ``kv`` form through ``torch.nn.functional.scaled_dot_product_attention`` (fused
  kernels where torch has them; about 3-4x faster than the einsum form on CPU, docs/benchmarks.md).

Two layouts, chosen by ``layout``: ``padded`` (``[B, L_max]`` events, masked; any form) and
``jagged`` (the flat ``[E, d]`` events and ``[N, d]`` targets of the lookup, attention over the
real (target, event) pairs only: `longseq.model.jagged`).

Optional target-aware signals (`longseq.model.match`): id-match and position biases in the
logits and a count channel (``match_bias``, ``position_bias``, ``count_channel``).

The attention itself (`TargetAttention`, `reference_attention`, the readable per-target loop all
forms are tested against) lives in `longseq.model.attention`. Pure torch: no torchrec/fbgemm import on this path, so it runs on any accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longseq.model.attention import ATTENTION_FORMS, TargetAttention, reference_attention
from longseq.model.jagged import request_pairs
from longseq.model.layers import FFNStack
from longseq.model.match import AttentionBias, match_padded, match_pairs, positions_padded
from longseq.model.tokens import positions_from_most_recent

__all__ = [
    "ATTENTION_FORMS",
    "LAYOUTS",
    "STCAConfig",
    "STCATower",
    "TargetAttention",
    "reference_attention",
]

#: id features compared between target and event by the match bias: (item, category)
NUM_MATCH_FEATURES = 2

LAYOUTS = ("padded", "jagged")


@dataclass
class STCAConfig:
    """Hyper-parameters of the STCA tower (paper §6 open details have defaults here).

    Attributes:
        d_model: width ``d`` of history/target tokens and layer outputs.
        num_heads: ``h``; ``d_model`` must be divisible by it.
        num_layers: ``M`` stacked cross-attention layers.
        ffn_ratio: SwiGLU hidden width as a multiple of ``d``.
        ffn_depth: SwiGLU blocks in each history FFN ("FFN depth" of the ablation).
        shared_hist_ffn: one history FFN for all layers (False = faithful per-layer FFN on raw X).
        fused_query_ln: LayerNorm on the fused query ``q_{i+1}`` (default True, matching ``q_1``).
        ffn_residual: ``x + SwiGLU(x)`` in every FFN block (the paper leaves it open; without
            it gradients to the history side vanish at initialisation, see `FFNStack`).
        attention: ``kv``, ``absorbed`` or ``sdpa`` (exactly equivalent; a speed/memory choice).
        layout: ``padded`` (histories padded to the longest in the batch, masked) or ``jagged``
            (packed: no padding; the history FFNs run on real events only, attention on real
            (target, event) pairs; the ``attention`` form is then ``kv`` computed per pair).
        match_bias: add a learned per-head bias for "same item" and "same category as the
            target" to every attention logit (`longseq.model.match`).
        position_bias: add a learned per-head function of the event's log-position.
        position_dim: width of the log-position encoding of the position bias.
        count_channel: add per-head counts of the events that share the target's item /
            category, in a learned position window, to each layer's output (needs
            ``match_bias``): evidence a softmax average cannot carry.
    """

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    ffn_ratio: float = 2.0
    ffn_depth: int = 1
    shared_hist_ffn: bool = False
    fused_query_ln: bool = True
    ffn_residual: bool = True
    attention: str = "kv"
    layout: str = "padded"
    match_bias: bool = False
    position_bias: bool = False
    position_dim: int = 16
    count_channel: bool = False

    def validate(self, prefix: str = "model.stca") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.num_heads < 1:
            raise ValueError(f"{prefix}.num_heads must be >= 1, got {self.num_heads}")
        if self.ffn_depth < 1:
            raise ValueError(f"{prefix}.ffn_depth must be >= 1, got {self.ffn_depth}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"{prefix}.d_model ({self.d_model}) must be divisible by "
                f"{prefix}.num_heads ({self.num_heads})"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"{prefix}.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.attention not in ATTENTION_FORMS:
            raise ValueError(f"{prefix}.attention must be one of {ATTENTION_FORMS}")
        if self.num_layers < 1:
            raise ValueError(f"{prefix}.num_layers must be >= 1, got {self.num_layers}")
        if self.position_dim < 2 or self.position_dim % 2:
            raise ValueError(f"{prefix}.position_dim must be even and >= 2")
        if self.count_channel and not self.match_bias:
            raise ValueError(f"{prefix}.count_channel counts id matches: set {prefix}.match_bias")

    @property
    def biased(self) -> bool:
        """Whether any target-aware signal of `longseq.model.match` is on."""
        return self.match_bias or self.position_bias or self.count_channel


class STCATower(nn.Module):
    """The stacked tower: history tokens ``X`` and target tokens ``x_t`` -> output tokens ``z``.

    Per layer ``i``: ``X̃_i = LN(FFN_hist_i(X))``; ``q_1 = LN(FFN_tgt(x_t))``,
    ``q_{i+1} = LN(FFN_q([o_1..o_i, x_t] W_C))``; ``o_i = Attn(q_i, X̃_i)``;
    ``z = FFN_z([o_1..o_M, x_t] W_Z)`` with no LayerNorm on ``z``.
    """

    def __init__(self, cfg: STCAConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, m = cfg.d_model, cfg.num_layers
        n_hist = 1 if cfg.shared_hist_ffn else m
        self.hist_ffn = nn.ModuleList(
            FFNStack(d, d, cfg.ffn_ratio, cfg.ffn_depth, cfg.ffn_residual) for _ in range(n_hist)
        )
        self.hist_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_hist))
        self.tgt_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, cfg.ffn_residual)
        self.tgt_ln = nn.LayerNorm(d)
        self.attn = nn.ModuleList(
            TargetAttention(d, cfg.num_heads, cfg.attention, self._bias(cfg)) for _ in range(m)
        )
        # query fusion for layers 2..M: W_C_{i+1} in R^{(i+1)d x d}, then SwiGLU (+ LN)
        self.fuse_proj = nn.ModuleList(nn.Linear((i + 1) * d, d, bias=False) for i in range(1, m))
        self.fuse_ffn = nn.ModuleList(
            FFNStack(d, d, cfg.ffn_ratio, 1, cfg.ffn_residual) for _ in range(1, m)
        )
        self.fuse_ln = nn.ModuleList(
            nn.LayerNorm(d) if cfg.fused_query_ln else nn.Identity() for _ in range(1, m)
        )
        self.out_proj = nn.Linear((m + 1) * d, d, bias=False)
        self.out_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, cfg.ffn_residual)

    @staticmethod
    def _bias(cfg: STCAConfig) -> AttentionBias | None:
        if not cfg.biased:
            return None
        return AttentionBias(
            cfg.num_heads,
            cfg.d_model,
            NUM_MATCH_FEATURES if cfg.match_bias else 0,
            cfg.position_dim,
            cfg.position_bias,
            cfg.count_channel,
        )

    @property
    def needs_ids(self) -> bool:
        """Whether forward needs the (item, category) ids of events and targets."""
        return self.cfg.match_bias

    def encode_history(self, x: torch.Tensor) -> list[torch.Tensor]:
        """User side, once per request: ``[X̃_1 .. X̃_M]``, each ``[B, L, d]``."""
        encoded = [ln(ffn(x)) for ffn, ln in zip(self.hist_ffn, self.hist_ln)]
        return encoded * self.cfg.num_layers if self.cfg.shared_hist_ffn else encoded

    def _stack(self, encoded: list[torch.Tensor], tgt: torch.Tensor, attend) -> torch.Tensor:
        """The layers over encoded history; ``attend(attn, q, X̃_i)`` is the layout's attention."""
        q = self.tgt_ln(self.tgt_ffn(tgt))
        outs: list[torch.Tensor] = []
        for i, attn in enumerate(self.attn):
            if i > 0:
                fused = self.fuse_proj[i - 1](torch.cat(outs + [tgt], dim=-1))
                q = self.fuse_ln[i - 1](self.fuse_ffn[i - 1](fused))
            outs.append(attend(attn, q, encoded[i]))
        return self.out_ffn(self.out_proj(torch.cat(outs + [tgt], dim=-1)))

    def forward(
        self,
        hist: torch.Tensor,
        hist_mask: torch.Tensor,
        tgt: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hist [B,L,d]``, ``hist_mask [B,L]`` bool, ``tgt [B,T,d]`` -> ``z [B,T,d]``.

        ``hist_ids [B,L,2]`` / ``tgt_ids [B,T,2]``: (item, category) ids, for ``match_bias``.
        """
        encoded = self.encode_history(hist)
        match = match_padded(hist_ids, tgt_ids) if self.cfg.match_bias else None
        with_pos = self.cfg.position_bias or self.cfg.count_channel
        positions = positions_padded(hist_mask) if with_pos else None
        return self._stack(
            encoded,
            tgt,
            lambda attn, q, x: attn(q, x, hist_mask, match=match, positions=positions),
        )

    def forward_jagged(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed layout: ``hist [E,d]`` (``hist_lengths [B]``), ``tgt [N,d]`` -> ``z [N,d]``.

        ``hist_ids [E,2]`` / ``tgt_ids [N,2]``: (item, category) ids, for ``match_bias``.
        """
        encoded = self.encode_history(hist)  # FFN + LN are per event: no padding to skip
        pairs = request_pairs(hist_lengths, num_targets)  # once for all layers
        match = match_pairs(hist_ids, tgt_ids, *pairs) if self.cfg.match_bias else None
        with_pos = self.cfg.position_bias or self.cfg.count_channel
        positions = positions_from_most_recent(hist_lengths) if with_pos else None
        return self._stack(
            encoded,
            tgt,
            lambda attn, q, x: attn(
                q,
                x,
                hist_lengths=hist_lengths,
                num_targets=num_targets,
                match=match,
                positions=positions,
                pairs=pairs,
            ),
        )
