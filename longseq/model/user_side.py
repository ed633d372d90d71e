"""The model split into its user side (once per request) and its candidate side (per target),
called on a whole `LongSeqModel`: what `longseq.serve.Scorer` uses.

Each function is one call of the model's `SequenceInteraction` (`longseq.model.interaction`),
which owns the split: `encode_users` -> a `UserSide` (the tower's state; it does not depend on
the targets), `score_targets` -> logits. ``score_targets(encode_users(...), ...)`` gives
`LongSeqModel.forward`'s logits (every tower, both layouts; tests/serve/test_user_side.py).
`lookup` is the one EmbeddingCollection call of ``forward``; `history_tokens` /
`target_tokens` are the tokenizer halves. Pure model code: nothing distributed.
"""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from longseq.data.batch import RequestBatch
from longseq.model.interaction import UserSide
from longseq.model.model import LongSeqModel

__all__ = [
    "UserSide",
    "encode_users",
    "history_tokens",
    "lookup",
    "packed_kernel",
    "score_targets",
    "split_logits",
    "target_features",
    "target_tokens",
    "user_features",
]


def lookup(model: LongSeqModel, batch: RequestBatch) -> dict[str, JaggedTensor]:
    """The EmbeddingCollection lookup of every history and target key (``forward``'s one call)."""
    return model.ec(batch.sparse)


def history_tokens(
    model: LongSeqModel, emb: dict[str, JaggedTensor], ids: KeyedJaggedTensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """History tokens ``x [E, d]``, lengths ``[B]`` and the tower's event ids ``[E, F]``."""
    return model.interaction.history_tokens(emb, ids)


def target_tokens(
    model: LongSeqModel, emb: dict[str, JaggedTensor], ids: KeyedJaggedTensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Target tokens ``x_t [N, d]`` and the tower's target ids ``[N, F]``."""
    return model.interaction.target_tokens(emb, ids)


def target_features(
    model: LongSeqModel,
    emb: dict[str, JaggedTensor],
    tgt_dense: torch.Tensor | None = None,
    tgt_bags: torch.Tensor | None = None,
) -> dict[str, torch.Tensor] | None:
    """The head's candidate-side features ``{name: [N, w]}`` (RankMixer's item and category;
    the candidate feature groups), or None (`SequenceInteraction.target_features`)."""
    return model.interaction.target_features(emb, tgt_dense, tgt_bags)


def user_features(
    model: LongSeqModel, emb: dict[str, JaggedTensor], dense: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The requests' user/context feature groups ``{group: [B, w]}``
    (`SequenceInteraction.user_features`; empty without such features)."""
    return model.interaction.user_features(emb, dense)


def encode_users(
    model: LongSeqModel,
    x: torch.Tensor,
    lengths: torch.Tensor,
    hist_ids: torch.Tensor | None = None,
    packed: bool = False,
    features: dict[str, torch.Tensor] | None = None,
) -> UserSide:
    """History tokens ``x [E, d]`` of ``B = len(lengths)`` requests -> their `UserSide`
    (`SequenceInteraction.encode_users`; ``packed``: the packed state whatever the model's
    layout, see `packed_kernel`; ``features``: their `user_features`)."""
    return model.interaction.encode_users(x, lengths, hist_ids, packed, features)


def score_targets(
    model: LongSeqModel,
    user: UserSide,
    xt: torch.Tensor,
    num_targets: torch.Tensor,
    tgt_ids: torch.Tensor | None = None,
    kernel: str | None = None,
    feats: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Target tokens ``x_t [N, d]`` (``num_targets [B]`` per request of ``user``) -> logits
    ``[N, tasks]`` (`SequenceInteraction.score_targets`; ``feats``: the head's
    `target_features`)."""
    return model.interaction.score_targets(user, xt, num_targets, tgt_ids, kernel, feats)


def packed_kernel(model: LongSeqModel) -> str:
    """The kernel the model's tower scores a packed batch with (its ``packed_kernel``: ``flex``
    for STCA), else a ``ValueError`` naming the tower."""
    tower = model.interaction.tower
    if tower.packed_kernel is None:
        raise ValueError(
            "packed scoring needs a tower with a packed kernel (as STCA's flex); this model's "
            f"tower is {type(tower).__name__} (model.tower={model.cfg.tower}): score it with "
            "packed=false"
        )
    return tower.packed_kernel


def split_logits(model: LongSeqModel, batch: RequestBatch, packed: bool = False) -> torch.Tensor:
    """``forward(batch)``'s logits computed as ``score_targets(encode_users(...))``.

    ``packed``: the whole batch as one packed batch scored with the tower's `packed_kernel`
    (STCA: each layer's attention one FlexAttention call), whatever layout the model was trained
    in."""
    kernel = packed_kernel(model) if packed else None
    emb = lookup(model, batch)
    x, lengths, hist_ids = history_tokens(model, emb, batch.sparse)
    xt, tgt_ids = target_tokens(model, emb, batch.sparse)
    ufeats = user_features(model, emb, batch.dense)
    user = encode_users(model, x, lengths, hist_ids, packed=packed, features=ufeats)
    feats = target_features(model, emb, batch.tgt_dense, batch.tgt_bags)
    return score_targets(model, user, xt, batch.num_targets, tgt_ids, kernel, feats)
