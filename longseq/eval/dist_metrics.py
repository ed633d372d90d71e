"""Evaluation metrics over the ranks of a process group, without gathering the predictions.

Each rank holds the predictions it scored (`longseq.eval.predict.Predictions`); no rank ever holds
all of them. Per window and task, `dist_window_metrics` returns on every rank the same row as the
one-process `longseq.eval.window.window_metrics`, **bit-identical** for any split of the
targets over any number of ranks, because every metric is a ratio of exact, additive sums
(`longseq.metrics`) that are added exactly over the ranks and rounded once:

* **AUC** (exact): a sample sort. Splitters come from a seeded sample of every rank's scores;
  each (score, label) goes to the rank of its score range (``searchsorted(..., side="right")``,
  so equal scores always meet on one rank); each rank counts ``2U`` of its range, adds the
  negatives of the lower ranges (an all-gather of per-rank counts), and the integers are
  all-reduced. Memory per rank is its share of the targets (a split whose scores are mostly one
  value sends that value's targets to one rank).
* **GAUC**: targets go to rank ``splitmix64(user_id) % world`` (all-to-all), so each user's
  targets meet on one rank, which sums its users' AUCs exactly (`longseq.metrics.GroupAUCSums`).
  The same exchange counts distinct users and requests (a request belongs to one user).
* **Log loss, calibration, counts**: exact local sums, all-reduced.

Exact sums are Python integers (fixed point, up to ~2200 bits): `allreduce_exact` all-reduces
them as 32-bit limbs in int64, which cannot overflow. Everything travels as CPU tensors over gloo:
the default process group when it is gloo, else (NCCL) a gloo group over the same ranks, made
once (`metrics_group`). Collective: call on every rank, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from longseq.metrics import (
    FIXED_SHIFT,
    GroupAUCSums,
    auc_from_counts,
    calibration_from_sums,
    exact_sum,
    fixed_ratio,
    gauc_sums,
    log_loss_sum,
    sorted_u2,
)

if TYPE_CHECKING:
    from longseq.eval.predict import Predictions

_GROUPS: dict[int, Any] = {}

LIMBS = 72  #: 32-bit limbs per exact integer: 2304 bits, above any sum of finite float64s
SAMPLES = 1024  #: scores each rank contributes to the splitters of the sample sort
_SEED = 20240917


def metrics_group() -> Any:
    """The gloo group of the metrics' CPU collectives (None: the default group is gloo)."""
    if dist.get_backend() == "gloo":
        return None
    key = id(dist.distributed_c10d._get_default_group())
    if key not in _GROUPS:  # collective, on the first call (every rank makes the same calls)
        _GROUPS[key] = dist.new_group(backend="gloo")
    return _GROUPS[key]


def allreduce_exact(values: Sequence[int]) -> list[int]:
    """The sums over ranks of arbitrary-precision integers (same count on every rank), exact."""
    t = torch.zeros((len(values), LIMBS), dtype=torch.int64)
    for i, v in enumerate(values):
        a = abs(int(v))
        if a.bit_length() > 32 * LIMBS:
            raise OverflowError(f"{a.bit_length()}-bit integer exceeds {LIMBS} limbs")
        limbs = np.frombuffer(a.to_bytes(4 * LIMBS, "little"), dtype="<u4").astype(np.int64)
        t[i] = torch.from_numpy(limbs if v >= 0 else -limbs)
    dist.all_reduce(t, group=metrics_group())
    return [sum(int(x) << (32 * k) for k, x in enumerate(row) if x) for row in t.tolist()]


def exchange(dest: np.ndarray, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Send row ``i`` of every array to rank ``dest[i]`` (``all_to_all_single``); return the
    rows this rank receives, ordered by source rank (within a source, in the sender's order)."""
    world = dist.get_world_size()
    order = np.argsort(dest, kind="stable")
    send = np.bincount(dest, minlength=world).astype(np.int64)
    recv = torch.empty(world, dtype=torch.int64)
    dist.all_to_all_single(recv, torch.from_numpy(send), group=metrics_group())
    n_in, send_l, recv_l = int(recv.sum()), send.tolist(), recv.tolist()
    out = []
    for a in arrays:
        src = torch.from_numpy(np.ascontiguousarray(a[order]))
        dst = torch.empty((n_in, *src.shape[1:]), dtype=src.dtype)
        dist.all_to_all_single(dst, src, recv_l, send_l, group=metrics_group())
        out.append(dst.numpy())
        del src
    return out


def user_rank(user_id: np.ndarray, world: int) -> np.ndarray:
    """The rank that scores each user's GAUC: ``splitmix64(user_id) % world``."""
    z = np.asarray(user_id).astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z % np.uint64(world)).astype(np.int64)


def _splitters(s: np.ndarray, world: int) -> np.ndarray:
    """``world - 1`` ascending score splitters balancing the ranks' shares (weighted sample)."""
    k = min(SAMPLES, s.size)
    sample = np.full(SAMPLES, np.nan)
    if k:
        idx = np.random.default_rng([_SEED, dist.get_rank()]).choice(s.size, k, replace=False)
        sample[:k] = s[idx]
    mine = torch.from_numpy(np.concatenate((sample, [float(s.size), float(k)])))
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine, group=metrics_group())
    vals, weights = [], []
    for t in parts:
        a = t.numpy()
        n, k_r = a[-2], int(a[-1])
        vals.append(a[:k_r])
        weights.append(np.full(k_r, n / max(k_r, 1)))
    v, w = np.concatenate(vals), np.concatenate(weights)
    if v.size == 0:
        return np.zeros(world - 1)
    o = np.argsort(v, kind="stable")
    v, cw = v[o], np.cumsum(w[o])
    at = np.searchsorted(cw, cw[-1] * np.arange(1, world) / world)
    return v[np.minimum(at, v.size - 1)]


def dist_auc_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int, int]:
    """``(2U, n_pos, n_neg)`` over every rank's targets (exact; `longseq.metrics.auc_counts`)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pos = (np.asarray(labels, dtype=np.float64).reshape(-1) > 0.5).astype(np.uint8)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contains NaN or inf")
    dest = np.searchsorted(_splitters(s, world), s, side="right")
    s, pos = exchange(dest, [s, pos])
    del dest
    u2 = npos = nneg = 0
    if s.size:
        order = np.argsort(s)
        u2_, npos_, nneg_ = sorted_u2(s[order], pos[order] == 1, np.zeros(1, dtype=np.int64))
        u2, npos, nneg = int(u2_[0]), int(npos_[0]), int(nneg_[0])
    del s, pos
    negs = [torch.empty(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(negs, torch.tensor([nneg], dtype=torch.int64), group=metrics_group())
    below = sum(int(t) for t in negs[:rank])  # lower ranks hold strictly lower scores
    u2 += 2 * below * npos
    return tuple(allreduce_exact([u2, npos, nneg]))  # type: ignore[return-value]


def dist_window_metrics(p: Predictions, tasks: list[str]) -> list[dict[str, Any]]:
    """`longseq.eval.window.window_metrics` over the predictions of every rank (each rank
    passes its own); the same rows on every rank. Collective."""
    world = dist.get_world_size()
    n = int(p.request_id.size)
    labels = p.labels.reshape(n, len(tasks))
    scores = p.scores.reshape(n, len(tasks))
    served = p.served_len.astype(np.int64)
    bad = not (np.isfinite(scores).all() and np.isfinite(labels).all())
    head = torch.tensor([int(served.max()) if n else -1, int(bad)], dtype=torch.int64)
    dist.all_reduce(head, op=dist.ReduceOp.MAX, group=metrics_group())
    served_max, bad_somewhere = head.tolist()
    if bad_somewhere:  # raised on every rank: none is left waiting in a collective
        where = "this rank's" if bad else "another rank's"
        raise ValueError(f"scores or labels contain NaN or inf ({where} predictions)")
    # GAUC, users and requests: each user's targets meet on one rank
    uids = np.asarray(p.user_id, dtype=np.int64)
    cols = [uids, np.asarray(p.request_id, dtype=np.int64), scores, (labels > 0.5).view(np.uint8)]
    uid, rid, sc, pos = exchange(user_rank(uids, world), cols)
    del cols, uids
    ints: list[int] = [n, int(served.sum()), int(np.unique(rid).size)]
    del rid
    for k in range(len(tasks)):
        ints += gauc_sums(pos[:, k], sc[:, k], uid).as_ints()
        ints += [log_loss_sum(labels[:, k], scores[:, k]), exact_sum(scores[:, k])]
        ints += [exact_sum(labels[:, k])]
    del uid, sc, pos
    tot = allreduce_exact(ints)
    targets, served_sum, requests = tot[:3]
    if targets == 0:
        raise ValueError("no targets to evaluate on any rank (data.split is empty)")
    rows = []
    for k, task in enumerate(tasks):
        at = 3 + 8 * k
        g = GroupAUCSums(*tot[at : at + 5])
        loss, sum_p, sum_y = tot[at + 5 : at + 8]
        ga = g.result()
        rows.append(
            {
                "task": task,
                "auc": auc_from_counts(*dist_auc_counts(labels[:, k], scores[:, k])),
                "gauc": ga.gauc,
                "gauc_unweighted": ga.gauc_unweighted,
                "gauc_users": ga.groups_used,
                "gauc_users_excluded": ga.groups_excluded,
                "nll": fixed_ratio(loss, targets << FIXED_SHIFT),
                "calibration": calibration_from_sums(sum_p, sum_y),
                "requests": requests,
                "targets": targets,
                "users": g.used + g.excluded,
                "served_len_mean": served_sum / targets,
                "served_len_max": served_max,
            }
        )
    return rows
