"""The history a target-attention kernel reads, in either layout: one small typed value each.

A history value is built once per batch and shared by every layer; it holds the layout (the
padding mask, or the packed batch's pairs / block mask) and the layer-independent inputs of the
target-aware signals of `longseq.model.match` (id matches, event positions). Each layer turns it
into its own logit bias and count channel with `logit_bias` / `count`, in the form its kernel
reads. Pure torch; imports no kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from longseq.model.match import AttentionBias


def match_padded(hist_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
    """``hist_ids [B, L, F]``, ``tgt_ids [B, T, F]`` -> ``[B, T, L, F]`` float 0/1 matches."""
    return (tgt_ids[:, :, None, :] == hist_ids[:, None, :, :]).float()


def match_pairs(
    hist_ids: torch.Tensor, tgt_ids: torch.Tensor, pair_t: torch.Tensor, pair_e: torch.Tensor
) -> torch.Tensor:
    """Packed: ``hist_ids [E, F]``, ``tgt_ids [N, F]`` -> ``[P, F]`` matches of each pair."""
    return (tgt_ids[pair_t] == hist_ids[pair_e]).float()


def positions_padded(hist_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` distance of each slot from its row's newest event (0 = newest; padding: 0)."""
    lengths = hist_mask.sum(1, keepdim=True)
    pos = lengths - 1 - torch.arange(hist_mask.shape[1], device=hist_mask.device)[None, :]
    return pos.clamp(min=0)


@dataclass
class PaddedHistory:
    """A padded batch's history: ``B`` requests of ``L`` slots, ``T`` target slots each.

    Attributes:
        mask: ``[B, L]`` bool, True = an event (None: every slot is one, no padding: what an
            exported graph passes, with no data-dependent check).
        match: ``[B, T, L, F]`` 0/1 id matches of every (target, event) (match bias, count
            channel), or None.
        positions: ``[B, L]`` each event's distance from the newest (position bias, count
            window), or None.
    """

    mask: torch.Tensor | None
    match: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    def logit_bias(self, bias: AttentionBias) -> torch.Tensor | None:
        """``bias``'s logits ``[B, h, T, L]`` (``[B, h, 1, L]``: position bias alone) or None."""
        return bias.logit_bias(self.match, self.positions, padded=True)

    def count(self, bias: AttentionBias) -> torch.Tensor:
        """``bias``'s count channel ``[B, T, d]``."""
        assert self.match is not None and self.positions is not None  # a count channel needs both
        return bias.count_padded(self.match, self.positions, self.mask)


@dataclass
class PackedBatch:
    """One packed batch laid out for the ``flex`` kernel (`longseq.model.ops.flex.flex_attention_packed`) (built once, shared by every layer).

    Attributes:
        n, e: real targets and events; ``n_pad``, ``e_pad``: their bucketed sizes.
        block_mask: the FlexAttention block mask (``req(target) == req(event)``).
        has_history: ``[N]`` whether the target's request has any event (else its output is 0).
        tgt_ids, hist_ids: ``[N_pad, F]`` / ``[E_pad, F]`` ids for the match bias (or None).
        positions: ``[E]`` each event's distance from its request's newest (or None).
        count_groups: per id feature, ``(event_group [E], target_group [N], num_groups)``:
            requests x id values, for the count channel's tables (or None).
    """

    n: int
    e: int
    n_pad: int
    e_pad: int
    block_mask: object
    has_history: torch.Tensor
    tgt_ids: torch.Tensor | None
    hist_ids: torch.Tensor | None
    positions: torch.Tensor | None
    count_groups: list[tuple[torch.Tensor, torch.Tensor, int]] | None


@dataclass
class PackedHistory:
    """A packed batch's history: the flat ``[E]`` events and ``[N]`` targets of ``B`` requests,
    laid out for ONE packed kernel (`longseq.model.ops.dispatch.packed_history` builds it).

    Attributes:
        lengths: ``[B]`` events per request.
        num_targets: ``[B]`` targets per request.
        n: ``N``, the number of targets.
        positions: ``[E]`` each event's distance from its request's newest, or None.
        pairs: the ``pairs`` kernel's ``(pair_target, pair_event)`` ``[P]`` (else None).
        match: ``[P, F]`` id matches of every pair (``pairs`` kernel), or None.
        pair_positions: ``[P]`` each pair's event position (``pairs`` kernel), or None.
        batch: the ``flex`` kernel's `PackedBatch` (else None).
    """

    lengths: torch.Tensor
    num_targets: torch.Tensor
    n: int
    positions: torch.Tensor | None = None
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None
    match: torch.Tensor | None = None
    pair_positions: torch.Tensor | None = None
    batch: PackedBatch | None = None

    def logit_bias(self, bias: AttentionBias):  # noqa: ANN201 - [P, h] or the flex terms
        """``bias``'s logits per pair ``[P, h]`` (``pairs``), or for ``flex`` the terms its
        ``score_mod`` adds inside the kernel (`AttentionBias.score_terms`)."""
        if self.batch is not None:
            return bias.score_terms(self.positions, self.batch.tgt_ids is not None)
        return bias.logit_bias(self.match, self.pair_positions, padded=False)

    def count(self, bias: AttentionBias) -> torch.Tensor:
        """``bias``'s count channel ``[N, d]``: per pair (``pairs``) or from per-request id
        tables (``flex``: O(E + N))."""
        if self.batch is not None:
            assert self.positions is not None and self.batch.count_groups is not None
            return bias.count_grouped(self.positions, self.batch.count_groups)
        assert self.match is not None and self.pair_positions is not None
        assert self.pairs is not None  # a count channel needs the ids, positions and pairs
        return bias.count_pairs(self.match, self.pair_positions, self.pairs[0], self.n)
