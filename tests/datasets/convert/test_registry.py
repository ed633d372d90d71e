"""One registration per converter: the config, the pipeline and the CLI read `CONVERTERS`."""

from __future__ import annotations

import dataclasses

import pytest

from longseq.datasets.convert import converter_for
from longseq.datasets.convert.base import Converter
from longseq.datasets.convert.config import ConvertConfig
from longseq.datasets.convert.options import DatasetOptions
from longseq.datasets.convert.registry import CONVERTERS, converter_module, dataset_names


@pytest.mark.parametrize("name", dataset_names())
def test_each_registered_converter_has_a_typed_section(name):
    module = converter_module(name)
    assert issubclass(module.Options, DatasetOptions)
    assert issubclass(module.Converter, Converter)
    cfg = ConvertConfig(dataset=name, src="x", out="y")
    assert type(cfg.options()) is module.Options
    cfg.validate()
    assert type(converter_for(cfg)) is module.Converter


def test_config_sections_are_the_registry():
    sections = {
        f.name
        for f in dataclasses.fields(ConvertConfig)
        if isinstance(f.type, type) and issubclass(f.type, DatasetOptions)
    }
    assert sections == set(CONVERTERS)


def test_hydra_override_of_a_section():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR
    from longseq.datasets.convert.config import register

    register()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        over = ["dataset=taobao", "src=x", "out=y", "taobao.neg_ratio=4", "movielens.gap_s=60"]
        cfg = OmegaConf.to_object(compose("convert", overrides=over))
    assert isinstance(cfg, ConvertConfig)
    assert (cfg.taobao.neg_ratio, cfg.movielens.gap_s) == (4.0, 60)


def test_unknown_dataset_names_the_key_and_the_choices():
    with pytest.raises(ValueError, match=r"dataset='criteo' must be kuairand\|taobao\|movielens"):
        converter_module("criteo")
