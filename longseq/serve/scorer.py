"""`Scorer`: a checkpointed model for inference, its user side computed once per request.

`Scorer.encode` turns one request's history into a `UserSide` (through a `UserStateCache` when
given a version); `Scorer.score` scores any number of candidates against it. `score_requests`
does both for every request of a `RequestBatch` (what ``python -m longseq.serve`` runs) and
`score_batch` scores a whole batch at once without the cache. Every id is checked against its
table's size before the lookup (`Scorer.check_ids`: a ``ValueError`` naming the feature, id,
table and request instead of an ``IndexError`` from inside the kernel). Scores are probabilities
``[targets, tasks]`` and equal the evaluation's (`longseq.eval.predict.predict`) on the same
checkpoint and data (tests/serve/test_parity.py). A model that reads side features takes them
from the batch (or ``make_request``'s raw values); the cache holds the tower's state of a history
and each request's user/context features are put on it (`longseq.serve.features`;
tests/serve/test_serve_features.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from longseq.data.batch import HISTORY_KEYS, TARGET_KEYS, RequestBatch
from longseq.data.collate import dt_buckets
from longseq.data.features import FeatureSpec
from longseq.model.interaction import history_mean
from longseq.model.model import LongSeqModel
from longseq.model.ops.tables import MatchTables
from longseq.model.stca import STCATower
from longseq.model.stca_tables import with_tables
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
    user_features,
)
from longseq.serve.cache import UserStateCache
from longseq.serve.features import (
    CachedUser,
    needs_history_mean,
    raw_feature_arrays,
    row_request_kjt,
    with_user_features,
)


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
    features: Sequence[FeatureSpec] = (),
    feature_values: Mapping[str, Any] | None = None,
) -> RequestBatch:
    """A one-request `RequestBatch` from raw arrays (history oldest -> newest, as stored;
    docs/data-format.md). ``window``: serve only the most recent events. Candidates may be
    empty (a batch to `Scorer.encode` only).

    ``features``: the side features the model reads (``scorer.model.features``), with their
    raw values by name in ``feature_values``, as in the request's Parquet row (an ``id`` an int,
    a ``multi_hot`` a list of ints, a ``dense`` the untransformed float; a candidate feature a
    list with one such value per candidate, left out when there are no candidates)."""
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
    k = len(tgt[0])
    feats = raw_feature_arrays(features, feature_values or {}, k)
    lengths = [len(cols[0])] * len(HISTORY_KEYS) + [k] * 2
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(HISTORY_KEYS + TARGET_KEYS) + list(feats.sparse),
        values=torch.from_numpy(np.concatenate(cols + tgt + [v for v, _ in feats.sparse.values()])),
        lengths=torch.tensor(lengths + [int(n.sum()) for _, n in feats.sparse.values()]),
    )
    return RequestBatch(
        sparse=kjt,
        num_targets=torch.tensor([k]),
        labels=torch.zeros(k, 0),
        request_ids=torch.tensor([request_id]),
        user_ids=torch.tensor([user_id]),
        dense=torch.from_numpy(feats.dense),
        tgt_dense=torch.from_numpy(feats.tgt_dense),
        tgt_bags=torch.from_numpy(feats.tgt_bags),
    )


class Scorer:
    """Inference with a `LongSeqModel`: per-request user states, cached, then candidates.

    Args:
        model: the model (eval mode is set here).
        cache_bytes: bound of the `UserStateCache` (``0``: no caching).
        device: where the model runs (default: where its parameters are).
        packed: `score_batch` scores the whole batch packed, no padding anywhere, each STCA
            layer's attention one FlexAttention call (`longseq.model.ops.flex`; STCA only).
        match_tables: index each request's events by id when its state is encoded (STCA with
            the id-match bias, a padded one-request state): candidates then pay the attention
            plus their matched events, not a comparison with every event (the same scores;
            `longseq.model.stca_tables`). False: the padded kernels build the bias densely.
    """

    def __init__(
        self,
        model: LongSeqModel,
        cache_bytes: int = 256 << 20,
        device: str | None = None,
        packed: bool = False,
        match_tables: bool = True,
    ) -> None:
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.cache = UserStateCache(cache_bytes)
        if packed:
            packed_kernel(self.model)  # a clear error for a tower without the packed kernel
        self.packed = packed
        self.match_tables = match_tables
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
        match_tables: bool = True,
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
        scorer = cls(model, int(cache_mb * (1 << 20)), device, packed, match_tables)
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
        last event time) the tower's state is looked up in, and stored into, the cache under
        ``(user_id, version)``: a hit skips the history's lookup and the tower's user side.
        The request's user/context features are not part of the key: they are looked up for
        every request and put on the state (`longseq.serve.features.with_user_features`)."""
        key = None if version is None else (int(batch.user_ids[row]), version)
        hit = None if key is None else self.cache.get(key)
        if hit is not None:
            if not self.model.interaction.side.request_feats:
                return hit.user
            kjt = row_request_kjt(batch.sparse, row, self._request_keys)
            self.check_ids(kjt)
            emb = self.model.ec(kjt.to(self.device))
            dense = batch.dense[row : row + 1].to(self.device)
            return with_user_features(self.model, hit, user_features(self.model, emb, dense))
        self.check_ids(batch.sparse)
        batch = batch.to(self.device)
        emb = lookup(self.model, batch)
        x, lengths, ids = history_tokens(self.model, emb, batch.sparse)
        ufeats = user_features(self.model, emb, batch.dense)
        entry = self._encode_row(x, lengths, ids, row, ufeats)
        if key is not None:
            self.cache.put(key, entry, entry.nbytes())
        return entry.user

    def indexed(self, user: UserSide, tables: MatchTables | None = None) -> UserSide:
        """``user`` with its STCA state's events indexed by id (``match_tables``; ``tables``:
        ones kept up to date for these events), so that candidates cost the attention plus
        their matched events (`longseq.model.stca_tables`); ``user`` itself for other towers,
        packed states, or with ``match_tables=False``."""
        tower = self.model.interaction.tower
        if not self.match_tables or user.packed or not isinstance(tower, STCATower):
            return user
        state = with_tables(tower, user.state, tables)  # type: ignore[arg-type]
        return user if state is user.state else replace(user, state=state)

    @property
    def _request_keys(self) -> list[str]:
        """KJT keys of the user/context sparse features the model reads."""
        return [f.key for f in self.model.features if f.per_request and f.sparse]

    def _encode_row(self, x, lengths, ids, row: int, ufeats: dict) -> CachedUser:
        """Request ``row``'s state (``ufeats``: the batch's `user_features`, ``[B, w]``)."""
        start = int(lengths[:row].sum())
        end = start + int(lengths[row])
        sub_ids = None if ids is None else ids[start:end]
        feats = {g: v[row : row + 1] for g, v in ufeats.items()}
        xs, ls = x[start:end], lengths[row : row + 1]
        user = self.indexed(encode_users(self.model, xs, ls, sub_ids, features=feats))
        mean = history_mean(xs, ls) if needs_history_mean(self.model) else None
        return _own(CachedUser(user, mean))

    @torch.no_grad()
    def score(
        self,
        user: UserSide,
        item_ids: Sequence[int] | torch.Tensor,
        category_ids: Sequence[int] | torch.Tensor,
        features: Mapping[str, Sequence[Any]] | None = None,
    ) -> torch.Tensor:
        """Probabilities ``[K, tasks]`` of ``K`` candidates (item and category ids) for the
        request whose state is ``user`` (from `encode`). ``features``: the candidates' raw
        candidate feature values by name, one per candidate (as in ``make_request``)."""
        item = torch.as_tensor(item_ids, dtype=torch.int64).reshape(-1)
        cat = torch.as_tensor(category_ids, dtype=torch.int64).reshape(-1)
        if item.shape != cat.shape:
            raise ValueError(f"{item.numel()} item ids but {cat.numel()} category ids")
        k = item.numel()
        fa = raw_feature_arrays(self.model.features, features or {}, k, request=False)
        sparse = [torch.from_numpy(v) for v, _ in fa.sparse.values()]
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(HISTORY_KEYS + TARGET_KEYS) + list(fa.sparse),
            values=torch.cat([item, cat, *sparse]),
            lengths=torch.tensor(
                [0] * len(HISTORY_KEYS) + [k, k] + [int(n.sum()) for _, n in fa.sparse.values()]
            ),
        )
        self.check_ids(kjt)
        kjt = kjt.to(self.device)
        emb = self.model.ec(kjt)
        xt, tgt_ids = target_tokens(self.model, emb, kjt)
        nt = torch.tensor([k], device=self.device)
        tgt_dense, bags = (torch.from_numpy(a).to(self.device) for a in (fa.tgt_dense, fa.tgt_bags))
        feats = target_features(self.model, emb, tgt_dense, bags)
        logits = score_targets(self.model, user, xt, nt, tgt_ids, feats=feats)
        return torch.sigmoid(logits).float().cpu()

    @torch.no_grad()
    def score_requests(
        self, batch: RequestBatch, versions: Sequence[Hashable] | None = None
    ) -> torch.Tensor:
        """Probabilities ``[N, tasks]`` of every target of ``batch``, request by request: each
        request's state from the cache under ``(user_id, versions[r])`` or encoded (and
        stored), with the request's own user/context features, then its candidates (with
        their candidate features) scored against it. One lookup serves the whole batch."""
        b = batch.batch_size
        if versions is not None and len(versions) != b:
            raise ValueError(f"{len(versions)} versions for {b} requests")
        self.check_ids(batch.sparse)
        batch = batch.to(self.device)
        emb = lookup(self.model, batch)
        xt, tgt_ids = target_tokens(self.model, emb, batch.sparse)
        feats = target_features(self.model, emb, batch.tgt_dense, batch.tgt_bags)
        ufeats = user_features(self.model, emb, batch.dense)
        cached: list[CachedUser | None] = [None] * b
        keys = [None] * b
        if versions is not None:
            uids = batch.user_ids.tolist()
            keys = [(u, v) for u, v in zip(uids, versions, strict=True)]
            cached = [self.cache.get(k) for k in keys]
        users: list[UserSide] = []
        x = lengths = ids = None
        for r in range(b):
            entry = cached[r]
            if entry is None:
                if x is None:
                    x, lengths, ids = history_tokens(self.model, emb, batch.sparse)
                entry = self._encode_row(x, lengths, ids, r, ufeats)
                if keys[r] is not None:
                    self.cache.put(keys[r], entry, entry.nbytes())
                users.append(entry.user)
            else:
                users.append(
                    with_user_features(
                        self.model, entry, {g: v[r : r + 1] for g, v in ufeats.items()}
                    )
                )
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
