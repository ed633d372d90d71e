"""Every attention kernel of `longseq.model.ops` against the reference kernel, through the one
dispatch point `target_attention`: forward and gradients, on ragged requests (an empty history,
a request without targets) with a per-pair logit bias (id matches and a per-event term, in the
form each kernel reads it).

``flex``: FlexAttention on CPU has a forward only (torch 2.13), so its forward is checked under
``no_grad`` and its gradient case checks that autograd on CPU takes the ``pairs`` kernel (the
training fallback); on CUDA (when the machine has one) both run FlexAttention itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.ops.dispatch import packed_history, project_history, target_attention
from longseq.model.ops.history import PackedHistory, PaddedHistory, match_padded, match_pairs
from longseq.model.ops.kernels import Kernel, check_kernel, kernels_of
from longseq.model.ops.padded import AbsorbedKV

HIST = torch.tensor([5, 0, 7, 1])  # a request without history
TGTS = torch.tensor([2, 3, 0, 2])  # a request without targets
H, DH, F = 2, 3, 2
D = H * DH
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass
class Leaves:
    """The inputs every kernel is built from (the tensors gradients are compared on)."""

    x: torch.Tensor  # [E, d] encoded history
    w_k: nn.Linear
    w_v: nn.Linear
    q: torch.Tensor  # [N, h, d_h] per-head queries
    pos: torch.Tensor  # [E, h] per-event logit term
    match_w: torch.Tensor  # [F, h] weight of a same-id match
    hist_ids: torch.Tensor  # [E, F]
    tgt_ids: torch.Tensor  # [N, F]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"x": self.x, "w_k": self.w_k.weight, "w_v": self.w_v.weight, "q": self.q,
                "pos": self.pos, "match_w": self.match_w}  # fmt: skip


def _leaves(dtype: torch.dtype, device: str, seed: int = 0) -> Leaves:
    g = torch.Generator().manual_seed(seed)
    e, n = int(HIST.sum()), int(TGTS.sum())

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype)

    w_k, w_v = nn.Linear(D, D, bias=False), nn.Linear(D, D, bias=False)
    for w in (w_k, w_v):
        w.weight = nn.Parameter(leaf(D, D))
    return Leaves(
        x=leaf(e, D).requires_grad_(), w_k=w_k, w_v=w_v, q=leaf(n, H, DH).requires_grad_(),
        pos=leaf(e, H).requires_grad_(), match_w=leaf(F, H).requires_grad_(),
        hist_ids=torch.randint(0, 3, (e, F), generator=g).to(device),
        tgt_ids=torch.randint(0, 3, (n, F), generator=g).to(device),
    )  # fmt: skip


def _padded(kernel: Kernel, lv: Leaves):
    """``(q, kv, history, bias)`` of a padded kernel, and the map of its output to ``[N, h, d_h]``."""
    hist, tgts = HIST.to(lv.x.device), TGTS.to(lv.x.device)
    lm, tm = int(hist.max()), int(tgts.max())
    mask = torch.arange(lm, device=hist.device)[None] < hist[:, None]
    xp = jagged_to_padded(lv.x, hist, lm)
    match = match_padded(
        jagged_to_padded(lv.hist_ids, hist, lm), jagged_to_padded(lv.tgt_ids, tgts, tm)
    )
    pos = jagged_to_padded(lv.pos, hist, lm)  # [B, L, h]
    bias = (match.to(lv.x.dtype) @ lv.match_w).movedim(-1, 1) + pos.transpose(1, 2)[:, :, None]
    kv = project_history(kernel, xp, lv.w_k, lv.w_v, H)
    if kernel is Kernel.ABSORBED:
        kv = AbsorbedKV(kv, lv.w_k.weight, lv.w_v.weight)
    q = jagged_to_padded(lv.q.flatten(1), tgts, tm).view(len(tgts), tm, H, DH)
    return (
        q,
        kv,
        PaddedHistory(mask),
        bias,
        lambda o: padded_to_jagged(o.flatten(2), tgts).view(-1, H, DH),
    )


def _packed(kernel: Kernel, lv: Leaves):
    """The same for a packed kernel: the history laid out by `packed_history` (which decides
    whether ``flex`` runs here), the bias in that kernel's form."""
    hist, tgts = HIST.to(lv.x.device), TGTS.to(lv.x.device)
    ran, history = packed_history(kernel, hist, tgts, lv.q, None, lv.hist_ids, lv.tgt_ids)
    if ran is Kernel.FLEX:
        bias = (lv.pos, lv.match_w)  # a score_mod inside the kernel
    else:
        pair_t, pair_e = history.pairs
        match = match_pairs(lv.hist_ids, lv.tgt_ids, pair_t, pair_e)
        bias = match.to(lv.x.dtype) @ lv.match_w + lv.pos[pair_e]  # [P, h]
    kv = project_history(ran, lv.x, lv.w_k, lv.w_v, H)
    return ran, (lv.q, kv, history, bias, lambda o: o)


def _run(kernel: Kernel, lv: Leaves) -> tuple[Kernel, torch.Tensor]:
    """The kernel that ran and its output ``[N, h, d_h]``, through `target_attention`."""
    if kernel.layout == "packed":
        kernel, (q, kv, history, bias, flat) = _packed(kernel, lv)
    else:
        q, kv, history, bias, flat = _padded(kernel, lv)
    return kernel, flat(target_attention(kernel, q, kv, history, bias))


def _reference(lv: Leaves) -> torch.Tensor:
    return _run(Kernel.REFERENCE, lv)[1]


def test_every_kernel_is_covered_and_has_a_layout():
    """A new kernel joins the parametrisation below by being in the enum."""
    assert {k.layout for k in Kernel} == {"padded", "packed"}
    assert set(kernels_of("padded")) | set(kernels_of("packed")) == {k.value for k in Kernel}
    for k in Kernel:
        check_kernel(k.value, k.layout, "model.stca")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", list(Kernel), ids=str)
def test_kernel_forward_equals_the_reference(kernel: Kernel, device: str):
    flex = kernel is Kernel.FLEX  # FlexAttention takes fp32 (and narrower), not fp64
    lv = _leaves(torch.float32 if flex else torch.float64, device)
    ref = _leaves(torch.float64, device)
    with torch.no_grad():
        ran, got = _run(kernel, lv)
        want = _reference(ref)
    assert ran is kernel  # without autograd every kernel runs as itself, flex included
    tol = 1e-5 if flex else 1e-10
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    req = torch.repeat_interleave(torch.arange(len(HIST)), TGTS).to(device)
    empty = HIST.to(device)[req] == 0  # targets of a request without history: exactly zero
    assert empty.any() and torch.equal(got[empty], torch.zeros_like(got[empty]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", list(Kernel), ids=str)
def test_kernel_gradients_equal_the_reference(kernel: Kernel, device: str):
    flex = kernel is Kernel.FLEX and device == "cuda"
    lv = _leaves(torch.float32 if flex else torch.float64, device)
    ref = _leaves(torch.float64, device)
    ran, got = _run(kernel, lv)
    if kernel is Kernel.FLEX:  # FlexAttention's backward: CUDA only; CPU trains with pairs
        assert ran is (Kernel.FLEX if device == "cuda" else Kernel.PAIRS)
    weights = torch.linspace(-1, 1, got.numel(), device=device).view_as(got)
    (got * weights.to(got.dtype)).sum().backward()
    (_reference(ref) * weights.double()).sum().backward()
    tol = 1e-4 if flex else 1e-9
    for name, t in lv.tensors().items():
        want = ref.tensors()[name].grad
        assert want is not None and want.abs().sum() > 0, name
        torch.testing.assert_close(t.grad.double(), want, rtol=tol, atol=tol, msg=name)


def test_the_parity_can_fail():
    """The reference sees the bias and the mask: dropping either changes the output."""
    lv = _leaves(torch.float64, "cpu")
    with torch.no_grad():
        want = _reference(lv)
        q, kv, history, bias, flat = _padded(Kernel.KV, lv)
        assert not torch.allclose(flat(target_attention(Kernel.KV, q, kv, history)), want)
        full = PaddedHistory(torch.ones_like(history.mask))
        assert not torch.allclose(flat(target_attention(Kernel.KV, q, kv, full, bias)), want)


def test_a_kernel_refuses_the_other_layouts_history():
    lv = _leaves(torch.float64, "cpu")
    q, kv, history, bias, _ = _padded(Kernel.KV, lv)
    with pytest.raises(TypeError, match="pairs kernel takes a PackedHistory"):
        target_attention(Kernel.PAIRS, q, kv, history, bias)
    _, pairs = packed_history(Kernel.PAIRS, HIST, TGTS, lv.q)
    with pytest.raises(ValueError, match="not laid out for the flex kernel"):
        target_attention(Kernel.FLEX, lv.q, (lv.x, lv.x), pairs)
    with pytest.raises(ValueError, match="padded kernel"):
        packed_history(Kernel.KV, HIST, TGTS, lv.q)
    assert isinstance(pairs, PackedHistory) and pairs.n == int(TGTS.sum())
