"""The tower table: each `TOWERS` entry is the one registration a tower needs."""

from __future__ import annotations

import dataclasses

import pytest

from longseq.model.embeddings import TableSizes
from longseq.model.model import TOWERS, LongSeqModel, ModelConfig


@pytest.mark.parametrize("name", sorted(TOWERS))
def test_each_tower_gets_a_config_section_and_builds(name: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    assert name in fields, f"ModelConfig has no section for tower {name!r}"
    cfg = ModelConfig(tower=name)
    assert isinstance(cfg.tower_config, TOWERS[name].config_type)
    cfg.validate()
    model = LongSeqModel(cfg, TableSizes(50, 5, 3), ["click"])
    assert isinstance(model.interaction.tower, TOWERS[name].module)


def test_an_unknown_tower_names_the_key_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"model.tower='nope': choose one of \['din'"):
        ModelConfig(tower="nope").validate()
