"""A self-supervised co-occurrence loss on the soft match's relatedness vectors (pure torch).

The click labels teach relatedness only through a weak, second-order signal (docs/results.md,
"Coarse categories: learning relatedness"). Co-occurrence says more: a request's targets and its
history events come from the user's interests far more often than from a random user's, so
"whose history does this target belong to" reveals which items belong together, with no label.

`user_target_loss` is an in-batch InfoNCE: each target's relatedness vector should be closer to
its own request's mean event vector than to the other requests' (the batch's requests are the
candidates). The anchor is a target token (item and category only), so the events' side
information (position, time delta, action) cannot identify the positive: an InfoNCE between
consecutive *events* learns the shared time-delta bucket instead of the topic (measured). Cost:
one ``[N, B]`` product of width ``r``; nothing is sampled (the RNG is not touched).

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


def user_target_loss(
    tgt_rel: torch.Tensor, user_rel: torch.Tensor, request: torch.Tensor
) -> torch.Tensor:
    """In-batch InfoNCE: each target's relatedness vector ``tgt_rel [N, r]`` against every
    request's mean event vector ``user_rel [B, r]`` (normalised here); ``request [N]`` is the
    target's own request. A scalar (0 with fewer than two requests)."""
    if user_rel.shape[0] < 2 or tgt_rel.shape[0] == 0:
        return tgt_rel.sum() * 0.0
    scores = SCALE * tgt_rel @ F.normalize(user_rel, dim=-1).T  # [N, B]
    return F.cross_entropy(scores, request)


def user_target_reference(
    tgt_rel: torch.Tensor, hist_rel: torch.Tensor, lengths: torch.Tensor, num_targets: torch.Tensor
) -> torch.Tensor:
    """The readable loop of `user_target_loss` from packed ``hist_rel [E, r]`` (``lengths``) and
    ``tgt_rel [N, r]`` (``num_targets``)."""
    users = [
        hist_rel[int(a) : int(a + n)].sum(0) for a, n in zip(lengths.cumsum(0) - lengths, lengths)
    ]
    users = [u / u.norm().clamp(min=1e-12) for u in users]
    terms, t = [], 0
    for b, n in enumerate(num_targets.tolist()):
        for _ in range(n):
            logits = torch.stack([SCALE * tgt_rel[t] @ u for u in users])
            terms.append(-torch.log_softmax(logits, 0)[b])
            t += 1
    return torch.stack(terms).mean()


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
