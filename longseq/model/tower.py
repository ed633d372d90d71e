"""The tower protocol: a sequence tower is a per-request user state plus a per-target score.

Every tower (STCA and the baselines) is a `SequenceTower`:

* ``encode_user(hist, hist_mask, hist_ids) -> UserState``: everything that depends on the history
  only (per request, target-independent). Serving computes it once per request and keeps it.
* ``score(state, tgt, tgt_ids) -> z [B, T, d]``: the per-target part, against a given state; any
  number of candidates, in any number of chunks, against one state.
* ``forward(hist, hist_mask, tgt, hist_ids, tgt_ids) = score(encode_user(...), ...)``: training.

What the model must feed a tower is declared, not special-cased: ``id_features`` names the raw id
features (`ID_FEATURES`) the tower compares between events and targets (passed as ``hist_ids
[B, L, F]`` / ``tgt_ids [B, T, F]`` in that order), and ``layout`` says whether it takes padded
(``[B, L, d]`` + mask) or packed (``[E, d]`` + lengths, ``*_jagged`` methods) inputs.
``checkpoint_layers()`` lists the per-layer modules activation checkpointing recomputes and
``shard_layers()`` the ones FSDP2 makes units of their own, so `longseq.parallel` needs no
attribute names. (Not ``layers()``: `TransformerTower.layers` is its encoder, and renaming it
would rename its parameters.)

A new tower is one file (a config dataclass with ``d_model`` and ``validate(prefix)``, and a
`SequenceTower` subclass) plus one entry in `longseq.model.model.TOWERS` (docs/model.md).
Pure torch.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

#: raw id features a tower may compare (``id_features``); the model reads ``hist_<f>`` and
#: ``tgt_<f>`` from the batch's id KJT
ID_FEATURES = ("item_id", "category_id")

#: input layouts: ``padded`` (``[B, L, d]`` + bool mask) and ``jagged`` (``[E, d]`` + lengths)
LAYOUTS = ("padded", "jagged")


@dataclass
class UserState:
    """What a tower precomputes per request (base class; each tower subclasses it).

    Holds tensors whose leading dimension is the request ``B`` (padded) or the event ``E``
    (jagged); nothing in it depends on the targets, so one state scores any candidate set.
    """


class SequenceTower(nn.Module, metaclass=ABCMeta):
    """Base of every sequence tower (see the module doc for the protocol).

    Attributes:
        id_features: the `ID_FEATURES` the tower needs, in the order of the last dim of
            ``hist_ids`` / ``tgt_ids`` (empty: tokens only).
        layout: ``padded``, or ``jagged`` for a tower whose model path is the packed one
            (``forward_jagged``).
    """

    id_features: tuple[str, ...] = ()
    layout: str = "padded"

    @abstractmethod
    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> UserState:
        """``hist [B,L,d]``, ``hist_mask [B,L]`` bool, ``hist_ids [B,L,F]`` -> the user state."""

    @abstractmethod
    def score(
        self, state: UserState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
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

    def encode_user_jagged(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
    ) -> UserState:
        """Packed layout: ``hist [E,d]``, ``hist_lengths [B]``, ``hist_ids [E,F]`` -> state."""
        raise NotImplementedError(f"{type(self).__name__} has no jagged layout")

    def score_jagged(
        self,
        state: UserState,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        tgt_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed layout: ``tgt [N,d]`` (``num_targets [B]``, ``tgt_ids [N,F]``) -> ``[N,d]``."""
        raise NotImplementedError(f"{type(self).__name__} has no jagged layout")

    def forward_jagged(
        self,
        hist: torch.Tensor,
        hist_lengths: torch.Tensor,
        tgt: torch.Tensor,
        num_targets: torch.Tensor,
        hist_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed layout: ``score_jagged(encode_user_jagged(...), ...)`` -> ``z [N,d]``."""
        state = self.encode_user_jagged(hist, hist_lengths, hist_ids)
        return self.score_jagged(state, tgt, num_targets, tgt_ids)

    def checkpoint_layers(self) -> list[nn.Module]:
        """Per-layer modules that activation checkpointing recomputes (none by default)."""
        return []

    def shard_layers(self) -> list[nn.Module]:
        """Per-layer modules that FSDP2 makes units of their own (default: `checkpoint_layers`)."""
        return self.checkpoint_layers()
