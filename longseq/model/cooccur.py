"""A self-supervised co-occurrence loss on the soft match's relatedness vectors (pure torch).

The click labels teach relatedness only through a weak, second-order signal (docs/results.md,
"Coarse categories: learning relatedness"). Histories say more: consecutive events of a user
come from the same interest far more often than two random events do, so "which event follows
this one" reveals which items belong together, with one example per event and no label.

`cooccur_loss` is an in-batch InfoNCE over *consecutive* events: the event at distance ``d + 1``
from the newest (the anchor) should be closer, in the relatedness space, to its own request's
event at distance ``d`` than to the other requests' events at the same distance ``d``. Aligning
the candidates by distance from the newest means the position part of the tokens cannot tell the
positive apart (every candidate of an anchor sits at the same position). All distances are used
at once, so nothing is sampled (the RNG is not touched): ``[L, B, B]`` scores of width ``r``.

`attach_loss` adds such a loss to the training objective without the trainer knowing: the
tower's output passes through unchanged, and in backward the auxiliary scalar receives the
gradient 1 (it is simply added to whatever loss the output feeds). Its value is not logged; with
gradient accumulation it is counted once per micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: inverse temperature of the InfoNCE over unit vectors
SCALE = 10.0


def by_distance(rel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded events ``rel [B, L, r]`` (oldest first) -> the same indexed by distance from the
    newest ``[B, L, r]`` and its validity ``[B, L]``."""
    b, n = rel.shape[:2]
    d = torch.arange(n, device=rel.device)
    idx = lengths[:, None] - 1 - d[None, :]  # [B, L]
    valid = idx >= 0
    gathered = rel.gather(1, idx.clamp(min=0)[..., None].expand(b, n, rel.shape[-1]))
    return gathered, valid


def cooccur_loss(rel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """In-batch InfoNCE of consecutive events (module doc); ``rel [B, L, r]`` unit vectors,
    padded oldest first, ``lengths [B]`` -> a scalar (0 without a usable pair)."""
    r, valid = by_distance(rel, lengths)
    anchor, cand = r[:, 1:], r[:, :-1]  # anchor at distance d + 1, candidates at d
    ok = valid[:, 1:]  # the anchor (and so its candidate) exists
    scores = SCALE * torch.einsum("adr,cdr->dac", anchor, cand)  # [L-1, B, B]
    scores = scores.masked_fill(~ok.T[:, None, :], float("-inf"))  # candidates that exist
    target = torch.arange(rel.shape[0], device=rel.device).expand(scores.shape[:2])
    use = ok.T & (ok.sum(0) > 1)[:, None]  # anchors with at least one negative
    if not bool(use.any()):
        return rel.sum() * 0.0
    return F.cross_entropy(scores[use], target[use])


def cooccur_reference(rel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The readable loop of `cooccur_loss` (for the parity test)."""
    terms = []
    for d in range(rel.shape[1] - 1):
        rows = [b for b in range(rel.shape[0]) if lengths[b] >= d + 2]
        if len(rows) < 2:
            continue
        for a in rows:
            anchor = rel[a, int(lengths[a]) - 2 - d]
            cands = torch.stack([rel[c, int(lengths[c]) - 1 - d] for c in rows])
            logp = torch.log_softmax(SCALE * cands @ anchor, 0)
            terms.append(-logp[rows.index(a)])
    return torch.stack(terms).mean() if terms else rel.sum() * 0.0


class _Attach(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.aux_like = (aux.shape, aux.dtype, aux.device)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        shape, dtype, device = ctx.aux_like
        return grad, torch.ones(shape, dtype=dtype, device=device)


def attach_loss(x: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged; in backward the scalar ``aux`` gets gradient 1 (it joins the loss)."""
    return _Attach.apply(x, aux)
