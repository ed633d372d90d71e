"""Soft match: a learned relatedness between a target and each history event (pure torch).

The id-match bias and count channel (`longseq.model.match`) compare ids: "same item", "same
category". When the given category is coarse (a genre holding many finer topics that only the
item ids reveal), "same item" is too sparse and "same category" too broad, and nothing in them
learns which items belong together (docs/results.md, "Coarse categories: learning relatedness").

`SoftMatch` adds one more, learned, match feature next to the exact ones: each token (the
tower's input history and target tokens, which carry the item and category embeddings) gets a
small relatedness vector ``r = normalize(W_r x)`` of width ``dim``, and a (target, event) pair
the soft match

    m_tj = sigmoid(GAIN * (a * cos(r_t, r_j) - b))  in (0, 1)

with learned scalars ``a`` and ``b`` (starting so that ``cos = 1``, the same item, gives ~1 and
unrelated random vectors ~0). It is appended to the exact matches, so every layer's match bias
gets a per-head weight for it and the count channel a per-head *soft count*
``log(1 + sum_j m_tj g_h(p_j))``: how many events in the head's position window are related to
the target. The gradient of that count is what teaches relatedness: events whose presence
predicts a click on the target are pulled towards it, and the item embeddings and ``W_r`` learn
the topics from the labels alone, with nothing to configure.

The event vectors ``r_j`` are per request (part of the user state, ``hist_rel``); only the
``[T, L]`` cosines are per pair, like the attention scores. `soft_match_reference` is the
readable per-pair loop the parity tests compare the padded and packed forms against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longseq.model.match import GAIN

#: initial ``GAIN * a`` and ``GAIN * b``: sigmoid(10 cos - 5) is ~0.99 at cos 1, ~0.007 at cos 0
INIT_SLOPE, INIT_OFFSET = 10.0, 5.0


class SoftMatch(nn.Module):
    """The learned relatedness of target and event tokens (see the module doc).

    Args:
        d: token width.
        dim: width of the relatedness vectors.
    """

    def __init__(self, d: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, dim, bias=False)
        self.slope = nn.Parameter(torch.tensor(INIT_SLOPE / GAIN))
        self.offset = nn.Parameter(torch.tensor(INIT_OFFSET / GAIN))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[..., d]`` -> unit relatedness vectors ``[..., dim]``."""
        return F.normalize(self.proj(x), dim=-1)

    def _match(self, cos: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(GAIN * (self.slope * cos - self.offset))

    def padded(self, hist_rel: torch.Tensor, tgt_rel: torch.Tensor) -> torch.Tensor:
        """``hist_rel [B, L, r]``, ``tgt_rel [B, T, r]`` -> soft matches ``[B, T, L, 1]``."""
        cos = torch.einsum("btr,blr->btl", tgt_rel, hist_rel.to(tgt_rel.dtype))
        return self._match(cos)[..., None]

    def pairs(
        self,
        hist_rel: torch.Tensor,
        tgt_rel: torch.Tensor,
        pair_t: torch.Tensor,
        pair_e: torch.Tensor,
    ) -> torch.Tensor:
        """Packed: ``hist_rel [E, r]``, ``tgt_rel [N, r]`` -> ``[P, 1]`` for the pairs."""
        cos = (tgt_rel[pair_t] * hist_rel[pair_e].to(tgt_rel.dtype)).sum(-1)
        return self._match(cos)[:, None]


def soft_match_reference(
    soft: SoftMatch, hist: torch.Tensor, tgt: torch.Tensor, hist_mask: torch.Tensor
) -> torch.Tensor:
    """Readable loop: ``hist [B, L, d]``, ``tgt [B, T, d]`` tokens -> ``[B, T, L, 1]`` soft
    matches (0 at padded events)."""
    b, t, _ = tgt.shape
    out = tgt.new_zeros(b, t, hist.shape[1], 1)
    w = soft.proj.weight
    for i in range(b):
        for j in range(t):
            rt = w @ tgt[i, j]
            for e in range(hist.shape[1]):
                if not hist_mask[i, e]:
                    continue
                re = w @ hist[i, e]
                cos = (rt @ re) / (rt.norm().clamp(min=1e-12) * re.norm().clamp(min=1e-12))
                out[i, j, e, 0] = torch.sigmoid(GAIN * (soft.slope * cos - soft.offset))
    return out
