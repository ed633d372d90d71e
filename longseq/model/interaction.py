"""`SequenceInteraction`: looked-up embeddings -> tokens -> sequence tower -> per-task heads.

Everything after the embedding lookup, written once for training and serving:

* `SequenceInteraction.history_tokens` / `target_tokens`: the tokenizer halves, and the raw ids
  the tower compares (its ``id_features``, stacked by `SequenceTower.ids`).
* `SequenceInteraction.encode_users`: history tokens through the tower's ``encode_user`` -> a
  `UserSide` (the tower's `UserState` and the history lengths). Nothing in it depends on the
  targets, so one `UserSide` scores any candidate set, any number of times.
* `SequenceInteraction.score_targets`: target tokens through the tower's ``score`` against a
  `UserSide`, then the head -> logits ``[N, tasks]``. The head (``model.head``): ``mlp``, an
  MLP over ``[z | x_t]``; or ``rankmixer`` (`longseq.model.rankmixer_head`), RankMixer over
  the tokens of `longseq.model.model_config.head_token_widths`: its user-side tokens are
  computed in ``encode_users`` (once per request, kept in the `UserSide`), its candidate-side
  ones from `target_features`.
* Side features (`longseq.model.features.SideFeatures`, the data set's declared user, context
  and candidate features): the user/context groups are pooled once per request in
  ``encode_users`` (kept in the `UserSide`, broadcast to the request's targets by the head),
  the candidate groups per target by `target_features`. The MLP head concatenates them to
  ``[z | x_t]``; the RankMixer head makes a token of each group.
* ``forward``: the same path in one call. It runs the tower's ``forward`` rather than
  ``score(encode_user(...))``: the tower protocol makes them the same function
  (tests/model/test_tower_protocol.py), and a tower's ``forward`` calls each layer as ONE module
  (STCA: history projection and attention together), which activation checkpointing and FSDP2
  hook into. tests/serve/test_user_side.py checks ``score_targets(encode_users(...)) ==
  forward`` for every tower.

The layout (padded or packed) is the tower's (``tower.layout``); a packed `UserSide` is also
built on request for a padded tower that has a packed path (``packed_kernel``). Pure model code:
nothing distributed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from longseq.data.batch import HISTORY_KEYS, TARGET_KEYS
from longseq.data.features import FeatureSpec
from longseq.model.features import SideFeatures
from longseq.model.layers import jagged_to_padded, maybe_dropout, padded_to_jagged
from longseq.model.model_config import head_token_widths
from longseq.model.rankmixer_head import RankMixerHead
from longseq.model.tokens import Tokenizer
from longseq.model.tower import SequenceTower, UserState

if TYPE_CHECKING:
    from longseq.model.model_config import ModelBase


def history_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of each request's history tokens: ``x [E, d]``, ``lengths [B]`` -> ``[B, d]``
    (zeros for a request with no history)."""
    row = torch.repeat_interleave(torch.arange(lengths.numel(), device=x.device), lengths)
    total = x.new_zeros(lengths.numel(), x.shape[-1]).index_add(0, row, x)
    return total / lengths.clamp(min=1).unsqueeze(-1).to(x.dtype)


def mlp_head(width: int, hidden: list[int], num_tasks: int, dropout: float = 0.0) -> nn.Sequential:
    """The MLP head (``model.head=mlp``): ``Linear + SiLU`` per hidden width (then dropout in
    training when ``dropout > 0``), then one logit per task."""
    layers: list[nn.Module] = []
    for h in hidden:  # dropout shares the activation's slot: the same parameter names either way
        act = nn.SiLU() if dropout == 0 else nn.Sequential(nn.SiLU(), maybe_dropout(dropout))
        layers += [nn.Linear(width, h), act]
        width = h
    layers.append(nn.Linear(width, num_tasks))
    return nn.Sequential(*layers)


@dataclass
class UserSide:
    """The user side of ``B`` requests: what `SequenceInteraction.score_targets` needs besides
    the targets.

    Attributes:
        state: the tower's `UserState` (leading dim ``B`` padded, ``E`` events packed).
        hist_lengths: ``[B]`` history events served per request.
        packed: the state is in the packed layout (``encode_user_packed``).
        head_tokens: ``[B, U, D]`` the head's user-side tokens (``model.head=rankmixer``), or
            None.
        features: ``[B, W]`` the user/context feature groups, concatenated, for the MLP head
            (None: no such features, or the RankMixer head, whose tokens hold them).
    """

    state: UserState
    hist_lengths: torch.Tensor
    packed: bool = False
    head_tokens: torch.Tensor | None = None
    features: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of requests ``B``."""
        return int(self.hist_lengths.numel())

    def nbytes(self) -> int:
        """Bytes held by the tensors of the state (what a cache of states pays for it)."""
        extra = _nbytes(self.head_tokens) + _nbytes(self.features)
        return _nbytes(self.state) + self.hist_lengths.nbytes + extra


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
    if is_dataclass(obj) and not isinstance(obj, type):
        return sum(_nbytes(getattr(obj, f.name), seen) for f in fields(obj))
    return 0


def _width(lengths: torch.Tensor) -> int:
    """The padded width of rows of ``lengths`` (at least 1)."""
    return max(int(lengths.max()) if lengths.numel() else 0, 1)


def _pad(x: torch.Tensor | None, lengths: torch.Tensor, width: int) -> torch.Tensor | None:
    return None if x is None else jagged_to_padded(x, lengths, width)


def _padded_history(x: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor | None):
    """Packed history tokens ``[E, d]`` (ids ``[E, F]``) -> ``[B, L, d]``, mask ``[B, L]``, ids."""
    width = _width(lengths)
    mask = torch.arange(width, device=x.device)[None, :] < lengths[:, None]
    return jagged_to_padded(x, lengths, width), mask, _pad(ids, lengths, width)


def _padded_targets(xt: torch.Tensor, num_targets: torch.Tensor, ids: torch.Tensor | None):
    """Packed target tokens ``[N, d]`` (ids ``[N, F]``) -> ``[B, T, d]`` and ids."""
    width = _width(num_targets)
    return jagged_to_padded(xt, num_targets, width), _pad(ids, num_targets, width)


class SequenceInteraction(nn.Module):
    """Tokens, the sequence tower with request-level sharing, and the per-task heads.

    Args:
        cfg: the model config (`longseq.model.model.ModelConfig`); its ``build_tower()`` makes
            the tower.
        num_tasks: logit columns.
        features: the data set's declared side features (read unless
            ``cfg.use_features=false``).
    """

    def __init__(
        self, cfg: ModelBase, num_tasks: int, features: Sequence[FeatureSpec] = ()
    ) -> None:
        super().__init__()
        d = cfg.tower_config.d_model
        time_in_tokens = not getattr(cfg.tower_config, "time_bias", False)
        self.tokens = Tokenizer(cfg.embedding_dim, cfg.pos_dim, d, time_in_tokens)
        self.tower: SequenceTower = cfg.build_tower()
        self.side = SideFeatures(features if cfg.use_features else (), cfg.embedding_dim)
        self.head_kind = cfg.head
        if cfg.head == "rankmixer":
            widths = head_token_widths(cfg, self.side.features)
            self.head: nn.Module = RankMixerHead(*widths, cfg.rankmixer, num_tasks)
        else:
            width = 2 * d + sum(self.side.user_widths.values())
            width += sum(self.side.candidate_widths.values())
            self.head = mlp_head(width, cfg.head_hidden, num_tasks, cfg.head_dropout)

    @property
    def id_features(self) -> tuple[str, ...]:
        """The raw id features the tower compares (its ``id_features``)."""
        return tuple(self.tower.id_features)

    @property
    def packed(self) -> bool:
        """Whether the tower's layout is the packed one."""
        return self.tower.layout == "packed"

    def _ids(self, ids: KeyedJaggedTensor | None, side: str) -> torch.Tensor | None:
        """``[E or N, F]`` raw ids of the tower's ``id_features``, on the history side followed
        by its ``event_features`` (None: it needs none)."""
        tower = self.tower
        feats = (*tower.id_features, *(tower.event_features if side == "hist" else ()))
        if not feats:
            return None
        if ids is None:
            raise ValueError(f"{type(tower).__name__} needs the batch's ids")
        by_feature = {f: ids[f"{side}_{f}"].values() for f in feats}
        return tower.history_ids(by_feature) if side == "hist" else tower.ids(by_feature)

    def history_tokens(
        self, emb: dict[str, JaggedTensor], ids: KeyedJaggedTensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """History tokens ``x [E, d]``, lengths ``[B]`` and the tower's event ids ``[E, F]``."""
        lengths = emb["hist_item_id"].lengths()
        x = self.tokens.history([emb[k].values() for k in HISTORY_KEYS], lengths)
        return x, lengths, self._ids(ids, "hist")

    def target_tokens(
        self, emb: dict[str, JaggedTensor], ids: KeyedJaggedTensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Target tokens ``x_t [N, d]`` and the tower's target ids ``[N, F]``."""
        xt = self.tokens.target(*(emb[k].values() for k in TARGET_KEYS))
        return xt, self._ids(ids, "tgt")

    def target_features(
        self,
        emb: dict[str, JaggedTensor],
        tgt_dense: torch.Tensor | None = None,
        tgt_bags: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor] | None:
        """The head's candidate-side features besides ``z`` (``{name: [N, w]}``: the RankMixer
        head's ``item`` and ``category``, then the candidate feature groups), or None for a
        head that needs none (``mlp`` without candidate features). ``tgt_dense`` /
        ``tgt_bags``: the batch's (needed with candidate features)."""
        out: dict[str, torch.Tensor] = {}
        if self.head_kind == "rankmixer":
            out = {"item": emb["tgt_item_id"].values(), "category": emb["tgt_category_id"].values()}
        if self.side.candidate_feats:
            if tgt_dense is None or tgt_bags is None:
                raise ValueError("the model reads candidate features: pass tgt_dense, tgt_bags")
            out.update(self.side.candidate(emb, tgt_dense, tgt_bags))
        return out if (out or self.head_kind == "rankmixer") else None

    def user_features(
        self, emb: dict[str, JaggedTensor], dense: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The user/context feature groups ``{group: [B, w]}`` of the requests (empty without
        such features); ``dense``: the batch's ``dense``."""
        if not self.side.request_feats:
            return {}
        if dense is None:
            raise ValueError("the model reads user/context features: pass the batch's dense")
        return self.side.user(emb, dense)

    @property
    def head_needs_history_mean(self) -> bool:
        """Whether the head's user side reads the history mean (RankMixer's history token)."""
        if self.head_kind != "rankmixer":
            return False
        return "history" in cast(RankMixerHead, self.head).user_features

    def head_user_inputs(
        self, hist_mean: torch.Tensor | None, feats: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The head's user-side tokens ``[B, U, D]`` (RankMixer, from ``hist_mean [B, d]`` when
        `head_needs_history_mean` and the `user_features`) or user feature vector ``[B, W]``
        (MLP); None where there is none. Once per request; a serving cache that keeps the
        history mean recomputes this part for a request's new user/context features."""
        feats = feats or {}
        if self.head_kind != "rankmixer":
            return None, (torch.cat(list(feats.values()), dim=-1) if feats else None)
        head = cast(RankMixerHead, self.head)
        extra: dict[str, torch.Tensor] = {}
        if self.head_needs_history_mean:
            if hist_mean is None:
                raise ValueError("the RankMixer head's history token needs the history mean")
            extra["history"] = hist_mean
        return head.user_tokens({**extra, **feats}), None

    def _user_extras(
        self, x: torch.Tensor, lengths: torch.Tensor, feats: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`head_user_inputs` of history tokens ``x [E, d]`` (``lengths [B]``)."""
        mean = history_mean(x, lengths) if self.head_needs_history_mean else None
        return self.head_user_inputs(mean, feats)

    def _logits(
        self,
        z: torch.Tensor,
        xt: torch.Tensor,
        feats: dict[str, torch.Tensor] | None,
        user: UserSide,
        num_targets: torch.Tensor,
    ) -> torch.Tensor:
        if self.head_kind == "mlp":
            parts = [z, xt]
            if user.features is not None:
                parts.append(user.features.repeat_interleave(num_targets, dim=0))
            if self.side.candidate_feats:
                if feats is None:
                    raise ValueError("candidate features: pass target_features(...) as feats")
                parts += list(feats.values())
            return self.head(torch.cat(parts, dim=-1))
        if feats is None:
            raise ValueError(
                "model.head=rankmixer scores targets from their features: pass "
                "target_features(emb) to score_targets"
            )
        return self.head({"z": z, **feats}, user.head_tokens, num_targets)

    def encode_users(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
        packed: bool = False,
        features: dict[str, torch.Tensor] | None = None,
    ) -> UserSide:
        """History tokens ``x [E, d]`` of ``B = len(lengths)`` requests -> their `UserSide`.

        ``packed``: the packed state whatever the tower's layout (a tower with a
        ``packed_kernel``). ``features``: the requests' `user_features`."""
        if self.side.request_feats and not features:
            raise ValueError("the model reads user/context features: pass user_features(...)")
        tokens, vec = self._user_extras(x, lengths, features)
        if self.packed or packed:
            state = self.tower.encode_user_packed(x, lengths, hist_ids)
            return UserSide(state, lengths, True, tokens, vec)
        state = self.tower.encode_user(*_padded_history(x, lengths, hist_ids))
        return UserSide(state, lengths, False, tokens, vec)

    def score_targets(
        self,
        user: UserSide,
        xt: torch.Tensor,
        num_targets: torch.Tensor,
        tgt_ids: torch.Tensor | None = None,
        kernel: str | None = None,
        feats: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Target tokens ``x_t [N, d]`` (``num_targets [B]`` per request of ``user``) -> logits
        ``[N, tasks]``, in request order. ``kernel``: the packed attention kernel of a packed
        ``user`` (default: the tower's). ``feats``: the head's `target_features` (needed by
        ``model.head=rankmixer``)."""
        if num_targets.numel() != user.batch_size:
            raise ValueError(
                f"num_targets has {num_targets.numel()} requests, the user side {user.batch_size}"
            )
        if user.packed:
            z = self.tower.score_packed(user.state, xt, num_targets, tgt_ids, kernel)
        else:
            tgt, tids = _padded_targets(xt, num_targets, tgt_ids)
            z = padded_to_jagged(self.tower.score(user.state, tgt, tids), num_targets)
        return self._logits(z, xt, feats, user, num_targets)

    def forward(
        self,
        emb: dict[str, JaggedTensor],
        num_targets: torch.Tensor,
        ids: KeyedJaggedTensor | None = None,
        dense: torch.Tensor | None = None,
        tgt_dense: torch.Tensor | None = None,
        tgt_bags: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[N, num_tasks]`` for the ``N`` targets, in request order: the function of
        ``score_targets(encode_users(...))`` (see the module doc).

        ``ids``: the batch's id KJT, for towers with ``id_features`` (STCA's match bias, SIM).
        ``dense`` / ``tgt_dense`` / ``tgt_bags``: the batch's side-feature tensors.
        """
        x, lengths, hist_ids = self.history_tokens(emb, ids)
        xt, tgt_ids = self.target_tokens(emb, ids)
        if self.packed:  # packed layout: no padding at all
            z = self.tower.forward_packed(x, lengths, xt, num_targets, hist_ids, tgt_ids)
        else:
            hist, mask, hid = _padded_history(x, lengths, hist_ids)
            tgt, tid = _padded_targets(xt, num_targets, tgt_ids)
            z = padded_to_jagged(self.tower(hist, mask, tgt, hid, tid), num_targets)
        tokens, vec = self._user_extras(x, lengths, self.user_features(emb, dense))
        user = UserSide(cast(UserState, None), lengths, False, tokens, vec)
        feats = self.target_features(emb, tgt_dense, tgt_bags)
        return self._logits(z, xt, feats, user, num_targets)
