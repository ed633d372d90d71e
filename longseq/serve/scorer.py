"""`Scorer`: a checkpointed model for inference, its user side computed once per request.

`Scorer.encode` turns one request's history into a `UserSide` (through a `UserStateCache` when
given a version); `Scorer.score` scores any number of candidates against it. `score_requests`
does both for every request of a `RequestBatch` (what ``python -m longseq.serve`` runs) and
`score_batch` scores a whole batch at once without the cache. Every id is checked against its
table's size before the lookup (`Scorer.check_ids`: a ``ValueError`` naming the feature, id,
table and request instead of an ``IndexError`` from inside the kernel). Scores are probabilities
``[targets, tasks]`` and equal the evaluation's (`longseq.eval.predict.predict`) on the same
checkpoint and data (tests/serve/test_parity.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from longseq.data.batch import HISTORY_KEYS, TARGET_KEYS, RequestBatch
from longseq.data.collate import dt_buckets
from longseq.model.model import LongSeqModel
from longseq.model.user_side import (
    UserSide,
    encode_users,
    history_tokens,
    lookup,
    packed_kernel,
    score_targets,
    split_logits,
    target_features,
    target_tokens,
)
from longseq.serve.cache import UserStateCache


def _own(obj: Any) -> Any:
    """``obj`` with every tensor that views a larger storage copied out: a cached state must not
    keep its whole batch's tensors alive."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.untyped_storage().nbytes() > obj.nbytes else obj
    if isinstance(obj, list | tuple):
        return type(obj)(_own(x) for x in obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return replace(obj, **{f.name: _own(getattr(obj, f.name)) for f in fields(obj)})
    return obj


def make_request(
    hist_item_id: Sequence[int],
    hist_category_id: Sequence[int],
    hist_action: Sequence[int],
    hist_ts: Sequence[int],
    request_ts: int,
    tgt_item_id: Sequence[int] = (),
    tgt_category_id: Sequence[int] = (),
    window: int | None = None,
    user_id: int = 0,
    request_id: int = 0,
) -> RequestBatch:
    """A one-request `RequestBatch` from raw arrays (history oldest -> newest, as stored;
    docs/data-format.md). ``window``: serve only the most recent events. Candidates may be
    empty (a batch to `Scorer.encode` only)."""
    cols = [np.asarray(c, dtype=np.int64) for c in (hist_item_id, hist_category_id, hist_action)]
    ts = np.asarray(hist_ts, dtype=np.int64)
    if any(c.shape != ts.shape for c in cols) or ts.ndim != 1:
        raise ValueError("hist_item_id, hist_category_id, hist_action, hist_ts: same length")
    cols.append(dt_buckets(request_ts - ts))
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 events (None: the whole history), got {window}")
    if window is not None:
        cols = [c[max(len(c) - window, 0) :] for c in cols]
    tgt = [np.asarray(c, dtype=np.int64) for c in (tgt_item_id, tgt_category_id)]
    if tgt[0].shape != tgt[1].shape:
        raise ValueError("tgt_item_id and tgt_category_id must have the same length")
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(HISTORY_KEYS + TARGET_KEYS),
        values=torch.from_numpy(np.concatenate(cols + tgt)),
        lengths=torch.tensor([len(cols[0])] * len(HISTORY_KEYS) + [len(tgt[0])] * 2),
    )
    k = len(tgt[0])
    return RequestBatch(
        sparse=kjt,
        num_targets=torch.tensor([k]),
        labels=torch.zeros(k, 0),
        request_ids=torch.tensor([request_id]),
        user_ids=torch.tensor([user_id]),
        dense=torch.zeros(1, 0),
    )


class Scorer:
    """Inference with a `LongSeqModel`: per-request user states, cached, then candidates.

    Args:
        model: the model (eval mode is set here).
        cache_bytes: bound of the `UserStateCache` (``0``: no caching).
        device: where the model runs (default: where its parameters are).
        packed: `score_batch` scores the whole batch packed, no padding anywhere, each STCA
            layer's attention one FlexAttention call (`longseq.model.ops.flex`; STCA only).
    """

    def __init__(
        self,
        model: LongSeqModel,
        cache_bytes: int = 256 << 20,
        device: str | None = None,
        packed: bool = False,
    ) -> None:
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.cache = UserStateCache(cache_bytes)
        if packed:
            packed_kernel(self.model)  # a clear error for a tower without the packed kernel
        self.packed = packed
        #: feature -> (table name, rows) of the model's embedding tables
        self.limits = {
            f: (c.name, int(c.num_embeddings))
            for c in self.model.ec.embedding_configs()
            for f in c.feature_names
        }

    def check_ids(self, kjt: KeyedJaggedTensor) -> None:
        """Raise ``ValueError`` naming the feature, the id, the table, its size and the request
        for an id outside its table (negative or >= rows)."""
        for key in kjt.keys():
            if key not in self.limits:
                continue
            table, rows = self.limits[key]
            jt = kjt[key]
            values = jt.values()
            bad = (values < 0) | (values >= rows)
            if not bool(bad.any()):
                continue
            i = int(bad.nonzero()[0, 0])
            ends = torch.cumsum(jt.lengths(), 0)
            request = int(torch.searchsorted(ends, torch.tensor(i), right=True))
            raise ValueError(
                f"{key}: id {int(values[i])} in request {request} is out of range: table "
                f"{table!r} has {rows} rows (ids 0..{rows - 1}); the request uses another or a "
                "newer vocabulary than the model was trained on"
            )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        cache_mb: float = 256.0,
        device: str | None = None,
        packed: bool = False,
    ) -> Scorer:
        """A `Scorer` of a checkpoint folder, pointer file or run dir (its latest checkpoint),
        loaded as the evaluation loads it (manifest verified, no code run from the files)."""
        from longseq.eval.load import load_model, resolve_checkpoint
        from longseq.parallel.checkpoint import verify_checkpoint

        ckpt = resolve_checkpoint(checkpoint)
        meta = verify_checkpoint(ckpt)
        with warnings.catch_warnings():  # a one-process DCP load is intended
            warnings.filterwarnings("ignore", message=r"torch.distributed is disabled")
            model = load_model(ckpt, meta)
        scorer = cls(model, int(cache_mb * (1 << 20)), device, packed)
        scorer.checkpoint, scorer.meta = ckpt, meta
        return scorer

    @property
    def tasks(self) -> list[str]:
        """The tasks, in the order of the score columns."""
        return self.model.tasks

    @torch.no_grad()
    def score_batch(self, batch: RequestBatch) -> torch.Tensor:
        """Probabilities ``[N, tasks]`` of every target of ``batch`` (all requests at once, no
        cache; packed through FlexAttention when the scorer is ``packed``)."""
        self.check_ids(batch.sparse)
        logits = split_logits(self.model, batch.to(self.device), self.packed)
        return torch.sigmoid(logits).float().cpu()

    @torch.no_grad()
    def encode(
        self, batch: RequestBatch, row: int = 0, version: Hashable | None = None
    ) -> UserSide:
        """The user state of request ``row`` of ``batch``.

        With a ``version`` (anything hashable naming the served history, e.g. its length and
        last event time) the state is looked up in, and stored into, the cache under
        ``(user_id, version)``: a hit skips the lookup and the tower's user side."""
        key = None if version is None else (int(batch.user_ids[row]), version)
        if key is not None and (hit := self.cache.get(key)) is not None:
            return hit
        self.check_ids(batch.sparse)
        batch = batch.to(self.device)
        emb = lookup(self.model, batch)
        x, lengths, ids = history_tokens(self.model, emb, batch.sparse)
        user = self._encode_row(x, lengths, ids, row)
        if key is not None:
            self.cache.put(key, user, user.nbytes())
        return user

    def _encode_row(self, x, lengths, ids, row: int) -> UserSide:
        start = int(lengths[:row].sum())
        end = start + int(lengths[row])
        sub_ids = None if ids is None else ids[start:end]
        return _own(encode_users(self.model, x[start:end], lengths[row : row + 1], sub_ids))

    @torch.no_grad()
    def score(
        self,
        user: UserSide,
        item_ids: Sequence[int] | torch.Tensor,
        category_ids: Sequence[int] | torch.Tensor,
    ) -> torch.Tensor:
        """Probabilities ``[K, tasks]`` of ``K`` candidates (item and category ids) for the
        request whose state is ``user`` (from `encode`)."""
        item = torch.as_tensor(item_ids, dtype=torch.int64).reshape(-1)
        cat = torch.as_tensor(category_ids, dtype=torch.int64).reshape(-1)
        if item.shape != cat.shape:
            raise ValueError(f"{item.numel()} item ids but {cat.numel()} category ids")
        k = item.numel()
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(HISTORY_KEYS + TARGET_KEYS),
            values=torch.cat([item, cat]),
            lengths=torch.tensor([0] * len(HISTORY_KEYS) + [k, k]),
        )
        self.check_ids(kjt)
        kjt = kjt.to(self.device)
        emb = self.model.ec(kjt)
        xt, tgt_ids = target_tokens(self.model, emb, kjt)
        nt = torch.tensor([k], device=self.device)
        feats = target_features(self.model, emb)
        logits = score_targets(self.model, user, xt, nt, tgt_ids, feats=feats)
        return torch.sigmoid(logits).float().cpu()

    @torch.no_grad()
    def score_requests(
        self, batch: RequestBatch, versions: Sequence[Hashable] | None = None
    ) -> torch.Tensor:
        """Probabilities ``[N, tasks]`` of every target of ``batch``, request by request: each
        request's user state from the cache under ``(user_id, versions[r])`` or encoded (and
        stored), then its candidates scored against it. One lookup serves the whole batch."""
        b = batch.batch_size
        if versions is not None and len(versions) != b:
            raise ValueError(f"{len(versions)} versions for {b} requests")
        self.check_ids(batch.sparse)
        batch = batch.to(self.device)
        emb = lookup(self.model, batch)
        xt, tgt_ids = target_tokens(self.model, emb, batch.sparse)
        feats = target_features(self.model, emb)
        users: list[UserSide | None] = [None] * b
        keys = [None] * b
        if versions is not None:
            uids = batch.user_ids.tolist()
            keys = [(u, v) for u, v in zip(uids, versions, strict=True)]
            users = [self.cache.get(k) for k in keys]
        if any(u is None for u in users):
            x, lengths, ids = history_tokens(self.model, emb, batch.sparse)
            for r in range(b):
                if users[r] is None:
                    users[r] = self._encode_row(x, lengths, ids, r)
                    if keys[r] is not None:
                        self.cache.put(keys[r], users[r], users[r].nbytes())
        nt = batch.num_targets
        ends = torch.cumsum(nt, 0).tolist()
        out = []
        for r, user in enumerate(users):
            s, e = ends[r] - int(nt[r]), ends[r]
            sub_ids = None if tgt_ids is None else tgt_ids[s:e]
            sub = None if feats is None else {k: v[s:e] for k, v in feats.items()}
            out.append(score_targets(self.model, user, xt[s:e], nt[r : r + 1], sub_ids, None, sub))
        logits = torch.cat(out) if out else xt.new_zeros(0, len(self.tasks))
        return torch.sigmoid(logits).float().cpu()
