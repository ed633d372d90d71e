"""`LongSeqModel`: EmbeddingCollection -> tokens -> tower -> per-task heads (a plain nn.Module).

``forward(batch)`` is one embedding lookup followed by `SequenceInteraction` on the looked-up
jagged tensors. Keeping the top-level forward that small keeps it fx-traceable for TorchRec's
pipelines (the interaction is a leaf in their tracer). This module imports nothing distributed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from longseq.data.batch import RequestBatch
from longseq.model.baselines import (
    DINConfig,
    DINTower,
    MeanPoolingConfig,
    MeanPoolingTower,
    SIMConfig,
    SIMTower,
    TransformerConfig,
    TransformerTower,
)
from longseq.model.embeddings import TableSizes, build_embedding_collection
from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.stca import STCAConfig, STCATower
from longseq.model.tokens import Tokenizer
from longseq.model.tower import ID_FEATURES, SequenceTower

#: the id features the match bias compares, in the order of `longseq.model.match`
HIST_ID_KEYS = tuple(f"hist_{f}" for f in ID_FEATURES)
TGT_ID_KEYS = tuple(f"tgt_{f}" for f in ID_FEATURES)

#: STCA settings on by default in a model (docs/results.md, "Make it long"): the id-match bias and
#: the count channel. ``STCAConfig()`` alone stays the paper's tower.
RECIPE = {"match_bias": True, "count_channel": True}


@dataclass(frozen=True)
class Tower:
    """A sequence tower as `TOWERS` registers it.

    Attributes:
        module: the `longseq.model.tower.SequenceTower` subclass, built as ``module(config)``
            (``encode_user`` / ``score``; its ``id_features`` and ``layout`` say what the model
            feeds it).
        default: its config dataclass, or a function returning its default config. The
            config has ``d_model`` and ``validate(prefix)``.
    """

    module: type[SequenceTower]
    default: Callable[[], Any]

    def __post_init__(self) -> None:
        if not issubclass(self.module, SequenceTower):
            raise TypeError(f"{self.module.__name__} must subclass SequenceTower")

    @property
    def config_type(self) -> type:
        """The config dataclass."""
        return self.default if isinstance(self.default, type) else type(self.default())


#: ``model.tower`` -> `Tower`: the one registration of a tower. `ModelConfig` gets a section of
#: the same name (``model.<name>.*``) from it.
#:
#: How to add one: write its module (pattern: ``longseq/model/baselines/pooling.py``: a config
#: dataclass with ``d_model`` and ``validate(prefix)``, and a `SequenceTower` subclass), then add
#: one entry here. ``model.tower=<name>`` and its ``model.<name>.*`` options then exist
#: (docs/model.md, "The tower protocol").
TOWERS: dict[str, Tower] = {
    "stca": Tower(STCATower, lambda: STCAConfig(**RECIPE)),
    "pooling": Tower(MeanPoolingTower, MeanPoolingConfig),
    "din": Tower(DINTower, DINConfig),
    "transformer": Tower(TransformerTower, TransformerConfig),
    "sim": Tower(SIMTower, SIMConfig),
}


@dataclass
class ModelBase:
    """Model hyper-parameters (`ModelConfig` adds one section per tower of `TOWERS`).

    Attributes:
        embedding_dim: width of every embedding table (EmbeddingCollection needs one width).
        embedding_init_std: std of the normal initialisation of the tables. Too small (e.g.
            0.02) and the ids' signal drowns under the position encoding in the fused tokens.
        pos_dim: width of the log-position encoding.
        tower: which sequence tower: ``stca`` (default), or a baseline under the same interface:
            ``pooling`` (mean pooling), ``din`` (DIN; ``din.last_n=50`` for DIN over the last 50
            events), ``transformer`` (quadratic self-attention + target readout), ``sim`` (SIM
            hard search: the target's category, most recent ``sim.top_k``, then attention).
        stca / pooling / din / transformer / sim: each tower's config; the selected one's
            ``d_model`` is the token width. ``stca`` defaults to the paper's tower plus
            `RECIPE` (id-match bias and count channel), which long histories need.
        head_hidden: hidden widths of the per-task MLP head over ``[z | x_t]``.
        loss_weighting: ``impression`` (mean over targets: the pointwise objective exactly) or
            ``request`` (mean over requests of the mean over their targets, the paper's formula).
    """

    embedding_dim: int = 32
    embedding_init_std: float = 0.5
    pos_dim: int = 16
    tower: str = "stca"
    head_hidden: list[int] = field(default_factory=lambda: [128, 64])
    loss_weighting: str = "impression"

    def validate(self, prefix: str = "model") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.loss_weighting not in ("impression", "request"):
            raise ValueError(f"{prefix}.loss_weighting must be impression|request")
        if self.pos_dim < 2 or self.pos_dim % 2:
            raise ValueError(f"{prefix}.pos_dim must be even and >= 2, got {self.pos_dim}")
        if self.embedding_dim < 1:
            raise ValueError(f"{prefix}.embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.tower not in TOWERS:
            raise ValueError(f"{prefix}.tower={self.tower!r}: choose one of {sorted(TOWERS)}")
        self.tower_config.validate(f"{prefix}.{self.tower}")

    @property
    def tower_config(self):  # noqa: ANN201 - one of the tower config dataclasses
        """The config of the selected tower."""
        return getattr(self, self.tower)


def _with_towers() -> type[ModelBase]:
    """`ModelBase` plus a section per `TOWERS` entry (``stca: STCAConfig`` ...)."""
    sections = [(n, t.config_type, field(default_factory=t.default)) for n, t in TOWERS.items()]
    cls = make_dataclass("ModelConfig", sections, bases=(ModelBase,))
    cls.__module__ = __name__
    cls.__doc__ = ModelBase.__doc__
    return cls


#: the model's typed config: `ModelBase` + one section per registered tower
ModelConfig = _with_towers()


#: STCA switches added after the first checkpoints were written: absent from a checkpoint's model
#: config means off (that checkpoint holds the paper's tower), not today's default.
ADDED_STCA_SWITCHES = ("match_bias", "position_bias", "count_channel")


def complete_saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``model`` config with the STCA switches it predates set to off."""
    out = copy.deepcopy(dict(saved))
    stca = dict(out.get("stca") or {})
    for key in ADDED_STCA_SWITCHES:
        stca.setdefault(key, False)
    out["stca"] = stca
    return out


def model_config_from_saved(saved: dict[str, Any]) -> ModelConfig:
    """The `ModelConfig` a checkpoint was trained with (its ``longseq.json`` ``model`` entry)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), complete_saved_config(saved))
    return OmegaConf.to_object(merged)


class SequenceInteraction(nn.Module):
    """Everything after the lookup: tokens, STCA with request-level sharing, heads."""

    def __init__(self, cfg: ModelConfig, num_tasks: int) -> None:
        super().__init__()
        d = cfg.tower_config.d_model
        self.tokens = Tokenizer(cfg.embedding_dim, cfg.pos_dim, d)
        self.tower: SequenceTower = TOWERS[cfg.tower].module(cfg.tower_config)
        self.jagged = self.tower.layout == "jagged"
        #: the raw id features the tower compares (its ``id_features``)
        self.id_features = tuple(self.tower.id_features)
        layers: list[nn.Module] = []
        width = 2 * d
        for h in cfg.head_hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, num_tasks))
        self.head = nn.Sequential(*layers)

    def forward(
        self,
        emb: dict[str, JaggedTensor],
        num_targets: torch.Tensor,
        ids: KeyedJaggedTensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[N, num_tasks]`` for the ``N`` targets, in request order.

        ``ids``: the batch's id KJT, for towers with ``id_features`` (STCA's match bias, SIM).
        """
        lengths = emb["hist_item_id"].lengths()
        parts = [
            emb[k].values()
            for k in ("hist_item_id", "hist_category_id", "hist_action", "hist_dt_bucket")
        ]
        x = self.tokens.history(parts, lengths)  # [E, d], once per request
        xt = self.tokens.target(
            emb["tgt_item_id"].values(), emb["tgt_category_id"].values()
        )  # [N, d]
        hist_ids = tgt_ids = None
        if self.id_features:  # the tower's id features of events [E,F] and targets [N,F]
            if ids is None:
                raise ValueError(f"{type(self.tower).__name__} needs the batch's ids")
            hist_ids = torch.stack([ids[f"hist_{f}"].values() for f in self.id_features], -1)
            tgt_ids = torch.stack([ids[f"tgt_{f}"].values() for f in self.id_features], -1)
        if self.jagged:  # packed layout: no padding at all
            z = self.tower.forward_jagged(x, lengths, xt, num_targets, hist_ids, tgt_ids)
            return self.head(torch.cat([z, xt], dim=-1))
        max_len = max(int(lengths.max()) if lengths.numel() else 0, 1)
        max_t = max(int(num_targets.max()) if num_targets.numel() else 0, 1)
        hist = jagged_to_padded(x, lengths, max_len)
        hist_mask = torch.arange(max_len, device=x.device)[None, :] < lengths[:, None]
        tgt = jagged_to_padded(xt, num_targets, max_t)
        if self.id_features:
            out = self.tower(
                hist,
                hist_mask,
                tgt,
                jagged_to_padded(hist_ids, lengths, max_len),
                jagged_to_padded(tgt_ids, num_targets, max_t),
            )
        else:
            out = self.tower(hist, hist_mask, tgt)
        z = padded_to_jagged(out, num_targets)  # [N, d]
        return self.head(torch.cat([z, xt], dim=-1))


class LongSeqModel(nn.Module):
    """The full ranking model over a `RequestBatch`.

    Args:
        cfg: model hyper-parameters.
        sizes: embedding vocabulary sizes (from the data set's ``meta.json``).
        tasks: label tasks, in the order of the logit columns.
        device: ``"meta"`` defers table allocation to TorchRec sharding.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        sizes: TableSizes,
        tasks: list[str],
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg, self.tasks = cfg, list(tasks)
        self.ec = build_embedding_collection(
            sizes, cfg.embedding_dim, device, cfg.embedding_init_std
        )
        self.interaction = SequenceInteraction(cfg, len(tasks))

    def forward(self, batch: RequestBatch) -> torch.Tensor:
        """Logits ``[N, num_tasks]``."""
        ids = batch.sparse if self.interaction.id_features else None
        return self.interaction(self.ec(batch.sparse), batch.num_targets, ids)

    def loss(self, logits: torch.Tensor, batch: RequestBatch) -> torch.Tensor:
        """BCE over tasks, weighted per impression or per request (``cfg.loss_weighting``)."""
        per = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none").mean(1)
        if self.cfg.loss_weighting == "impression":
            return per.mean()
        req = torch.repeat_interleave(
            torch.arange(batch.num_targets.numel(), device=per.device), batch.num_targets
        )
        per_req = torch.zeros(batch.num_targets.numel(), device=per.device).index_add(0, req, per)
        return (per_req / batch.num_targets.clamp(min=1)).mean()
