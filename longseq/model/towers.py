"""`TOWERS`: the one registration of a sequence tower (``model.tower=<name>``).

`longseq.model.model.ModelConfig` gets one section per entry (``model.<name>.*``) and builds the
selected tower from it; the benchmarks that compare towers build them from here too. Plain torch
(every tower is), so a machine without TorchRec can build any tower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from longseq.model.stca import STCAConfig, STCATower
from longseq.model.tower import SequenceTower

__all__ = ["RECIPE", "TOWERS", "Tower"]

#: STCA settings on by default in a model (docs/results.md, "Make it long"): the id-match bias and
#: the count channel. ``STCAConfig()`` alone stays the paper's tower.
RECIPE: dict[str, Any] = {"match_bias": True, "count_channel": True}


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
