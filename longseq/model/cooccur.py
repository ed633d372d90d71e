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

`category_target_loss` is the same contrast with *harder* negatives: a target is compared with
each request's events **of the target's own category** only (``u_{b,c}``, the normalised sum of
request ``b``'s events of category ``c``). When the given category is coarse (a genre holding
several finer topics), "which request is this target's" is mostly answered by the category
alone among in-batch requests; restricted to one category, only the finer topic (which items of
the genre this user picks) tells the requests apart. It uses only the category id every data
set has; targets whose request holds no event of their category, or whose category no other
request holds, do not take part.

The tower keeps the weighted loss of its last training forward (`SequenceTower.pop_aux_loss`);
the training step adds it to the labels' loss (`longseq.train.task.TrainTask`) and logs it as
``aux_loss``.
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


def category_target_loss(
    tgt_rel: torch.Tensor,
    tgt_cat: torch.Tensor,
    request: torch.Tensor,
    hist_rel: torch.Tensor,
    hist_cat: torch.Tensor,
    hist_req: torch.Tensor,
) -> torch.Tensor:
    """In-batch InfoNCE with same-category negatives (see the module doc).

    ``tgt_rel [N, r]`` (category ``tgt_cat [N]``, request ``request [N]``) against the
    normalised sums of the events ``hist_rel [E, r]`` grouped by (request ``hist_req [E]``,
    category ``hist_cat [E]``); a target's candidates are the groups of its own category, its
    positive its own request's. A scalar (0 when no target has a positive and a negative)."""
    zero = tgt_rel.sum() * 0.0
    if tgt_rel.shape[0] == 0 or hist_rel.shape[0] == 0:
        return zero
    span = int(torch.maximum(hist_cat.max(), tgt_cat.max())) + 1
    keys, group = torch.unique(hist_req * span + hist_cat, return_inverse=True)  # [G], [E]
    users = hist_rel.new_zeros(keys.numel(), hist_rel.shape[1]).index_add(0, group, hist_rel)
    g_cat = keys % span
    tgt_key = request * span + tgt_cat
    pos = torch.searchsorted(keys, tgt_key).clamp(max=keys.numel() - 1)  # [N]
    same = g_cat[None, :] == tgt_cat[:, None]  # [N, G]: the candidates
    keep = (keys[pos] == tgt_key) & (same.sum(1) > 1)
    if not bool(keep.any()):
        return zero
    scores = SCALE * tgt_rel[keep] @ F.normalize(users, dim=-1).T
    scores = scores.masked_fill(~same[keep], float("-inf"))
    return F.cross_entropy(scores, pos[keep])


def category_target_reference(
    tgt_rel: torch.Tensor,
    tgt_cat: torch.Tensor,
    num_targets: torch.Tensor,
    hist_rel: torch.Tensor,
    hist_cat: torch.Tensor,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """The readable loop of `category_target_loss` from packed events (``lengths``) and
    targets (``num_targets``)."""
    starts = (lengths.cumsum(0) - lengths).tolist()
    users: dict[tuple[int, int], torch.Tensor] = {}
    for b, (a, n) in enumerate(zip(starts, lengths.tolist())):
        for e in range(a, a + n):
            key = (b, int(hist_cat[e]))
            users[key] = users.get(key, 0) + hist_rel[e]
    terms, t = [], 0
    for b, n in enumerate(num_targets.tolist()):
        for _ in range(n):
            c = int(tgt_cat[t])
            cands = sorted(k for k in users if k[1] == c)
            if (b, c) in users and len(cands) > 1:
                logits = torch.stack(
                    [
                        SCALE * tgt_rel[t] @ (users[k] / users[k].norm().clamp(min=1e-12))
                        for k in cands
                    ]
                )
                terms.append(-torch.log_softmax(logits, 0)[cands.index((b, c))])
            t += 1
    return torch.stack(terms).mean() if terms else tgt_rel.sum() * 0.0
