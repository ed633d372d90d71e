"""Target attention with the id-match bias at the cost of plain attention plus the matched
events: the ``tables`` path of serving (`longseq.model.ops.tables`).

The match bias multiplies each event's softmax term by ``c_tj = exp(sum_f beta_f m_f(t, j))``
(``m_f``: event ``j`` shares the candidate's id of feature ``f``). Writing ``a_tj`` for the plain
logit (``q·k / sqrt(d_h)`` plus the position bias), per head:

    o_t = (sum_j e^{a_tj} c_tj v_j) / (sum_j e^{a_tj} c_tj)
        = (o_t' + N_t) / (1 + D_t),   N_t = sum_{j in M_t} w_tj e^{a_tj - lse_t} v_j,
                                      D_t = sum_{j in M_t} w_tj e^{a_tj - lse_t}

with ``o_t'`` and ``lse_t`` the plain attention's output and log-sum-exp over all ``L`` events
(one fused call for every candidate), ``M_t`` the events that share an id with the candidate and
``w_tj = c_tj - 1``, split feature by feature as
``c - 1 = sum_f (e^{beta_f m_f} - 1) prod_{f' before f} e^{beta_f' m_f'}`` (the category
first: the largest groups). The candidates that share feature ``f``'s id and the earlier
features' ids share their matched events and those events' weights, the earlier factors being
log-weights added to the logits; so a large group is one more fused attention call over its
events for all its candidates at once, and small groups are gathered per (candidate, matched
event) pair. A candidate thus pays the attention it pays anyway plus its matched events, not a
pass over all ``L`` to build the bias. Where ``1 + D`` is small (negative weights cancelling
most of the mass) the division would amplify rounding, and where a huge weight overflows the sums
are not finite: those candidates are recomputed with the dense bias, so every result equals the
padded kernels' to float rounding (tests/model/test_match_tables.py). Pure torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from longseq.model.ops.history import match_padded
from longseq.model.ops.tables import TableHistory

#: a group of candidates with the same ids whose (candidates x matched events) reach this is one
#: fused attention call; smaller groups are gathered pair by pair
GROUP_PAIRS = 4096
#: candidates whose ``1 + D`` falls below this in any head are recomputed with the dense bias:
#: dividing by ``1 + D`` multiplies the rounding error of the plain part by up to ``1 / MIN_DENOM``
MIN_DENOM = 0.25
#: (candidate, event) pairs gathered at once
PAIR_CHUNK = 1 << 16
#: from this many queries on, the fused kernel takes the position bias as one more key dimension
#: (a copy of the keys) instead of a broadcast mask, which halves its speed at 512 queries on CPU
FOLD_MIN = 64


def _flash_cpu():  # noqa: ANN202 - the op or None
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def attend_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pb: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention with its log-sum-exp: ``q [h, n, d_h]`` over ``k, v [h, m, d_h]``
    (``m >= 1``) with an optional per-event logit bias ``pb [h, m]`` -> ``(o [h, n, d_h],
    lse [h, n])``. On CPU the fused flash kernel (which returns the log-sum-exp), elsewhere the
    readable form."""
    flash = _flash_cpu()
    if q.shape[1] == 0:
        return q.new_zeros(q.shape), q.new_zeros(q.shape[:2])
    if flash is not None and q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16):
        h, n, dh = q.shape
        mask = None
        if pb is not None and n >= FOLD_MIN:  # the bias as one more key dimension, no mask
            q = torch.cat([q, q.new_ones(h, n, 1)], -1)
            k = torch.cat([k, (pb / scale)[..., None]], -1)
            v = F.pad(v, (0, 1))
        elif pb is not None:
            mask = pb[None, :, None, :].expand(1, h, n, pb.shape[-1])
        o, lse = flash(q[None], k[None], v[None], 0.0, False, attn_mask=mask, scale=scale)
        return o[0, ..., :dh], lse[0].to(q.dtype)
    s = torch.einsum("hne,hme->hnm", q, k) * scale
    s = s if pb is None else s + pb[:, None, :]
    lse = torch.logsumexp(s, -1)
    return torch.einsum("hnm,hme->hne", torch.exp(s - lse[..., None]), v), lse


def _pairs(lo: torch.Tensor, hi: torch.Tensor, cands: torch.Tensor, order: torch.Tensor):  # noqa: ANN202
    """The (candidate, event) pairs of ``cands``' matches: ``order[lo[t]:hi[t]]`` each."""
    counts = (hi - lo)[cands]
    pair_t = torch.repeat_interleave(cands, counts)
    starts = torch.cumsum(counts, 0) - counts
    offset = torch.arange(pair_t.numel(), device=lo.device) - torch.repeat_interleave(
        starts, counts
    )
    return pair_t, order[lo[pair_t] + offset]


def table_attention(
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    history: TableHistory,
    terms: tuple[torch.Tensor | None, torch.Tensor | None],
    heads_first: bool,
) -> torch.Tensor:
    """One request's candidates ``q [1, T, h, d_h]`` over its keys and values (``[1, L, h, d_h]``
    each, or ``[1, h, L, d_h]`` with ``heads_first``: the ``sdpa`` state) with the layer's
    ``terms = (position bias [L, h] or None, match weights [F, h])``
    (`TableHistory.logit_bias`) -> ``[1, T, h, d_h]``: the padded kernels' output with the same
    biases (see the module doc)."""
    # [h, L, d_h] for the fused calls, [L, h, d_h] for the pair gathers: views either way (the
    # fused kernel reads strided keys faster than a copy of them costs)
    if heads_first:
        kh, vh = kv[0][0], kv[1][0]
        k, v = kh.transpose(0, 1), vh.transpose(0, 1)
    else:
        k, v = kv[0][0], kv[1][0]
        kh, vh = k.transpose(0, 1), v.transpose(0, 1)
    if k.shape[0] == 0 or q.shape[1] == 0:  # no event, or no candidate (the fused kernel
        return q.new_zeros(q.shape)  # cannot take 0 queries)
    position, match_w = terms
    assert match_w is not None  # the tables path is the match bias's
    pb = None if position is None else position.to(q.dtype)  # [L, h]
    beta = match_w.to(q.dtype)  # [F, h]
    scale = 1.0 / math.sqrt(q.shape[-1])
    qh = q[0].transpose(0, 1).contiguous()  # [h, T, d_h]
    out, lse = attend_lse(qh, kh, vh, None if pb is None else pb.T, scale)
    acc = _Terms(q[0], k, v, qh, kh, vh, pb, lse.T.contiguous(), scale)
    feats = list(range(beta.shape[0]))[::-1]  # the category first: the largest groups
    for i, f in enumerate(feats):
        lo, hi, order = history.lo[f], history.hi[f], history.tables.order[f]
        counts = hi - lo
        has = torch.nonzero(counts > 0).flatten()
        if not has.numel():
            continue
        # candidates that share this id and the earlier features' ids share their matched
        # events and those events' weights: one group each
        key = torch.stack([history.tgt_ids[has, g] for g in feats[: i + 1]], -1)
        _, inv, size = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
        per_group = counts[has].new_zeros(size.numel()).scatter_(0, inv, counts[has])
        grouped = size * per_group >= GROUP_PAIRS
        for u in torch.nonzero(grouped).flatten().tolist():
            cands = has[inv == u]
            first = int(cands[0])
            ev = order[int(lo[first]) : int(hi[first])]
            acc.group(cands, ev, _earlier(history, beta, feats[:i], ev, first), beta[f])
        pair_t, pair_e = _pairs(lo, hi, has[~grouped[inv]], order)
        for s in range(0, pair_t.numel(), PAIR_CHUNK):
            pt, pe = pair_t[s : s + PAIR_CHUNK], pair_e[s : s + PAIR_CHUNK]
            log_w = None
            for g in feats[:i]:  # the earlier features' factors, as log-weights [P, h]
                same = (history.hist_ids[pe, g] == history.tgt_ids[pt, g]).to(beta.dtype)
                term = same[:, None] * beta[g][None, :]
                log_w = term if log_w is None else log_w + term
            acc.pairs(pt, pe, log_w, beta[f])
    denom = 1 + acc.den  # [T, h]
    result = (out.transpose(0, 1) + acc.num) / denom[..., None]  # [T, h, d_h]
    finite = torch.isfinite(denom) & torch.isfinite(acc.num).all(-1)  # huge weights overflow
    bad = ((denom < MIN_DENOM) | ~finite).any(1)  # [T]
    if bool(bad.any()):
        cands = torch.nonzero(bad).flatten()
        dense = _dense(
            qh[:, cands], kh, vh, None if pb is None else pb.T, beta, history, cands, scale
        )
        result[cands] = dense.transpose(0, 1)
    return result[None]


class _Terms:
    """The corrections ``N`` ``[T, h, d_h]`` and ``D`` ``[T, h]`` of the module doc, summed
    group by group and pair by pair (relative to each candidate's plain ``lse``). Rows
    ``[T | L, h, d_h]`` for the pair gathers (one row per candidate / event), heads first
    ``[h, T | L, d_h]`` for the fused calls."""

    def __init__(self, q, k, v, qh, kh, vh, pb, lse, scale: float) -> None:  # noqa: ANN001
        self.q, self.k, self.v, self.qh, self.kh, self.vh = q, k, v, qh, kh, vh
        self.pb, self.lse, self.scale = pb, lse, scale  # [L, h] or None, [T, h]
        self.num = torch.zeros_like(q)
        self.den = torch.zeros_like(lse)

    def group(self, cands, ev, extra, beta) -> None:  # noqa: ANN001
        """Candidates ``cands`` whose matched events are ``ev``, each event's term weighted by
        ``(e^beta - 1) e^extra`` (``extra [m, h]``: the earlier features' log-factors)."""
        pb = None if self.pb is None else self.pb[ev]
        if extra is not None:
            pb = extra if pb is None else pb + extra
        pb = None if pb is None else pb.T
        o, lse = attend_lse(self.qh[:, cands], self.kh[:, ev], self.vh[:, ev], pb, self.scale)
        w = torch.expm1(beta)[None, :] * torch.exp(lse.T - self.lse[cands])  # [n, h]
        self.num[cands] += w[..., None] * o.transpose(0, 1)
        self.den[cands] += w

    def pairs(self, pt, pe, log_w, beta) -> None:  # noqa: ANN001
        """(candidate, event) pairs ``pt``, ``pe`` with log-factors ``log_w [P, h]`` (or None)."""
        a = (self.q[pt] * self.k[pe]).sum(-1) * self.scale - self.lse[pt]  # [P, h]
        a = a if self.pb is None else a + self.pb[pe]
        a = a if log_w is None else a + log_w
        e = torch.expm1(beta)[None, :] * torch.exp(a)
        self.num.index_add_(0, pt, e[..., None] * self.v[pe])
        self.den.index_add_(0, pt, e)


def _earlier(history: TableHistory, beta, feats, ev, cand: int):  # noqa: ANN001, ANN202
    """``[m, h]`` log-factors of the events ``ev`` from the features taken before (None: none)."""
    out = None
    for g in feats:
        same = (history.hist_ids[ev, g] == history.tgt_ids[cand, g]).to(beta.dtype)
        term = same[:, None] * beta[g][None, :]
        out = term if out is None else out + term
    return out


def _dense(q, k, v, pb, match_w, history: TableHistory, cands, scale) -> torch.Tensor:  # noqa: ANN001
    """``cands``' outputs ``[h, n, d_h]`` with the bias built densely (the padded kernels' form)."""
    match = match_padded(history.hist_ids[None], history.tgt_ids[cands][None])[0].to(q.dtype)
    s = torch.einsum("hne,hme->hnm", q, k) * scale + (match @ match_w.to(q.dtype)).permute(2, 0, 1)
    s = s if pb is None else s + pb[:, None, :]
    return torch.einsum("hnm,hme->hne", torch.softmax(s, -1), v)
