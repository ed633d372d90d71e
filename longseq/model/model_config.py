"""`ModelConfig`: the model's typed config (one section per tower of
`longseq.model.towers.TOWERS`, the head's choice and its config), and the reading of a
checkpoint's saved model config in today's words (`model_config_from_saved`).

Plain config code: it builds no module beyond the tower `ModelBase.build_tower` names, and it is
what `longseq.model.interaction` and `longseq.model.model` both read (neither is imported here).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from longseq.data.features import FeatureSpec
from longseq.model.features import SideFeatures
from longseq.model.rankmixer_head import RankMixerConfig
from longseq.model.tower import SequenceTower
from longseq.model.towers import RECIPE, TOWERS

__all__ = [
    "HEADS",
    "RECIPE",
    "ModelBase",
    "ModelConfig",
    "complete_saved_config",
    "head_token_widths",
    "model_config_from_saved",
]

#: the heads ``model.head`` selects
HEADS = ("mlp", "rankmixer")


def head_token_widths(
    cfg: ModelBase, features: Sequence[FeatureSpec] = ()
) -> tuple[dict[str, int], dict[str, int]]:
    """The RankMixer head's tokens and the widths of what each is projected from: user side
    (one row per request: ``history``, then one per user/context feature group) and candidate
    side (one row per target: ``z``, ``item``, ``category``, then one per candidate group)."""
    d, e = cfg.tower_config.d_model, cfg.embedding_dim
    side = SideFeatures(features if cfg.use_features else (), e)
    user = {"history": d} if cfg.rankmixer.history_token else {}
    return {**user, **side.user_widths}, {"z": d, "item": e, "category": e, **side.candidate_widths}


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
        head: the head over the tower output: ``mlp`` (default; an MLP over ``[z | x_t]``) or
            ``rankmixer`` (RankMixer over the tokens ``z``, user-side and candidate-side, with
            per-task linear logits; ``rankmixer`` is its config; docs/model.md, "RankMixer").
        head_hidden: hidden widths of the MLP head (``head=mlp``).
        head_dropout: dropout rate in training after each hidden layer of the MLP head (every
            tower has this head); 0 = none. Off in ``eval()``.
        rankmixer: the RankMixer head's config (``head=rankmixer``).
        use_features: read the data set's declared side features (``meta.json``'s
            ``features``: user, context, candidate; docs/data-format.md); false: the model
            ignores them (sequence and target ids only).
        task_weights: per-task loss weights by task name (a task not named weighs 1); the
            loss is the weighted mean of the tasks' losses.
        loss_weighting: ``impression`` (mean over targets: the pointwise objective exactly) or
            ``request`` (mean over requests of the mean over their targets, the paper's formula).
    """

    embedding_dim: int = 32
    embedding_init_std: float = 0.5
    pos_dim: int = 16
    tower: str = "stca"
    head: str = "mlp"
    head_hidden: list[int] = field(default_factory=lambda: [128, 64])
    head_dropout: float = 0.0
    rankmixer: RankMixerConfig = field(default_factory=RankMixerConfig)
    use_features: bool = True
    task_weights: dict[str, float] = field(default_factory=dict)
    loss_weighting: str = "impression"

    def validate(self, prefix: str = "model") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.loss_weighting not in ("impression", "request"):
            raise ValueError(f"{prefix}.loss_weighting must be impression|request")
        if self.pos_dim < 2 or self.pos_dim % 2:
            raise ValueError(f"{prefix}.pos_dim must be even and >= 2, got {self.pos_dim}")
        if self.embedding_dim < 1:
            raise ValueError(f"{prefix}.embedding_dim must be >= 1, got {self.embedding_dim}")
        if any(w < 1 for w in self.head_hidden):
            raise ValueError(
                f"{prefix}.head_hidden: every hidden width must be >= 1, got {list(self.head_hidden)}"
            )
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"{prefix}.head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.tower not in TOWERS:
            raise ValueError(f"{prefix}.tower={self.tower!r}: choose one of {sorted(TOWERS)}")
        self.tower_config.validate(f"{prefix}.{self.tower}")
        if self.head not in HEADS:
            raise ValueError(f"{prefix}.head={self.head!r}: choose one of {list(HEADS)}")
        bad = {k: w for k, w in self.task_weights.items() if not w >= 0}
        if bad:
            raise ValueError(f"{prefix}.task_weights: weights must be >= 0, got {bad}")
        if self.head == "rankmixer":
            user, target = head_token_widths(self)
            self.rankmixer.validate(len(user) + len(target), f"{prefix}.rankmixer")

    def validate_for(self, features: Sequence[FeatureSpec], tasks: Sequence[str]) -> None:
        """The checks that need the data set: the RankMixer token count with its feature
        groups, and task weights naming its tasks (errors name the key)."""
        unknown = sorted(set(self.task_weights) - set(tasks))
        if unknown:
            raise ValueError(
                f"model.task_weights: {unknown[0]!r} is not a task of the data set ({list(tasks)})"
            )
        if self.head == "rankmixer":
            user, target = head_token_widths(self, features)
            self.rankmixer.validate(len(user) + len(target), "model.rankmixer")

    @property
    def tower_config(self):  # noqa: ANN201 - one of the tower config dataclasses
        """The config of the selected tower."""
        return getattr(self, self.tower)

    def build_tower(self) -> SequenceTower:
        """The selected tower, as `TOWERS` registers it, built from its config."""
        return TOWERS[self.tower].module(self.tower_config)


def _with_towers() -> type[ModelBase]:
    """`ModelBase` plus a section per `TOWERS` entry (``stca: STCAConfig`` ...)."""
    sections = [(n, t.config_type, field(default_factory=t.default)) for n, t in TOWERS.items()]
    cls = make_dataclass("ModelConfig", sections, bases=(ModelBase,))
    cls.__module__ = __name__
    cls.__doc__ = ModelBase.__doc__
    return cls


#: the model's typed config: `ModelBase` + one section per registered tower (made at import time
#: from `TOWERS`, so a type checker sees `ModelBase`; sections are reached by `tower_config`)
if TYPE_CHECKING:
    ModelConfig: TypeAlias = ModelBase
else:
    ModelConfig = _with_towers()


#: STCA switches added after the first checkpoints were written: absent from a checkpoint's model
#: config means off (that checkpoint holds the paper's tower), not today's default.
ADDED_STCA_SWITCHES = ("match_bias", "position_bias", "count_channel")


def _kernel_words(section: dict[str, Any]) -> dict[str, Any]:
    """A tower section written before ``kernel`` replaced ``attention`` (and ``packed`` the
    ``jagged`` layout), in today's words: ``attention=kv|absorbed|sdpa`` is that kernel,
    ``layout=jagged`` the ``packed`` layout with the ``pairs`` kernel (``flex`` if it was)."""
    if "attention" not in section and section.get("layout") != "jagged":
        return section
    out = dict(section)
    form = out.pop("attention", None)
    if out.get("layout") == "jagged":
        out.update(layout="packed", kernel="flex" if form == "flex" else "pairs")
    elif form is not None:
        out["kernel"] = form
    return out


def complete_saved_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``model`` config in today's words: the STCA switches it predates set to off,
    and the kernel words of `_kernel_words`."""
    out = copy.deepcopy(dict(saved))
    stca = _kernel_words(dict(out.get("stca") or {}))
    for key in ADDED_STCA_SWITCHES:
        stca.setdefault(key, False)
    out["stca"] = stca
    if out.get("transformer"):
        out["transformer"] = _kernel_words(dict(out["transformer"]))
    return out


def model_config_from_saved(saved: dict[str, Any]) -> ModelConfig:
    """The `ModelConfig` a checkpoint was trained with (its ``longseq.json`` ``model`` entry)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), complete_saved_config(saved))
    return cast(ModelConfig, OmegaConf.to_object(merged))
