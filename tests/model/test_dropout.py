"""Dropout (``model.stca.dropout``, ``model.head_dropout``): on in training only, no new
parameters (checkpoints load either way), and a rate of 0 is exactly the model without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from longseq.data.collate import collate
from longseq.data.reader import list_parquet_files
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.stca import STCAConfig


def _cfg(dropout: float = 0.0, head_dropout: float = 0.0, tower: str = "stca") -> ModelConfig:
    stca = STCAConfig(
        d_model=16, num_heads=2, num_layers=2, match_bias=True, count_channel=True, dropout=dropout
    )
    return ModelConfig(
        embedding_dim=8,
        pos_dim=4,
        tower=tower,
        stca=stca,
        head_hidden=[16, 8],
        head_dropout=head_dropout,
    )


@pytest.fixture(scope="module")
def batch(tiny_data: Path):
    table = pq.read_table(list_parquet_files(tiny_data / "train")[0]).slice(0, 8)
    return collate(table, ["click"], np.full(8, 1000))


def _model(sizes: TableSizes, **kw) -> LongSeqModel:
    torch.manual_seed(0)
    return LongSeqModel(_cfg(**kw), sizes, ["click"])


@pytest.mark.parametrize("kw", [{"dropout": 0.3}, {"head_dropout": 0.3}])
def test_dropout_is_on_in_training_and_off_in_eval(sizes, batch, kw):
    model = _model(sizes, **kw)
    plain = _model(sizes)
    assert model.state_dict().keys() == plain.state_dict().keys()  # no new parameters
    plain.load_state_dict(model.state_dict())
    model.train()
    assert not torch.equal(model(batch), model(batch))  # a new mask per call
    model.eval()
    plain.eval()
    with torch.no_grad():
        first = model(batch)
        assert torch.equal(first, model(batch))  # deterministic in eval
        assert torch.equal(first, plain(batch))  # and exactly the model without dropout


@pytest.mark.parametrize("tower", ["stca", "din", "pooling"])
def test_rate_zero_draws_no_random_numbers(sizes, batch, tower):
    """p = 0 builds no dropout module: training draws nothing from the RNG, so logits and
    gradients are bit-identical to a model built before the option existed."""
    model = _model(sizes, tower=tower)
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    state = torch.get_rng_state()
    model.train()
    model.loss(model(batch), batch).backward()
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    ("kw", "key"),
    [({"dropout": 1.0}, "model.stca.dropout"), ({"head_dropout": -0.1}, "model.head_dropout")],
)
def test_bad_rates_name_the_key(sizes, kw, key):
    with pytest.raises(ValueError, match=key):
        _model(sizes, **kw)
