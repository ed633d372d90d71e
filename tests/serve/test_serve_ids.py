"""Out-of-range ids at serving are named (issue 25, case 7): the feature, the id, the table and
its size, and the request, instead of a bare ``IndexError`` from inside the embedding lookup."""

from __future__ import annotations

import pytest
import torch

from longseq.serve.scorer import Scorer, make_request


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    from longseq.model.embeddings import TableSizes
    from longseq.model.model import LongSeqModel, ModelConfig

    torch.manual_seed(0)
    model = LongSeqModel(ModelConfig(), TableSizes(50, 5, 4), ["click"])
    return Scorer(model, cache_bytes=0)


def _request(hist_items, tgt_items, tgt_cats=None):
    n = len(hist_items)
    return make_request(
        hist_item_id=hist_items,
        hist_category_id=[1] * n,
        hist_action=[0] * n,
        hist_ts=list(range(n)),
        request_ts=100,
        tgt_item_id=tgt_items,
        tgt_category_id=tgt_cats if tgt_cats is not None else [2] * len(tgt_items),
    )


def test_valid_ids_score(scorer: Scorer):
    assert scorer.score_requests(_request([1, 2, 3], [4, 49])).shape == (2, 1)


@pytest.mark.parametrize(
    "hist,tgt,cats,match",
    [
        ([1, 2, 50], [4], None, r"hist_item_id: id 50 .*table 'item' has 50 rows \(ids 0\.\.49\)"),
        ([1, 2, 3], [4, 999], None, r"tgt_item_id: id 999 .*table 'item' has 50 rows"),
        ([1, 2, 3], [4], [-1], r"tgt_category_id: id -1 .*table 'category' has 5 rows"),
    ],
)
def test_out_of_range_ids_are_named(scorer: Scorer, hist, tgt, cats, match):
    batch = _request(hist, tgt, cats)
    for call in (scorer.score_requests, scorer.score_batch, scorer.encode):
        with pytest.raises(ValueError, match=match) as e:
            call(batch)
        assert "request 0" in str(e.value)
    user = scorer.encode(_request([1, 2, 3], []))
    with pytest.raises(ValueError, match=r"tgt_item_id: id 70 .*table 'item'"):
        scorer.score(user, [3, 70], [1, 1])
