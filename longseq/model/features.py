"""`SideFeatures`: the declared user, context and candidate features -> per-group vectors.

The embeddings of the sparse features come from the model's one EmbeddingCollection lookup
(`longseq.model.embeddings`: a table ``feat_<name>`` per sparse feature, width
``embedding_dim``); this module only pools and groups them (no parameters):

* ``id``: the looked-up row;
* ``multi_hot``: the ``mean`` or ``sum`` of its list's rows (an empty list: zeros);
* ``dense``: the transformed value (`longseq.data.features.FeatureSpec.transform_values`), one
  column.

Features of one ``token_group`` are concatenated in declaration order into one vector: the
user/context groups per request (``[B, w]``, computed once per request: request-level batching
in compute), the candidate groups per target (``[N, w]``). The heads take the groups (the MLP
head concatenates them; the RankMixer head makes one token of each). Pure torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from longseq.data.features import FeatureSpec

#: token names the head uses already; a feature group may not take them
RESERVED_GROUPS = ("z", "history", "item", "category")


def segment_pool(values: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool rows ``values [sum(lengths), w]`` per segment -> ``[len(lengths), w]`` (``mean`` or
    ``sum``; an empty segment gives zeros)."""
    seg = torch.repeat_interleave(torch.arange(lengths.numel(), device=values.device), lengths)
    out = values.new_zeros(lengths.numel(), values.shape[-1]).index_add(0, seg, values)
    if pooling == "mean":
        out = out / lengths.clamp(min=1).unsqueeze(-1).to(values.dtype)
    return out


def check_groups(features: Sequence[FeatureSpec]) -> None:
    """Raise ``ValueError`` for a group name the head reserves or a group mixing sides (a
    group is per request or per target, not both)."""
    per: dict[str, bool] = {}
    for f in features:
        g = f.token_group
        if g in RESERVED_GROUPS:
            raise ValueError(f"feature {f.name!r}: group {g!r} is reserved ({RESERVED_GROUPS})")
        if per.setdefault(g, f.per_request) != f.per_request:
            raise ValueError(
                f"feature group {g!r} holds per-request and per-target features: a group is "
                "on one side (set 'group' in meta.json's features)"
            )


def _width(f: FeatureSpec, emb_dim: int) -> int:
    return 1 if f.kind == "dense" else emb_dim


class SideFeatures(nn.Module):
    """Pools and groups the side features of a batch (see the module doc).

    Args:
        features: the declared features the model reads (``meta.json``'s ``features``).
        emb_dim: the embedding width of the sparse features' tables.
    """

    def __init__(self, features: Sequence[FeatureSpec], emb_dim: int) -> None:
        super().__init__()
        check_groups(features)
        self.features = tuple(features)
        self.emb_dim = emb_dim
        self.request_feats = [f for f in self.features if f.per_request]
        self.candidate_feats = [f for f in self.features if not f.per_request]

    def _groups(self, feats: list[FeatureSpec]) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in feats:
            out[f.token_group] = out.get(f.token_group, 0) + _width(f, self.emb_dim)
        return out

    @property
    def user_widths(self) -> dict[str, int]:
        """Width of each user/context group, in first-declaration order."""
        return self._groups(self.request_feats)

    @property
    def candidate_widths(self) -> dict[str, int]:
        """Width of each candidate group, in first-declaration order."""
        return self._groups(self.candidate_feats)

    @property
    def sparse_keys(self) -> list[str]:
        """KJT keys of the sparse features (their tables' features)."""
        return [f.key for f in self.features if f.sparse]

    def _concat(self, parts: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {g: torch.cat(p, dim=-1) if len(p) > 1 else p[0] for g, p in parts.items()}

    def user(self, emb: dict[str, JaggedTensor], dense: torch.Tensor) -> dict[str, torch.Tensor]:
        """User/context groups ``{group: [B, w]}`` (``dense [B, n]``: the batch's ``dense``)."""
        parts: dict[str, list[torch.Tensor]] = {}
        d = 0
        for f in self.request_feats:
            if f.kind == "dense":
                v = dense[:, d : d + 1]
                d += 1
            elif f.kind == "id":
                v = emb[f.key].values()
            else:
                jt = emb[f.key]
                v = segment_pool(jt.values(), jt.lengths(), f.pooling)
            parts.setdefault(f.token_group, []).append(v)
        return self._concat(parts)

    def candidate(
        self, emb: dict[str, JaggedTensor], tgt_dense: torch.Tensor, tgt_bags: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Candidate groups ``{group: [N, w]}`` (``tgt_dense [N, n]``, ``tgt_bags [N, m]``:
        the batch's)."""
        parts: dict[str, list[torch.Tensor]] = {}
        d = b = 0
        for f in self.candidate_feats:
            if f.kind == "dense":
                v = tgt_dense[:, d : d + 1]
                d += 1
            elif f.kind == "id":
                v = emb[f.key].values()
            else:
                v = segment_pool(emb[f.key].values(), tgt_bags[:, b], f.pooling)
                b += 1
            parts.setdefault(f.token_group, []).append(v)
        return self._concat(parts)
