"""`longseq.serve.flat_state`: every tower's user state round-trips through its flat form."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import CONFIGS, build  # noqa: E402

from longseq.serve.flat_state import (  # noqa: E402
    flatten_state,
    named_leaves,
    structure,
    unflatten_state,
)


@pytest.mark.parametrize("name", [n for n in sorted(CONFIGS) if not n.endswith("packed")])
def test_state_round_trips_without_its_padding_mask(name: str, tiny_data: Path):
    tower = build(name, tiny_data).interaction.tower
    feats = len(tower.id_features)
    hist, mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    ids = torch.randint(0, 3, (2, 6, feats)) if feats else None
    tgt_ids = torch.randint(0, 3, (2, 4, feats)) if feats else None
    tgt = torch.randn(2, 4, 16)
    with torch.no_grad():
        state = tower.encode_user(hist, mask, ids)
        flat = flatten_state(state)
        names = [n for n, _ in named_leaves(state)]
        assert len(names) == len(set(names)) == len(flat) > 0
        assert "hist_mask" not in names  # dropped: the exported contract is "no padding"
        back = unflatten_state(structure(state), flat)
        assert getattr(back, "hist_mask", None) is None
        # the rebuilt state (mask None) scores exactly as the original (mask all True)
        torch.testing.assert_close(
            tower.score(back, tgt, tgt_ids), tower.score(state, tgt, tgt_ids)
        )
    with pytest.raises(ValueError, match="more state tensors"):
        unflatten_state(structure(state), flat + (flat[0],))
