"""`longseq.model.user_side`: ``score_targets(encode_users(...))`` gives `LongSeqModel.forward`'s
logits, for STCA in every attention form and layout and for every baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import CONFIGS, TASKS, build  # noqa: E402


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
