"""Coarse categories (``topics_per_category``): the story on hidden topics, the category written
coarse, the oracle exact; the default (1) writes the data of before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from longseq.datasets import oracle_files
from longseq.datasets.synth import SynthConfig, generate
from tests.datasets.test_synth import make_config
from tests.datasets.test_synth_features import _digest

SMALL = {"num_users": 600, "seed": 3}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """farci-shaped data on 20 topics: fine (20 categories) and coarse (4 x 5 topics)."""
    fine, coarse = tmp_path_factory.mktemp("fine"), tmp_path_factory.mktemp("coarse")
    generate(make_config("farci", fine, **SMALL))
    generate(make_config("coarseci", coarse, **SMALL))
    return fine, coarse


def _flat(root: Path, split: str, name: str) -> np.ndarray:
    col = pq.read_table(root / split, columns=[name]).column(name).combine_chunks()
    return col.values.to_numpy(zero_copy_only=False)


def test_default_is_the_data_of_before(tmp_path):
    """``topics_per_category=1`` given explicitly = the default = the pinned tiny digest."""
    generate(make_config("tiny", tmp_path / "a", seed=1))
    generate(make_config("tiny", tmp_path / "b", seed=1, topics_per_category=1))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") == "a0e5498b19b3640d"
    a, b = (json.loads((tmp_path / d / "oracle.json").read_text()) for d in "ab")
    assert a == b
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["config"]["topics_per_category"] == 1


def test_coarse_category_is_topic_group(pair):
    fine, coarse = pair
    cfg = make_config("coarseci", coarse)
    k, ipc = cfg.topics_per_category, cfg.items_per_category
    assert (cfg.num_topics, cfg.num_items, k) == (20, 100, 5)
    for split in ("train", "test"):
        for side in ("hist", "tgt"):
            item = _flat(coarse, split, f"{side}_item_id")
            cat = _flat(coarse, split, f"{side}_category_id")
            np.testing.assert_array_equal(cat, item // ipc // k)  # topic = item // ipc
            assert cat.max() == cfg.num_categories - 1
            # same story, same draws: only the written category differs from the fine data
            np.testing.assert_array_equal(item, _flat(fine, split, f"{side}_item_id"))
            np.testing.assert_array_equal(cat, _flat(fine, split, f"{side}_category_id") // k)
        for name in ("tgt_click", "tgt_p_true"):
            np.testing.assert_array_equal(_flat(coarse, split, name), _flat(fine, split, name))
    meta = json.loads((coarse / "meta.json").read_text())
    assert (meta["num_categories"], meta["num_items"]) == (4, 100)
    assert meta["config"]["topics_per_category"] == 5


def test_oracle_runs_on_the_topics(pair):
    """The ceilings are the fine data's (the oracle knows the topics), and reported."""
    fine, coarse = pair
    f, c = (json.loads((d / "oracle.json").read_text()) for d in (fine, coarse))
    assert [r["window"] for r in c["windows"]] == [32, 96, 256]
    assert [r["auc"] for r in c["windows"]] == [r["auc"] for r in f["windows"]]
    assert c["params"]["num_categories"] == 20  # the hidden topics
    assert c["windows"][-1]["auc"] > c["windows"][1]["auc"] + 0.03  # a far-past gap to close


def test_oracle_recomputed_from_files(pair):
    _, coarse = pair
    saved = json.loads((coarse / "oracle.json").read_text())
    again = oracle_files.oracle_from_dataset(coarse)
    assert json.dumps(again, sort_keys=True) == json.dumps(saved, sort_keys=True)


def test_presets_and_bad_values(tmp_path):
    c = make_config("coarse1k", tmp_path)
    c.validate()
    assert (c.num_categories, c.topics_per_category, c.num_items, c.hist_len) == (20, 5, 1000, 1024)
    for key, value in (("topics_per_category", 0), ("features", True)):
        with pytest.raises(ValueError, match=f"synth config: {key}="):
            SynthConfig(out="x", **{"topics_per_category": 2, key: value}).validate()
