"""The model split into its user side (once per request) and its candidate side (per target).

`LongSeqModel.forward` is ``lookup -> tokens -> tower -> heads`` over a whole `RequestBatch`.
Serving runs the same function in two halves (docs/serving.md):

* `encode_users`: the history's tokens (from the EmbeddingCollection lookup) through the tower's
  ``encode_user`` -> a `UserSide` (the tower's `UserState` and the history lengths). Nothing in
  it depends on the targets, so one `UserSide` scores any candidate set, any number of times.
* `score_targets`: target tokens through the tower's ``score`` against a `UserSide`, then the
  per-task heads over ``[z | x_t]`` -> logits ``[N, tasks]``.

``score_targets(encode_users(...), ...)`` gives `LongSeqModel.forward`'s logits (padded and
jagged layouts; tests/serve/test_user_side.py). `lookup` is the one EmbeddingCollection call of
``forward``; `history_tokens` / `target_tokens` are the tokenizer halves. Pure model code:
nothing distributed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from longseq.data.batch import HISTORY_KEYS, TARGET_KEYS, RequestBatch
from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.model import LongSeqModel
from longseq.model.stca import STCATower
from longseq.model.tower import UserState


@dataclass
class UserSide:
    """The user side of ``B`` requests: what `score_targets` needs besides the targets.

    Attributes:
        state: the tower's `UserState` (leading dim ``B`` padded, ``E`` events jagged).
        hist_lengths: ``[B]`` history events served per request.
        jagged: the state is in the packed layout (``encode_user_jagged``).
    """

    state: UserState
    hist_lengths: torch.Tensor
    jagged: bool = False

    @property
    def batch_size(self) -> int:
        """Number of requests ``B``."""
        return int(self.hist_lengths.numel())

    def nbytes(self) -> int:
        """Bytes held by the tensors of the state (what a cache of states pays for it)."""
        return _nbytes(self.state) + self.hist_lengths.nbytes


def _nbytes(obj: object, seen: set[int] | None = None) -> int:
    """Sum of ``nbytes`` of the distinct tensors in ``obj`` (dataclasses, lists, tuples)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr() if obj.numel() else id(obj)
        if key in seen:  # e.g. STCA's shared history FFN: one tensor, several layers
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, list | tuple):
        return sum(_nbytes(x, seen) for x in obj)
    if hasattr(obj, "__dataclass_fields__"):
        return sum(_nbytes(getattr(obj, f.name), seen) for f in fields(obj))
    return 0


def lookup(model: LongSeqModel, batch: RequestBatch) -> dict[str, JaggedTensor]:
    """The EmbeddingCollection lookup of every history and target key (``forward``'s one call)."""
    return model.ec(batch.sparse)


def _ids(model: LongSeqModel, ids: KeyedJaggedTensor, side: str) -> torch.Tensor | None:
    """``[E or N, F]`` raw ids of the tower's ``id_features`` (None: the tower needs none)."""
    feats = model.interaction.id_features
    if not feats:
        return None
    return torch.stack([ids[f"{side}_{f}"].values() for f in feats], -1)


def history_tokens(
    model: LongSeqModel, emb: dict[str, JaggedTensor], ids: KeyedJaggedTensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """History tokens ``x [E, d]``, lengths ``[B]`` and the tower's event ids ``[E, F]``."""
    lengths = emb["hist_item_id"].lengths()
    x = model.interaction.tokens.history([emb[k].values() for k in HISTORY_KEYS], lengths)
    return x, lengths, _ids(model, ids, "hist")


def target_tokens(
    model: LongSeqModel, emb: dict[str, JaggedTensor], ids: KeyedJaggedTensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Target tokens ``x_t [N, d]`` and the tower's target ids ``[N, F]``."""
    xt = model.interaction.tokens.target(*(emb[k].values() for k in TARGET_KEYS))
    return xt, _ids(model, ids, "tgt")


def encode_users(
    model: LongSeqModel,
    x: torch.Tensor,
    lengths: torch.Tensor,
    hist_ids: torch.Tensor | None = None,
    packed: bool = False,
) -> UserSide:
    """History tokens ``x [E, d]`` of ``B = len(lengths)`` requests -> their `UserSide`.

    ``packed``: the packed (jagged) state whatever the model's layout (`packed_kernel`)."""
    tower = model.interaction.tower
    if model.interaction.jagged or packed:
        return UserSide(tower.encode_user_jagged(x, lengths, hist_ids), lengths, jagged=True)
    max_len = max(int(lengths.max()) if lengths.numel() else 0, 1)
    hist = jagged_to_padded(x, lengths, max_len)
    mask = torch.arange(max_len, device=x.device)[None, :] < lengths[:, None]
    pids = None if hist_ids is None else jagged_to_padded(hist_ids, lengths, max_len)
    return UserSide(tower.encode_user(hist, mask, pids), lengths)


def score_targets(
    model: LongSeqModel,
    user: UserSide,
    xt: torch.Tensor,
    num_targets: torch.Tensor,
    tgt_ids: torch.Tensor | None = None,
    kernel: str | None = None,
) -> torch.Tensor:
    """Target tokens ``x_t [N, d]`` (``num_targets [B]`` per request of ``user``) -> logits
    ``[N, tasks]``, in request order. ``kernel``: the packed attention kernel of a jagged
    ``user`` (``flex``/``pairs``; default: the model's)."""
    if num_targets.numel() != user.batch_size:
        raise ValueError(
            f"num_targets has {num_targets.numel()} requests, the user side {user.batch_size}"
        )
    inter = model.interaction
    if user.jagged:
        kw = {"kernel": kernel} if kernel else {}
        z = inter.tower.score_jagged(user.state, xt, num_targets, tgt_ids, **kw)
    else:
        max_t = max(int(num_targets.max()) if num_targets.numel() else 0, 1)
        tgt = jagged_to_padded(xt, num_targets, max_t)
        pids = None if tgt_ids is None else jagged_to_padded(tgt_ids, num_targets, max_t)
        z = padded_to_jagged(inter.tower.score(user.state, tgt, pids), num_targets)
    return inter.head(torch.cat([z, xt], dim=-1))


def packed_kernel(model: LongSeqModel) -> str:
    """``flex`` if the model's tower can score a packed batch through FlexAttention, else a
    ``ValueError`` naming the tower (only STCA's attention has the packed kernel)."""
    tower = model.interaction.tower
    if not isinstance(tower, STCATower):
        raise ValueError(
            f"packed scoring (FlexAttention) is STCA's; this model's tower is "
            f"{type(tower).__name__}: score it with packed=false"
        )
    return "flex"


def split_logits(model: LongSeqModel, batch: RequestBatch, packed: bool = False) -> torch.Tensor:
    """``forward(batch)``'s logits computed as ``score_targets(encode_users(...))``.

    ``packed``: the whole batch as one packed batch, each layer's attention one FlexAttention
    call (`longseq.model.flex`), whatever layout the model was trained in."""
    kernel = packed_kernel(model) if packed else None
    emb = lookup(model, batch)
    x, lengths, hist_ids = history_tokens(model, emb, batch.sparse)
    xt, tgt_ids = target_tokens(model, emb, batch.sparse)
    user = encode_users(model, x, lengths, hist_ids, packed=packed)
    return score_targets(model, user, xt, batch.num_targets, tgt_ids, kernel)
