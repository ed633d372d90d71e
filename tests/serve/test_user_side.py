"""`longseq.model.user_side`: ``score_targets(encode_users(...))`` gives `LongSeqModel.forward`'s
logits, for STCA in every attention form and layout and for every baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import CONFIGS, TASKS, build, model_config, sizes  # noqa: E402


def _batch(data: Path, rows: int = 12):
    import pyarrow.parquet as pq

    from longseq.data.collate import collate
    from longseq.data.shards import list_parquet_files

    table = pq.read_table(list_parquet_files(data / "test")[0]).slice(0, rows)
    return collate(table, TASKS)


class _Float64(torch.nn.Module):
    """An EmbeddingCollection whose looked-up values come back as float64."""

    def __init__(self, ec: torch.nn.Module) -> None:
        super().__init__()
        self.ec = ec

    def forward(self, kjt):
        from torchrec.sparse.jagged_tensor import JaggedTensor

        return {
            k: JaggedTensor(v.values().double(), lengths=v.lengths())
            for k, v in self.ec(kjt).items()
        }


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_split_equals_forward(name: str, tiny_data: Path) -> None:
    from longseq.model.user_side import split_logits

    model = build(name, tiny_data)
    batch = _batch(tiny_data)
    with torch.no_grad():
        got, want = split_logits(model, batch), model(batch)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
        model.interaction.double()
        model.ec = _Float64(model.ec)  # the EC's lookups stay fp32 whatever its weights
        got, want = split_logits(model, batch), model(batch)
    assert got.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-10, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize("name", ["stca_kv_padded", "stca_pairs_packed", "pooling", "din", "sim"])
def test_split_equals_forward_with_the_rankmixer_head(name: str, tiny_data: Path) -> None:
    """``model.head=rankmixer`` over every kind of tower: the head's user tokens computed in
    ``encode_users`` give ``forward``'s logits (float64: to 1e-10)."""
    from longseq.model.model import LongSeqModel
    from longseq.model.rankmixer_head import RankMixerConfig
    from longseq.model.user_side import split_logits

    cfg = model_config(name)
    cfg.head, cfg.rankmixer = "rankmixer", RankMixerConfig(dim=16, layers=2, ffn_mult=2.0)
    torch.manual_seed(0)
    model = LongSeqModel(cfg, sizes(tiny_data), TASKS).eval()
    batch = _batch(tiny_data)
    with torch.no_grad():
        model.interaction.double()
        model.ec = _Float64(model.ec)
        got, want = split_logits(model, batch), model(batch)
    assert got.dtype == torch.float64 and got.std() > 1e-4
    assert torch.allclose(got, want, atol=1e-10, rtol=0), (got - want).abs().max()
