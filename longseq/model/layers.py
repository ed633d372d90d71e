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
    """``depth`` SwiGLU blocks; blocks after the first add a residual (``x + FFN(x)``).

    The paper's "FFN depth" ablation (2 -> 4) does not say how blocks are joined; residuals keep
    deeper stacks trainable.
    """

    def __init__(self, d_in: int, d_out: int, ratio: float, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ffn depth must be >= 1, got {depth}")
        self.first = SwiGLU(d_in, d_out, ratio)
        self.rest = nn.ModuleList(SwiGLU(d_out, d_out, ratio) for _ in range(depth - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        for block in self.rest:
            x = x + block(x)
        return x


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
