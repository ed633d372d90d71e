"""The packed layout's ``flex`` kernel: the whole batch as ONE FlexAttention call per layer.

The ``pairs`` kernel (`longseq.model.ops.pairs`) gathers every real (target, event) pair of a
request into ``P x d`` keys and values: exact and padding-free, but memory-bound. Here the same
function runs as ONE `torch.nn.attention.flex_attention` call over the whole packed batch: the
targets of every request are the query rows ``[N]``, the events of every request the key rows
``[E]``, and a block mask built from the per-request offsets keeps each target to its own
request's events (``req(target) == req(event)``): event blocks holding no event of a row block's
requests are skipped, not computed (a row block that straddles several requests computes all
their events for each of its rows, masked, so row blocks of 16 targets on CPU waste little).
The match and position biases are a ``score_mod`` evaluated inside the kernel (no ``P x h``
tensor); the count channel reads per-request tables of id counts
(`longseq.model.match.count_tables`, from `PackedBatch.count_groups`): O(E + N)
instead of O(P).

FlexAttention is compiled (`torch.compile`, static shapes). To keep the number of compiled
variants small on ragged batches, ``N`` and ``E`` are padded up to a geometric grid of sizes
(`bucket`: at most four sizes per doubling); padded rows belong to no request and are masked
out. torch 2.13 compiles FlexAttention's forward on CPU (the C++ template) and forward and
backward on CUDA (Triton); its CPU backward is not implemented, so a CPU forward that needs
gradients runs the ``pairs`` kernel instead (`use_flex`; the choice is
`longseq.model.ops.dispatch.packed_history`'s), which is the same function (tests/model/test_ops.py
and tests/model/test_flex.py pin both to the reference).

Pure torch: no torchrec or fbgemm import, runs wherever torch compiles FlexAttention.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING

import torch
import torch._dynamo

from longseq.model.ops.history import PackedBatch

if TYPE_CHECKING:
    from longseq.model.ops.history import PackedHistory

#: block sizes of the block mask on CPU: (targets, events). 16 target rows: a request's
#: candidates (16 in the reference data set) fill about one row block, so few blocks straddle
#: requests.
BLOCK = (16, 128)
#: on CUDA: the Triton kernels' row tile (64 or 128) must divide the row block
CUDA_BLOCK = (128, 128)
#: compiled variants dynamo may keep for the flex call (one per bucketed shape and bias set)
RECOMPILE_LIMIT = 256

log = logging.getLogger(__name__)
_SEEN: set[tuple] = set()  # variants compiled: device, dtype, heads, grad mode, shape, biases


def bucket(n: int, block: int) -> int:
    """``n`` rounded up to a multiple of ``block`` on the grid ``{1, 1.25, 1.5, 1.75} x 2^k``
    blocks (so ragged batches reuse a few compiled shapes): up to 4 blocks exact, past 8 blocks
    at most a quarter more than ``n`` (a tiny batch is mostly padding: one target pads to 16)."""
    blocks = max(1, -(-n // block))
    if blocks <= 4:
        return blocks * block
    top = 1 << (blocks.bit_length() - 1)  # largest power of two <= blocks
    step = top // 4
    return -(-blocks // step) * step * block


def use_flex(x: torch.Tensor) -> bool:
    """Whether FlexAttention can run here: always on CUDA; on CPU only without autograd (torch
    2.13 has no CPU backward for it)."""
    return x.is_cuda or not torch.is_grad_enabled()


def _pad_rows(x: torch.Tensor, rows: int, value: int | float = 0) -> torch.Tensor:
    """``x`` with rows appended (filled with ``value``) up to ``rows``."""
    extra = rows - x.shape[0]
    if extra == 0:
        return x
    return torch.cat([x, x.new_full((extra, *x.shape[1:]), value)])


def _count_groups(
    hist_ids: torch.Tensor, tgt_ids: torch.Tensor, req_e: torch.Tensor, req_t: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Per id feature: the (request, id value) group of every event and every target."""
    e = hist_ids.shape[0]
    out = []
    for f in range(hist_ids.shape[1]):
        ids = torch.cat([hist_ids[:, f], tgt_ids[:, f]])
        _, dense = torch.unique(ids, return_inverse=True)  # ids of any size -> [0, U)
        key = torch.cat([req_e, req_t]) * (int(dense.max()) + 1 if ids.numel() else 1) + dense
        _, group = torch.unique(key, return_inverse=True)
        out.append((group[:e], group[e:], int(group.max()) + 1 if group.numel() else 0))
    return out


def packed_batch(
    hist_lengths: torch.Tensor,
    num_targets: torch.Tensor,
    hist_ids: torch.Tensor | None = None,
    tgt_ids: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    count: bool = False,
    block: tuple[int, int] | None = None,
) -> PackedBatch:
    """The layout of ``B`` requests with ``hist_lengths [B]`` events and ``num_targets [B]``
    targets (flat, request-major order, as the lookup returns them).

    ``hist_ids [E, F]`` / ``tgt_ids [N, F]``: for the match bias (and ``count``: the count
    channel's groups); ``positions [E]``: for the position bias / count window. ``block``:
    the block mask's (rows, columns); default `BLOCK` (CPU) or `CUDA_BLOCK`.
    """
    dev = hist_lengths.device
    block = block or (CUDA_BLOCK if dev.type == "cuda" else BLOCK)
    b = hist_lengths.numel()
    e, n = int(hist_lengths.sum()), int(num_targets.sum())
    n_pad, e_pad = bucket(n, block[0]), bucket(e, block[1])
    reqs = torch.arange(b, device=dev)
    req_e = torch.repeat_interleave(reqs, hist_lengths, output_size=e)  # no device sync
    req_t = torch.repeat_interleave(reqs, num_targets, output_size=n)
    qr = _pad_rows(req_t, n_pad, -1)  # padding rows: no request, never equal
    kr = _pad_rows(req_e, e_pad, -2)

    def same_request(_b, _h, q_idx, kv_idx):
        return qr[q_idx] == kr[kv_idx]

    ends = torch.cumsum(hist_lengths, 0)
    mask = request_block_mask(qr, ends - hist_lengths, ends, e_pad, block, same_request)
    ids = None if hist_ids is None or tgt_ids is None else (hist_ids, tgt_ids)
    return PackedBatch(
        n=n,
        e=e,
        n_pad=n_pad,
        e_pad=e_pad,
        block_mask=mask,
        has_history=(hist_lengths > 0)[req_t],
        tgt_ids=None if ids is None else _pad_rows(ids[1], n_pad, -1),
        hist_ids=None if ids is None else _pad_rows(ids[0], e_pad, -2),
        positions=positions,
        count_groups=None if ids is None or not count else _count_groups(*ids, req_e, req_t),
    )


def request_block_mask(
    req_t: torch.Tensor,
    event_start: torch.Tensor,
    event_end: torch.Tensor,
    e_pad: int,
    block: tuple[int, int],
    mask_mod,
):
    """The `BlockMask` of "a target sees its own request's events", built from the offsets.

    ``req_t [N_pad]``: each target row's request (``-1``: padding, at the end), requests in
    ascending order; ``event_start`` / ``event_end [B]``: each request's event range. A row
    block selects exactly the event blocks that hold an event of a request one of its rows
    belongs to (a difference array over the (row block, request) pairs); an event block lying
    inside the one request that owns every row of the row block is *full* (no ``mask_mod``
    call), the others partial. O(row blocks x event blocks), no ``N x E`` tensor (what
    `create_block_mask` would evaluate); tests/model/test_flex.py pins it to that.
    """
    from torch.nn.attention.flex_attention import BlockMask

    qb, kb = block
    nq, nk, dev = req_t.numel() // qb, e_pad // kb, req_t.device
    rows = req_t.view(nq, qb)
    first_of_request = torch.ones_like(rows, dtype=torch.bool)
    first_of_request[:, 1:] = rows[:, 1:] != rows[:, :-1]
    blk, pos = (first_of_request & (rows >= 0)).nonzero(as_tuple=True)
    req = rows[blk, pos]  # every (row block, request) pair
    s, e = event_start[req], event_end[req]
    blk, s, e = blk[e > s], s[e > s], e[e > s]
    diff = torch.zeros(nq, nk + 1, dtype=torch.int32, device=dev)
    one = torch.ones_like(blk, dtype=torch.int32)
    diff.index_put_((blk, s // kb), one, accumulate=True)
    diff.index_put_((blk, -(-e // kb)), -one, accumulate=True)
    selected = diff.cumsum(1)[:, :nk] > 0
    owner = rows[:, 0].clamp(min=0)
    pure = (rows >= 0).all(1) & (rows[:, 0] == rows[:, -1])  # one request owns the row block
    col = torch.arange(nk, device=dev)[None]
    inside = (col * kb >= event_start[owner][:, None]) & (
        (col + 1) * kb <= event_end[owner][:, None]
    )
    full = selected & pure[:, None] & inside

    def listed(m: torch.Tensor):  # per row block: how many, and the columns (ascending) first
        order = torch.sort((~m).to(torch.int32), dim=1, stable=True).indices
        return m.sum(1).to(torch.int32)[None, None], order.to(torch.int32)[None, None]

    (kv_num, kv_idx), (full_num, full_idx) = listed(selected & ~full), listed(full)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod,
        seq_lengths=(req_t.numel(), e_pad),
    )  # fmt: skip


def _flex_core(q, k, v, block_mask, pos_bias, match_w, tgt_ids, hist_ids):
    """``flex_attention`` over ``[1, h, N_pad | E_pad, d_h]`` with the biases as a score_mod."""
    from torch.nn.attention.flex_attention import flex_attention

    def score_mod(score, _b, h, q_idx, kv_idx):
        if pos_bias is not None:
            score = score + pos_bias[h, kv_idx]
        if match_w is not None:
            for f in range(match_w.shape[0]):
                same = tgt_ids[q_idx, f] == hist_ids[kv_idx, f]
                score = score + same.to(score.dtype) * match_w[f, h]
        return score

    biased = pos_bias is not None or match_w is not None
    return flex_attention(q, k, v, score_mod=score_mod if biased else None, block_mask=block_mask)


@cache
def _compiled():
    """`_flex_core` compiled once per process (static shapes: `bucket` bounds the variants)."""
    return torch.compile(_flex_core, dynamic=False)


def flex_attention_packed(
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    history: PackedHistory,
    bias: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """``q [N, h, d_h]`` per-head queries over keys and values ``[E, h, d_h]`` each, laid out by
    ``history.batch`` -> ``[N, h, d_h]``: the ``pairs`` kernel's function as one FlexAttention
    call (a target whose request has no event gets zeros). ``bias``: the layer's
    ``(position [E, h], match_w [F, h])`` terms (`longseq.model.match.AttentionBias.score_terms`;
    either None), added inside the kernel by a ``score_mod``; the ids are ``history.batch``'s."""
    packed = history.batch
    assert packed is not None, "the flex kernel needs a history laid out for it"
    n, h, dh = q.shape
    k, v = kv
    qh = _pad_rows(q, packed.n_pad).transpose(0, 1)[None]  # [1, h, N_pad, d_h]
    kh = _pad_rows(k, packed.e_pad).transpose(0, 1)[None]  # [1, h, E_pad, d_h]
    vh = _pad_rows(v, packed.e_pad).transpose(0, 1)[None]
    position, match_w = bias if bias is not None else (None, None)
    if position is not None:
        position = _pad_rows(position, packed.e_pad).t().contiguous()  # [h, E_pad]
    key = (str(q.device), q.dtype, h, dh, torch.is_grad_enabled(), packed.n_pad, packed.e_pad,
           position is None, match_w is None)  # fmt: skip
    if key not in _SEEN:  # a pause of seconds the first time a bucketed shape is seen
        _SEEN.add(key)
        log.info("compiling FlexAttention for %d x %d (targets x events, bucketed)", *key[5:7])
        if len(_SEEN) > RECOMPILE_LIMIT:
            log.warning("more than %d FlexAttention variants: dynamo runs the rest eagerly "
                        "(dense scores); keep batch shapes steadier", RECOMPILE_LIMIT)  # fmt: skip
    # only the flex call may recompile this often (one variant per bucketed shape)
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        o = _compiled()(
            qh, kh, vh, packed.block_mask, position, match_w, packed.tgt_ids, packed.hist_ids
        )
    return o[0, :, :n].transpose(0, 1) * packed.has_history[:, None, None].to(o.dtype)
