"""STCA: stacked target-to-history cross-attention (paper §1, §9), request-level in compute.

Shapes: ``B`` requests, ``L`` padded history length, ``T`` padded targets per request, ``d`` width,
``h`` heads, ``d_h = d / h``. The user side (``X̃_i = LN(FFN_i(X))`` and, in the ``kv`` kernel,
the keys/values) is computed once per request; only the queries are per target. Pointwise
batching is the special case ``T = 1``.

Two config words choose how (`longseq.model.stca_config.STCAConfig`): ``layout`` (``padded``:
``[B, L_max]`` events, masked; ``packed``: the flat ``[E, d]`` events and ``[N, d]`` targets of
the lookup, no padding) and ``kernel``, the attention kernel of `longseq.model.ops` (``kv``,
``absorbed``, ``sdpa``, ``reference`` padded; ``pairs``, ``flex`` packed). Every kernel is the
same function with the same weights, so a model trained with one is scored with any other
(`STCATower.padded_equivalent`, ``score_packed(kernel=...)``).

Optional target-aware signals (`longseq.model.match`): id-match and position biases in the
logits and a count channel (``match_bias``, ``position_bias``, ``count_channel``), and a learned
soft match next to the id matches (``soft_match``, `longseq.model.soft_match`).

Each layer's attention is a `TargetAttention` (`longseq.model.attention`), which runs the
kernel; the batch's history value (`longseq.model.ops.history`) is built once and shared by the
layers. The tower follows the protocol of `longseq.model.tower`. Pure torch: no torchrec/fbgemm
import on this path, so it runs on any accelerator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from longseq.model.attention import Projected, TargetAttention, reference_attention
from longseq.model.cooccur import category_target_loss, user_target_loss
from longseq.model.layers import FFNStack, maybe_dropout, padded_to_jagged
from longseq.model.match import AttentionBias
from longseq.model.ops.dispatch import packed_history
from longseq.model.ops.history import PaddedHistory, match_padded, positions_padded
from longseq.model.ops.kernels import Kernel
from longseq.model.ops.tables import MatchTables, TableHistory
from longseq.model.soft_match import SoftMatch
from longseq.model.stca_config import STCAConfig
from longseq.model.tokens import positions_from_most_recent
from longseq.model.tower import ID_FEATURES, SequenceTower, UserState

__all__ = [
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
            ``sdpa``, ``reference``, and either packed kernel) or ``X̃_i`` (``absorbed``).
        hist_mask: ``[B, L]`` (padded layout; ``None`` in the packed one, or for a padded state
            without padding, e.g. one request's, which is what an exported graph scores).
        hist_lengths: ``[B]`` (packed layout; ``None`` in the padded one).
        positions: each event's distance from the newest (position bias / count channel).
        hist_ids: the events' (item, category) ids (match bias).
        hist_rel: the events' relatedness vectors (soft match).
        tables: the events indexed by id (`MatchTables`; one request's state, serving:
            `longseq.model.stca_tables.with_tables`), or None.
    """

    layers: list[Projected]
    hist_mask: torch.Tensor | None = None
    hist_lengths: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    hist_ids: torch.Tensor | None = None
    hist_rel: torch.Tensor | None = None
    tables: MatchTables | None = None


class STCATower(SequenceTower[STCAState]):
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

    #: any STCA model scores a packed batch through FlexAttention (same weights)
    packed_kernel = Kernel.FLEX.value

    def __init__(self, cfg: STCAConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.layout = cfg.layout
        self.kernel = Kernel(cfg.kernel)
        #: the kernel of a packed call that names none: the config's, else ``pairs``
        self.default_packed = self.kernel if self.kernel.layout == "packed" else Kernel.PAIRS
        self.id_features = ID_FEATURES if cfg.match_bias else ()
        self.event_features = ("dt_bucket",) if cfg.time_bias else ()
        d, m = cfg.d_model, cfg.num_layers
        n_hist = 1 if cfg.shared_hist_ffn else m
        p = cfg.dropout
        self.hist_ffn = nn.ModuleList(
            FFNStack(d, d, cfg.ffn_ratio, cfg.ffn_depth, cfg.ffn_residual, p) for _ in range(n_hist)
        )
        self.hist_ln = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_hist))
        self.tgt_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, cfg.ffn_residual, p)
        self.tgt_ln = nn.LayerNorm(d)
        self.attn = nn.ModuleList(
            TargetAttention(d, cfg.num_heads, cfg.kernel, self._bias(cfg)) for _ in range(m)
        )
        # query fusion for layers 2..M: W_C_{i+1} in R^{(i+1)d x d}, then SwiGLU (+ LN)
        self.fuse_proj = nn.ModuleList(nn.Linear((i + 1) * d, d, bias=False) for i in range(1, m))
        self.fuse_ffn = nn.ModuleList(
            FFNStack(d, d, cfg.ffn_ratio, 1, cfg.ffn_residual, p) for _ in range(1, m)
        )
        self.fuse_ln = nn.ModuleList(
            nn.LayerNorm(d) if cfg.fused_query_ln else nn.Identity() for _ in range(1, m)
        )
        self.out_proj = nn.Linear((m + 1) * d, d, bias=False)
        self.out_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, cfg.ffn_residual, p)
        self.attn_drop = maybe_dropout(p)  # on each layer's attention output o_i
        self.soft = SoftMatch(d, cfg.soft_match_dim) if cfg.soft_match else None
        if self.soft is not None:  # a learned per-pair term: FlexAttention's id tables cannot
            self.default_packed = Kernel.PAIRS

    @staticmethod
    def _bias(cfg: STCAConfig) -> AttentionBias | None:
        if not cfg.biased:
            return None
        return AttentionBias(
            cfg.num_heads,
            cfg.d_model,
            (NUM_MATCH_FEATURES + cfg.soft_match) if cfg.match_bias else 0,
            cfg.position_dim,
            cfg.position_bias,
            cfg.count_channel,
            cfg.time_bias,
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
            outs.append(self.attn_drop(attend(attn, q, encoded[i])))
        return self.out_ffn(self.out_proj(torch.cat(outs + [tgt], dim=-1)))

    def padded_equivalent(self) -> STCATower:
        """This tower, or for the packed layout a padded one with the same weights (every
        kernel shares them) and the ``kv`` kernel."""
        if self.layout == "padded":
            return self
        cfg = dataclasses.replace(self.cfg, layout="padded", kernel=Kernel.KV.value)
        padded = STCATower(cfg)
        padded.load_state_dict(self.state_dict())
        ref = next(self.parameters())
        return padded.to(ref.device, ref.dtype).train(self.training)

    def state_names(self) -> list[str]:
        """``k_i, v_i`` per layer (``x_i`` with ``absorbed``), then ``positions`` (position
        bias / count channel) and ``hist_ids`` (match bias): `STCAState`'s tensors in order."""
        cfg, names = self.cfg, []
        for i in range(cfg.num_layers):
            names += [f"x_{i}"] if self.kernel is Kernel.ABSORBED else [f"k_{i}", f"v_{i}"]
        if cfg.position_bias or cfg.count_channel:
            names.append("positions")
        if cfg.match_bias:
            names.append("hist_ids")
        if cfg.soft_match:
            names.append("hist_rel")
        return names

    def export_info(self) -> dict[str, Any]:
        """The kernel and the number of layers."""
        return {"kernel": self.kernel.value, "num_layers": self.cfg.num_layers}

    def _positions(self, hist_mask=None, hist_lengths=None, dt=None) -> torch.Tensor | None:
        """Each event's distance from the newest (``[B, L]`` / ``[E]``); with ``time_bias``
        paired with its time-delta bucket ``dt`` (``[..., 2]``)."""
        if not (self.cfg.position_bias or self.cfg.count_channel):
            return None
        if hist_lengths is not None:
            pos = positions_from_most_recent(hist_lengths)
        else:
            pos = positions_padded(hist_mask)
        return torch.stack([pos, dt.to(pos.dtype)], -1) if self.cfg.time_bias else pos

    def _split(self, hist_ids: torch.Tensor | None):
        """``hist_ids [..., F (+1)]`` -> (the match ids ``[..., F]`` or None, the time-delta
        buckets ``[...]`` or None): with ``time_bias`` the last column is the event's
        ``dt_bucket`` (`event_features`)."""
        if not self.cfg.time_bias:
            return hist_ids, None
        if hist_ids is None:
            raise ValueError("model.stca.time_bias needs the events' dt_bucket ids (hist_ids)")
        match = hist_ids[..., :-1] if self.cfg.match_bias else None
        return match, hist_ids[..., -1]

    def _match_ids(self, hist_ids, tgt_ids):
        """The ids the match bias compares (None without it); an error when they are missing."""
        if not self.cfg.match_bias:
            return None, None
        if hist_ids is None or tgt_ids is None:
            raise ValueError("the match bias (model.stca.match_bias) needs hist_ids and tgt_ids")
        return hist_ids, tgt_ids

    def _layers(self, per_layer, tgt, history, kernel: Kernel | None, fused: bool) -> torch.Tensor:
        """The stack over ``history`` with ``kernel`` (None: each attention's own). ``fused``:
        ``per_layer`` is ``X̃`` and each layer's keys/values and attention are ONE module call
        (hooks see it), else ``per_layer`` is the state's projected layers."""

        def attend(attn: TargetAttention, q: torch.Tensor, s) -> torch.Tensor:
            return attn(q, s, history, kernel) if fused else attn.attend(q, s, history, kernel)

        return self._stack(per_layer, tgt, attend)

    def _rel(self, hist: torch.Tensor) -> torch.Tensor | None:
        """The events' relatedness vectors (soft match; None without it)."""
        return None if self.soft is None else self.soft.embed(hist)

    def _cooccur(self, z, rel, tgt, lengths, num_targets, hist_ids, tgt_ids) -> torch.Tensor:
        """``z`` unchanged; in training, keeps the co-occurrence loss (`longseq.model.cooccur`)
        of packed ``rel [E, r]`` (``lengths``, ids ``hist_ids [E, 2]``) and target tokens
        ``tgt [N, d]`` (``num_targets``, ids ``tgt_ids [N, 2]``) for `pop_aux_loss`."""
        w = self.cfg.soft_match_cooccur
        if rel is None or not w or not (self.training and torch.is_grad_enabled()):
            return z
        assert self.soft is not None  # rel is the soft match's
        b = lengths.numel()
        req_e = torch.repeat_interleave(torch.arange(b, device=rel.device), lengths)
        request = torch.repeat_interleave(torch.arange(b, device=rel.device), num_targets)
        tgt_rel = self.soft.embed(tgt)
        if self.cfg.soft_match_negatives == "category":
            hist_ids, tgt_ids = self._match_ids(hist_ids, tgt_ids)
            cat = ID_FEATURES.index("category_id")
            loss = category_target_loss(
                tgt_rel, tgt_ids[:, cat], request, rel, hist_ids[:, cat], req_e
            )
        else:
            user = rel.new_zeros(b, rel.shape[-1]).index_add(0, req_e, rel)
            loss = user_target_loss(tgt_rel, user, request)
        self._aux_loss = w * loss
        return z

    def _history(self, hist_mask, positions, hist_ids, tgt_ids, hist_rel, tgt) -> PaddedHistory:
        hist_ids, tgt_ids = self._match_ids(hist_ids, tgt_ids)
        match = None if hist_ids is None else match_padded(hist_ids, tgt_ids)
        if self.soft is not None and match is not None:
            assert hist_rel is not None  # the state of a soft-match tower carries it
            match = torch.cat([match, self.soft.padded(hist_rel, self.soft.embed(tgt))], -1)
        return PaddedHistory(hist_mask, match, positions)

    def _packed(self, per_layer, tgt, lengths, num_targets, ids, tgt_ids, positions, fused, kernel,
                hist_rel=None):  # fmt: skip
        """The stack, packed; ``fused`` as in `_layers`; ``kernel``: ``pairs`` or ``flex``
        (``pairs`` with the soft match)."""
        ids, tgt_ids = self._match_ids(ids, tgt_ids)
        kernel = Kernel.PAIRS if self.soft is not None else kernel or self.default_packed
        kernel, history = packed_history(
            kernel, lengths, num_targets, tgt, positions, ids, tgt_ids,
            count=self.cfg.count_channel,
        )  # fmt: skip
        if self.soft is not None and history.match is not None and history.pairs is not None:
            assert hist_rel is not None  # the state of a soft-match tower carries it
            soft = self.soft.pairs(hist_rel, self.soft.embed(tgt), *history.pairs)
            history.match = torch.cat([history.match, soft], -1)
        return self._layers(per_layer, tgt, history, kernel, fused)

    def _attns(self) -> list[TargetAttention]:
        """The layers' attentions, typed (an `nn.ModuleList` yields plain modules)."""
        return cast(list[TargetAttention], list(self.attn))

    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> STCAState:
        """``hist [B,L,d]``, ``hist_mask [B,L]``, ``hist_ids [B,L,2]`` (``[B,L,3]`` with
        ``time_bias``: the dt buckets last) -> `STCAState`."""
        hist_ids, dt = self._split(hist_ids)
        encoded = self.encode_history(hist)
        return STCAState(
            layers=[attn.project(x) for attn, x in zip(self._attns(), encoded)],
            hist_mask=hist_mask,
            positions=self._positions(hist_mask, dt=dt),
            hist_ids=hist_ids if self.cfg.match_bias else None,
            hist_rel=self._rel(hist),
        )

    def score(
        self, state: STCAState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]`` (``tgt_ids [B,T,2]``) against a padded `STCAState` -> ``[B,T,d]``
        (with the state's `MatchTables`, if `longseq.model.stca_tables.with_tables` gave it
        some: the same function, at the cost of the attention plus the matched events)."""
        history: PaddedHistory | TableHistory | None = None
        if state.tables is not None:
            _, tgt_ids = self._match_ids(state.hist_ids, tgt_ids)
            assert state.hist_ids is not None and tgt_ids is not None  # the match bias's ids
            pos = None if state.positions is None else state.positions[0]
            history = TableHistory.build(state.tables, state.hist_ids[0], tgt_ids[0], pos)
            history = history if history.sparse else None  # most pairs match: the dense bias
        if history is None:
            history = self._history(
                state.hist_mask, state.positions, state.hist_ids, tgt_ids, state.hist_rel, tgt
            )
        return self._layers(state.layers, tgt, history, None, False)

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
        hist_ids, dt = self._split(hist_ids)
        pos, rel = self._positions(hist_mask, dt=dt), self._rel(hist)
        history = self._history(hist_mask, pos, hist_ids, tgt_ids, rel, tgt)
        z = self._layers(self.encode_history(hist), tgt, history, None, True)
        if rel is not None and self.cfg.soft_match_cooccur:  # real events and targets only
            n_tgt = (tgt != 0).any(-1).sum(1)  # padded targets are zero tokens
            flat_t = padded_to_jagged(tgt, n_tgt)
            flat_ids = None if tgt_ids is None else padded_to_jagged(tgt_ids, n_tgt)
            hid = None if hist_ids is None else hist_ids[hist_mask]
            z = self._cooccur(z, rel[hist_mask], flat_t, hist_mask.sum(1), n_tgt, hid, flat_ids)
        return z

    def encode_user_packed(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
    ) -> STCAState:
        """Packed: ``hist [E,d]``, ``hist_lengths [B]``, ``hist_ids [E,2]`` (``[E,3]`` with
        ``time_bias``) -> `STCAState`."""
        hist_ids, dt = self._split(hist_ids)
        encoded = self.encode_history(hist)  # FFN + LN are per event: no padding to skip
        return STCAState(
            layers=[
                attn.project(x, self.default_packed) for attn, x in zip(self._attns(), encoded)
            ],
            hist_lengths=hist_lengths,
            positions=self._positions(hist_lengths=hist_lengths, dt=dt),
            hist_ids=hist_ids if self.cfg.match_bias else None,
            hist_rel=self._rel(hist),
        )

    def score_packed(
        self,
        state: STCAState,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        tgt_ids: torch.Tensor | None = None,
        kernel: str | None = None,
    ) -> torch.Tensor:
        """Packed: ``tgt [N,d]`` (``num_targets [B]``, ``tgt_ids [N,2]``) -> ``z [N,d]``.

        ``kernel``: ``flex`` or ``pairs`` (default: the config's packed kernel, else ``pairs``;
        every kernel has the same weights, so a model trained with any kernel or layout can be
        scored packed with ``flex``).
        """
        lengths, ids, pos = state.hist_lengths, state.hist_ids, state.positions
        return self._packed(
            state.layers, tgt, lengths, num_targets, ids, tgt_ids, pos, False, kernel,
            state.hist_rel,
        )  # fmt: skip

    def forward_packed(
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
        hist_ids, dt = self._split(hist_ids)
        encoded = self.encode_history(hist)  # FFN + LN are per event: no padding to skip
        pos = self._positions(hist_lengths=hist_lengths, dt=dt)
        lengths = hist_lengths
        rel = self._rel(hist)
        z = self._packed(
            encoded, tgt, lengths, num_targets, hist_ids, tgt_ids, pos, True, None, rel
        )
        return self._cooccur(z, rel, tgt, lengths, num_targets, hist_ids, tgt_ids)
