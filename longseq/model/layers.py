"""Small building blocks shared by the towers: SwiGLU FFN and jagged <-> padded helpers.

Pure torch (no torchrec, no fbgemm), so the towers run on any device torch supports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``((x W_u) * SiLU(x W_v)) W_o`` with hidden width ``ratio * d_in`` (paper §1.3)."""

    def __init__(self, d_in: int, d_out: int | None = None, ratio: float = 2.0) -> None:
        super().__init__()
        hidden = max(1, int(round(ratio * d_in)))
        self.w_uv = nn.Linear(d_in, 2 * hidden, bias=False)  # W_u and W_v fused in one GEMM
        self.w_o = nn.Linear(hidden, d_out or d_in, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.w_uv(x).chunk(2, dim=-1)
        return self.w_o(u * F.silu(v))


class FFNStack(nn.Module):
    """``depth`` SwiGLU blocks, each with a residual connection when ``residual`` is set, and
    ``dropout`` on each block's output (the residual branch: ``x + Dropout(SwiGLU(x))``).

    The paper's SwiGLU FFN has no stated residual (§6.4 lists it as open). Without one, a block
    fed small activations has a small Jacobian (``u * SiLU(v)`` is quadratic near 0), and the
    STCA stack (history FFN -> attention -> output FFN) multiplies several of them: gradients to
    the history side vanish at initialisation (measured: ~1e-7 at the first attention output),
    and the model never learns to match targets against the history. ``x + FFN(x)`` keeps an
    identity path; it is the default.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        ratio: float,
        depth: int,
        residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ffn depth must be >= 1, got {depth}")
        if residual and d_in != d_out:
            raise ValueError(f"a residual FFN needs d_in == d_out, got {d_in} -> {d_out}")
        self.residual = residual
        self.blocks = nn.ModuleList(
            SwiGLU(d_in if i == 0 else d_out, d_out, ratio) for i in range(depth)
        )
        self.drop = maybe_dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            y = self.drop(block(x))
            x = x + y if self.residual else y
        return x


def maybe_dropout(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or ``nn.Identity`` for ``p == 0`` (then no random numbers are drawn,
    so a model without dropout computes exactly what it did before the option existed). Neither
    has parameters: checkpoints do not change. Off in ``eval()`` mode either way."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    return nn.Dropout(p) if p > 0 else nn.Identity()


def padded_index(lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``[B, max_len]`` of valid slots and the flat jagged index of each valid slot."""
    pos = torch.arange(max_len, device=lengths.device)
    mask = pos.unsqueeze(0) < lengths.unsqueeze(1)
    return mask, mask.flatten().nonzero().squeeze(1)


def jagged_to_padded(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[sum(lengths), D]`` -> ``[B, max_len, D]`` (zeros in padding)."""
    b = lengths.numel()
    mask, flat = padded_index(lengths, max_len)
    out = values.new_zeros(b * max_len, values.shape[-1])
    out[flat] = values
    return out.view(b, max_len, values.shape[-1])


def padded_to_jagged(padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[B, T, D]`` -> ``[sum(lengths), D]`` keeping the first ``lengths[b]`` rows of each b."""
    b, t = padded.shape[:2]
    mask, flat = padded_index(lengths, t)
    return padded.reshape(b * t, *padded.shape[2:])[flat]
