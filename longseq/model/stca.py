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
forms are tested against) lives in `longseq.model.attention`, the config in
`longseq.model.stca_config`. The tower follows the protocol of `longseq.model.tower`. Pure torch:
no torchrec/fbgemm import on this path, so it runs on any accelerator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longseq.model.attention import (
    ATTENTION_FORMS,
    Projected,
    TargetAttention,
    reference_attention,
)
from longseq.model.flex import packed_batch, use_flex
from longseq.model.jagged import jagged_attend, request_pairs
from longseq.model.layers import FFNStack
from longseq.model.match import AttentionBias, match_padded, match_pairs, positions_padded
from longseq.model.stca_config import STCAConfig
from longseq.model.tokens import positions_from_most_recent
from longseq.model.tower import ID_FEATURES, LAYOUTS, SequenceTower, UserState

__all__ = [
    "ATTENTION_FORMS",
    "LAYOUTS",
    "STCAConfig",
    "STCAState",
    "STCATower",
    "TargetAttention",
    "reference_attention",
]

#: id features compared between target and event by the match bias: (item, category)
NUM_MATCH_FEATURES = len(ID_FEATURES)


@dataclass
class STCAState(UserState):
    """STCA's user state: every layer's projected history, and the per-request match inputs.

    Attributes:
        layers: per layer, `TargetAttention.project` of ``X̃_i``: ``(K_i, V_i)`` (``kv``,
            ``sdpa``, and any form in the jagged layout) or ``X̃_i`` (``absorbed``).
        hist_mask: ``[B, L]`` (padded layout; ``None`` in the jagged one, or for a padded state
            without padding, e.g. one request's, which is what an exported graph scores).
        hist_lengths: ``[B]`` (jagged layout; ``None`` in the padded one).
        positions: each event's distance from the newest (position bias / count channel).
        hist_ids: the events' (item, category) ids (match bias).
    """

    layers: list[Projected]
    hist_mask: torch.Tensor | None = None
    hist_lengths: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    hist_ids: torch.Tensor | None = None


class STCATower(SequenceTower):
    """The stacked tower: history tokens ``X`` and target tokens ``x_t`` -> output tokens ``z``.

    Per layer ``i``: ``X̃_i = LN(FFN_hist_i(X))``; ``q_1 = LN(FFN_tgt(x_t))``,
    ``q_{i+1} = LN(FFN_q([o_1..o_i, x_t] W_C))``; ``o_i = Attn(q_i, X̃_i)``;
    ``z = FFN_z([o_1..o_M, x_t] W_Z)`` with no LayerNorm on ``z``.

    ``X̃_i`` and its keys/values depend on the history only, so `encode_user` computes every
    layer's at once (`STCAState`) and `score` runs the stacked, fused-query target side.
    ``forward`` is the same function with each layer's attention as ONE module call (history
    projection and attention together), so activation checkpointing recomputes the keys/values
    with the scores and FSDP2 gathers each layer's weights once (tests/model/test_tower_protocol.py
    checks ``forward == score(encode_user(...))``).
    """

    def __init__(self, cfg: STCAConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.layout = cfg.layout
        #: the packed layout's attention kernel: ``flex`` (FlexAttention) or ``pairs``
        self.kernel = "flex" if cfg.attention == "flex" else "pairs"
        self.id_features = ID_FEATURES if cfg.match_bias else ()
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

    def checkpoint_layers(self) -> list[nn.Module]:
        """Activation checkpointing: each layer's history FFN, attention and query fusion."""
        return [*self.hist_ffn, *self.attn, *self.fuse_ffn]

    def shard_layers(self) -> list[nn.Module]:
        """FSDP2 units: each layer's history FFN and attention (the history-side weights)."""
        return [*self.hist_ffn, *self.attn]

    def encode_history(self, x: torch.Tensor) -> list[torch.Tensor]:
        """User side, once per request: ``[X̃_1 .. X̃_M]``, each ``[B, L, d]``."""
        encoded = [ln(ffn(x)) for ffn, ln in zip(self.hist_ffn, self.hist_ln)]
        return encoded * self.cfg.num_layers if self.cfg.shared_hist_ffn else encoded

    def _stack(self, encoded: list, tgt: torch.Tensor, attend) -> torch.Tensor:
        """The layers over the history; ``attend(attn, q, encoded[i])`` is the layer's attention."""
        q = self.tgt_ln(self.tgt_ffn(tgt))
        outs: list[torch.Tensor] = []
        for i, attn in enumerate(self.attn):
            if i > 0:
                fused = self.fuse_proj[i - 1](torch.cat(outs + [tgt], dim=-1))
                q = self.fuse_ln[i - 1](self.fuse_ffn[i - 1](fused))
            outs.append(attend(attn, q, encoded[i]))
        return self.out_ffn(self.out_proj(torch.cat(outs + [tgt], dim=-1)))

    def _positions(self, hist_mask=None, hist_lengths=None) -> torch.Tensor | None:
        if not (self.cfg.position_bias or self.cfg.count_channel):
            return None
        if hist_lengths is not None:
            return positions_from_most_recent(hist_lengths)
        return positions_padded(hist_mask)

    def _padded(self, per_layer, tgt, hist_mask, positions, match, fused: bool) -> torch.Tensor:
        """The stack, padded; ``fused``: ``per_layer`` is ``X̃`` and each attention one call."""

        def attend(attn: TargetAttention, q: torch.Tensor, s) -> torch.Tensor:
            if fused:  # X̃ -> keys/values -> attention in ONE module call (hooks see it)
                return attn(q, s, hist_mask, match=match, positions=positions)
            return attn.attend(q, s, hist_mask, match=match, positions=positions)

        return self._stack(per_layer, tgt, attend)

    def _jagged(self, per_layer, tgt, lengths, num_targets, ids, tgt_ids, positions, fused, kernel):
        """The stack, packed; ``fused`` as in `_padded`; ``kernel``: ``pairs`` or ``flex``."""
        packed = pairs = match = None
        flex = (kernel or self.kernel) == "flex" and use_flex(tgt)
        if flex and tgt.shape[0] and lengths.numel():  # one FlexAttention call per layer
            if self.cfg.match_bias and (ids is None or tgt_ids is None):
                raise ValueError("the match bias needs hist_ids and tgt_ids")
            count = self.cfg.count_channel
            packed = packed_batch(lengths, num_targets, ids, tgt_ids, positions, count)
        else:  # every real (target, event) pair, gathered (`longseq.model.jagged`)
            pairs = request_pairs(lengths, num_targets)  # once for all layers
            match = match_pairs(ids, tgt_ids, *pairs) if self.cfg.match_bias else None

        def attend(attn: TargetAttention, q: torch.Tensor, s) -> torch.Tensor:
            if fused:
                return attn(q, s, None, lengths, num_targets, match, positions, pairs, packed)
            return jagged_attend(attn, q, s, lengths, num_targets, match, positions, pairs, packed)

        return self._stack(per_layer, tgt, attend)

    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> STCAState:
        """``hist [B,L,d]``, ``hist_mask [B,L]``, ``hist_ids [B,L,2]`` -> `STCAState`."""
        encoded = self.encode_history(hist)
        return STCAState(
            layers=[attn.project(x) for attn, x in zip(self.attn, encoded)],
            hist_mask=hist_mask,
            positions=self._positions(hist_mask),
            hist_ids=hist_ids if self.cfg.match_bias else None,
        )

    def score(
        self, state: STCAState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]`` (``tgt_ids [B,T,2]``) against a padded `STCAState` -> ``[B,T,d]``."""
        match = match_padded(state.hist_ids, tgt_ids) if self.cfg.match_bias else None
        return self._padded(state.layers, tgt, state.hist_mask, state.positions, match, False)

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
        match = match_padded(hist_ids, tgt_ids) if self.cfg.match_bias else None
        encoded = self.encode_history(hist)
        return self._padded(encoded, tgt, hist_mask, self._positions(hist_mask), match, True)

    def encode_user_jagged(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
    ) -> STCAState:
        """Packed: ``hist [E,d]``, ``hist_lengths [B]``, ``hist_ids [E,2]`` -> `STCAState`."""
        encoded = self.encode_history(hist)  # FFN + LN are per event: no padding to skip
        return STCAState(
            layers=[attn.project(x, jagged=True) for attn, x in zip(self.attn, encoded)],
            hist_lengths=hist_lengths,
            positions=self._positions(hist_lengths=hist_lengths),
            hist_ids=hist_ids if self.cfg.match_bias else None,
        )

    def score_jagged(
        self,
        state: STCAState,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        tgt_ids: torch.Tensor | None = None,
        kernel: str | None = None,
    ) -> torch.Tensor:
        """Packed: ``tgt [N,d]`` (``num_targets [B]``, ``tgt_ids [N,2]``) -> ``z [N,d]``.

        ``kernel``: ``flex`` or ``pairs`` (default: the config's; every form has the same
        weights, so a model trained in any form or layout can be scored packed with ``flex``).
        """
        lengths, ids, pos = state.hist_lengths, state.hist_ids, state.positions
        return self._jagged(
            state.layers, tgt, lengths, num_targets, ids, tgt_ids, pos, False, kernel
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
        pos = self._positions(hist_lengths=hist_lengths)
        lengths = hist_lengths
        return self._jagged(encoded, tgt, lengths, num_targets, hist_ids, tgt_ids, pos, True, None)
