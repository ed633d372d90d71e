"""`STCAConfig`: the hyper-parameters of the STCA tower (`longseq.model.stca`)."""

from __future__ import annotations

from dataclasses import dataclass

from longseq.model.ops.kernels import check_kernel


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
        layout: ``padded`` (histories padded to the longest in the batch, masked) or ``packed``
            (no padding: the history FFNs run on real events only, attention on real (target,
            event) pairs).
        kernel: the attention kernel (`longseq.model.ops.kernels.Kernel`; all exactly the same
            function, a speed/memory choice). Padded layout: ``kv``, ``absorbed``, ``sdpa`` or
            ``reference`` (the readable loop: slow). Packed layout: ``pairs`` (gathered pairs)
            or ``flex`` (one FlexAttention call per layer; on CPU with autograd it runs
            ``pairs``).
        match_bias: add a learned per-head bias for "same item" and "same category as the
            target" to every attention logit (`longseq.model.match`).
        position_bias: add a learned per-head function of the event's log-position.
        position_dim: width of the log-position encoding of the position bias.
        count_channel: add per-head counts of the events that share the target's item /
            category, in a learned position window, to each layer's output (needs
            ``match_bias``): evidence a softmax average cannot carry.
        soft_match: add a learned relatedness of target and event (`longseq.model.soft_match`)
            as one more match feature: a per-head weight in the match bias and a soft count in
            the count channel (needs ``match_bias``). For categories coarser than the topics a
            user's interests follow; packed calls run the ``pairs`` kernel.
        soft_match_dim: width of the relatedness vectors of ``soft_match``.
        soft_match_cooccur: weight of a self-supervised co-occurrence loss on the soft
            match's vectors: a request's targets should be related to its own history more
            than to other requests' (`longseq.model.cooccur`), added in training (0: none;
            needs ``soft_match``).
        soft_match_negatives: what the co-occurrence loss contrasts a target with:
            ``request`` (every request's whole history) or ``category`` (every request's events
            of the target's own category: harder negatives, for categories coarser than the
            interests).
        time_bias: the events' time delta (``request_ts - ts``, log-bucketed) and position
            enter each layer only through the logit biases and the count window (per head:
            ``w_h . [PE(log1p p) | PE(log1p dt_bucket)]``), not the history tokens. Every
            per-event term of the user side (tokens, history FFNs, keys, values) then depends
            on the event alone, not on the request time: a cached state holds at a later
            request once its positions and time-delta buckets are recomputed (docs/serving.md).
            Needs ``position_bias``.
        dropout: dropout rate in training on every FFN block's output (history, target, query
            fusion and output FFNs) and on every layer's attention output; 0 = none (exactly
            the tower without the option). Off in ``eval()``.
    """

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    ffn_ratio: float = 2.0
    ffn_depth: int = 1
    shared_hist_ffn: bool = False
    fused_query_ln: bool = True
    ffn_residual: bool = True
    layout: str = "padded"
    kernel: str = "kv"
    match_bias: bool = False
    position_bias: bool = False
    position_dim: int = 16
    count_channel: bool = False
    soft_match: bool = False
    soft_match_dim: int = 16
    soft_match_cooccur: float = 0.0
    soft_match_negatives: str = "request"
    time_bias: bool = False
    dropout: float = 0.0

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
        check_kernel(self.kernel, self.layout, prefix)
        if self.num_layers < 1:
            raise ValueError(f"{prefix}.num_layers must be >= 1, got {self.num_layers}")
        if self.position_dim < 2 or self.position_dim % 2:
            raise ValueError(f"{prefix}.position_dim must be even and >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{prefix}.dropout must be in [0, 1), got {self.dropout}")
        if self.count_channel and not self.match_bias:
            raise ValueError(f"{prefix}.count_channel counts id matches: set {prefix}.match_bias")
        if self.soft_match and not self.match_bias:
            raise ValueError(f"{prefix}.soft_match is a match feature: set {prefix}.match_bias")
        if self.soft_match_cooccur < 0.0 or (self.soft_match_cooccur and not self.soft_match):
            raise ValueError(f"{prefix}.soft_match_cooccur must be >= 0 and needs soft_match")
        if self.time_bias and not self.position_bias:
            raise ValueError(
                f"{prefix}.time_bias brings time and position in through the position bias: "
                f"set {prefix}.position_bias"
            )
        if self.soft_match_negatives not in ("request", "category"):
            raise ValueError(
                f"{prefix}.soft_match_negatives must be 'request' or 'category', "
                f"got {self.soft_match_negatives!r}"
            )
        if self.soft_match_dim < 1:
            raise ValueError(f"{prefix}.soft_match_dim must be >= 1, got {self.soft_match_dim}")

    @property
    def biased(self) -> bool:
        """Whether any target-aware signal of `longseq.model.match` is on."""
        return self.match_bias or self.position_bias or self.count_channel
