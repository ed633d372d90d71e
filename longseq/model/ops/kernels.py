"""The attention kernels and the two layouts they run on: the words of ``model.stca.kernel`` and
``model.stca.layout``.

A *layout* is how a batch's histories and targets are laid out: ``padded`` (``[B, L_max]``
events and ``[B, T_max]`` targets, masked) or ``packed`` (the flat ``[E]`` events and ``[N]``
targets of the lookup, no padding). A *kernel* is how one layer's target attention is computed;
each runs on one layout. Every kernel is the same function (exact up to float rounding).
"""

from __future__ import annotations

from enum import StrEnum

#: ``padded`` (``[B, L, d]`` + bool mask) or ``packed`` (``[E, d]`` + lengths)
LAYOUTS = ("padded", "packed")


class Kernel(StrEnum):
    """One layer's target-attention kernel (its layout: `Kernel.layout`)."""

    #: the readable per-target, per-head loop every kernel is tested against (slow)
    REFERENCE = "reference"
    #: keys/values once per request, then ``einsum`` scores and a masked softmax
    KV = "kv"
    #: ``u = (q W_Q) W_Kᵀ``, scores ``u X̃ᵀ``, then ``(α X̃) W_V``: never builds keys/values
    ABSORBED = "absorbed"
    #: the ``kv`` kernel through ``scaled_dot_product_attention`` (torch's fused kernels)
    SDPA = "sdpa"
    #: packed: every real (target, event) pair gathered, a segment softmax per target
    PAIRS = "pairs"
    #: packed: the whole batch as one FlexAttention call (block mask from the request offsets)
    FLEX = "flex"

    @property
    def layout(self) -> str:
        """``packed`` for `PAIRS` and `FLEX`, else ``padded``."""
        return "packed" if self in (Kernel.PAIRS, Kernel.FLEX) else "padded"


def kernels_of(layout: str) -> tuple[str, ...]:
    """The kernels (their config words) that run on ``layout``."""
    return tuple(k.value for k in Kernel if k.layout == layout)


def check_kernel(kernel: str, layout: str, prefix: str) -> None:
    """Raise ``ValueError`` naming ``<prefix>.layout`` / ``<prefix>.kernel`` unless ``kernel``
    is a kernel of ``layout``."""
    if layout not in LAYOUTS:
        raise ValueError(f"{prefix}.layout must be one of {LAYOUTS}, got {layout!r}")
    words = tuple(k.value for k in Kernel)
    if kernel not in words:
        raise ValueError(f"{prefix}.kernel must be one of {words}, got {kernel!r}")
    if Kernel(kernel).layout != layout:
        raise ValueError(
            f"{prefix}.kernel={kernel} runs on the {Kernel(kernel).layout} layout, not "
            f"{prefix}.layout={layout}: with layout={layout} choose one of {kernels_of(layout)}"
        )
