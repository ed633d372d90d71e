"""Serving a trained model: per-request user states, cached, then any number of candidates.

``from longseq.serve import Scorer``: `Scorer.from_checkpoint(path)`, then ``encode`` a request's
history once and ``score`` candidates against it (or ``score_requests`` / ``score_batch`` over a
`longseq.data.batch.RequestBatch`). `UserStateCache` keeps user states between requests (LRU,
bounded by bytes). ``python -m longseq.serve checkpoint=... data.path=... out=...`` scores a
split into ``scores.parquet``. docs/serving.md.
"""

from __future__ import annotations

from longseq.serve.cache import UserStateCache
from longseq.serve.scorer import Scorer, make_request

__all__ = ["Scorer", "UserStateCache", "make_request"]
