"""The tower protocol: a sequence tower is a per-request user state plus a per-target score.

Every tower (STCA and the baselines) is a `SequenceTower`:

* ``encode_user(hist, hist_mask, hist_ids) -> UserState``: everything that depends on the history
  only (per request, target-independent). Serving computes it once per request and keeps it.
* ``score(state, tgt, tgt_ids) -> z [B, T, d]``: the per-target part, against a given state; any
  number of candidates, in any number of chunks, against one state.
* ``forward(hist, hist_mask, tgt, hist_ids, tgt_ids) = score(encode_user(...), ...)``: training.

What callers need from a tower is declared by the tower, never asked of its class:

* ``id_features`` names the raw id features (`ID_FEATURES`) the tower compares between events and
  targets (passed as ``hist_ids [B, L, F]`` / ``tgt_ids [B, T, F]`` in that order; `ids` stacks
  them), and ``layout`` says whether it takes padded (``[B, L, d]`` + mask) or packed
  (``[E, d]`` + lengths, the ``*_packed`` methods) inputs.
* ``packed_kernel`` is the kernel a packed batch is scored with (``score_packed(kernel=...)``),
  None for a tower without a packed path; `padded_equivalent` is the same function in the padded
  layout (what an exported graph traces).
* `state_names` names the tensors of its user state for an exported graph, `export_info` adds
  what an export manifest records about it.
* ``checkpoint_layers()`` lists the per-layer modules activation checkpointing recomputes and
  ``shard_layers()`` the ones FSDP2 makes units of their own, so `longseq.parallel` needs no
  attribute names. (Not ``layers()``: `TransformerTower.layers` is its encoder, and renaming it
  would rename its parameters.)

A new tower is one file (a config dataclass with ``d_model`` and ``validate(prefix)``, and a
`SequenceTower` subclass) plus one entry in `longseq.model.model.TOWERS` (docs/model.md).
Pure torch.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from longseq.model.ops.kernels import LAYOUTS

__all__ = ["ID_FEATURES", "LAYOUTS", "SequenceTower", "UserState"]

#: raw id features a tower may compare (``id_features``); the model reads ``hist_<f>`` and
#: ``tgt_<f>`` from the batch's id KJT
ID_FEATURES = ("item_id", "category_id")


@dataclass
class UserState:
    """What a tower precomputes per request (base class; each tower subclasses it).

    Holds tensors whose leading dimension is the request ``B`` (padded) or the event ``E``
    (packed); nothing in it depends on the targets, so one state scores any candidate set.
    """


#: the state type a tower's ``encode_user`` returns and its ``score`` takes
S = TypeVar("S", bound=UserState)


class SequenceTower(nn.Module, Generic[S], metaclass=ABCMeta):
    """Base of every sequence tower (see the module doc for the protocol), generic over its
    `UserState` subclass ``S``.

    Attributes:
        id_features: the `ID_FEATURES` the tower needs, in the order of the last dim of
            ``hist_ids`` / ``tgt_ids`` (empty: tokens only).
        event_features: raw history-only features the tower reads besides its tokens
            (``dt_bucket``: STCA's ``time_bias``), appended after the ``id_features`` in the
            last dim of ``hist_ids`` only.
        layout: ``padded``, or ``packed`` for a tower whose model path is the packed one
            (``forward_packed``).
        packed_kernel: the attention kernel a packed batch is scored with when a caller asks
            for packed scoring (``score_packed(..., kernel=packed_kernel)``); None: the tower
            has no packed path.
    """

    id_features: tuple[str, ...] = ()
    event_features: tuple[str, ...] = ()
    layout: str = "padded"
    packed_kernel: str | None = None
    #: a training-only auxiliary loss the last forward computed (`pop_aux_loss`)
    _aux_loss: torch.Tensor | None = None

    def pop_aux_loss(self) -> torch.Tensor | None:
        """The auxiliary loss of the last training forward (already weighted; None: none), then
        forgets it: the training step adds it to the model's loss once (`LongSeqModel.aux_loss`).
        """
        aux, self._aux_loss = self._aux_loss, None
        return aux

    def ids(self, by_feature: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The raw ids this tower compares, ``by_feature[f]`` for each of its ``id_features``
        stacked on a new last dim (``[..., F]``), or None when it compares none."""
        if not self.id_features:
            return None
        return torch.stack([by_feature[f] for f in self.id_features], -1)

    def history_ids(self, by_feature: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The history side's raw inputs: the `ids` of its ``id_features`` followed by its
        ``event_features``, stacked on a new last dim (``[..., F + E]``), or None."""
        cols = [by_feature[f] for f in (*self.id_features, *self.event_features)]
        return torch.stack(cols, -1) if cols else None

    @abstractmethod
    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> S:
        """``hist [B,L,d]``, ``hist_mask [B,L]`` bool, ``hist_ids [B,L,F]`` -> the user state."""

    @abstractmethod
    def score(
        self, state: S, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]`` (``tgt_ids [B,T,F]``) against ``state`` -> ``z [B,T,d]``."""

    def forward(
        self,
        hist: torch.Tensor,
        hist_mask: torch.Tensor,
        tgt: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``score(encode_user(hist, hist_mask, hist_ids), tgt, tgt_ids)`` -> ``z [B,T,d]``."""
        return self.score(self.encode_user(hist, hist_mask, hist_ids), tgt, tgt_ids)

    def encode_user_packed(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
    ) -> S:
        """Packed layout: ``hist [E,d]``, ``hist_lengths [B]``, ``hist_ids [E,F]`` -> state."""
        raise NotImplementedError(f"{type(self).__name__} has no packed layout")

    def score_packed(
        self,
        state: S,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        tgt_ids: torch.Tensor | None = None,
        kernel: str | None = None,
    ) -> torch.Tensor:
        """Packed layout: ``tgt [N,d]`` (``num_targets [B]``, ``tgt_ids [N,F]``) -> ``[N,d]``;
        ``kernel``: a packed attention kernel (default: the tower's)."""
        raise NotImplementedError(f"{type(self).__name__} has no packed layout")

    def forward_packed(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed layout: ``score_packed(encode_user_packed(...), ...)`` -> ``z [N,d]``."""
        state = self.encode_user_packed(hist, hist_lengths, hist_ids)
        return self.score_packed(state, tgt, num_targets, tgt_ids)

    def padded_equivalent(self) -> SequenceTower:
        """The same function in the padded layout, with the same weights: this tower itself
        when its layout is padded (what `longseq.serve.export` traces)."""
        if self.layout != "padded":
            raise NotImplementedError(f"{type(self).__name__} has no padded equivalent")
        return self

    def state_names(self) -> list[str] | None:
        """Names of the tensors of this tower's padded user state in flat order
        (`longseq.serve.flat_state.flatten_state`), for an exported graph's inputs; None: the
        generic names of the state's fields."""
        return None

    def export_info(self) -> dict[str, Any]:
        """What an export manifest records about this tower besides its name and width."""
        return {}

    def checkpoint_layers(self) -> list[nn.Module]:
        """Per-layer modules that activation checkpointing recomputes (none by default)."""
        return []

    def shard_layers(self) -> list[nn.Module]:
        """Per-layer modules that FSDP2 makes units of their own (default: `checkpoint_layers`)."""
        return self.checkpoint_layers()
