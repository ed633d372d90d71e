"""Baseline towers under the tower protocol of `longseq.model.tower` (as STCA is).

Each is pure torch (no torchrec/fbgemm) and request-level: whatever depends on the history only
is its user state (``encode_user``), computed once per request row and shared by that row's ``T``
targets (``score``); ``forward(hist, hist_mask, tgt) -> z [B,T,d]`` is both. Each is selectable as
``model.tower=<name>`` through its one entry in `longseq.model.model.TOWERS` (how to add a
tower: see there).

* `MeanPoolingTower`: masked mean of a projected history, fused with the target.
* `DINTower`: DIN's activation unit (MLP over ``[h, t, h-t, h*t]``, no softmax), optionally over
  the last ``N`` events only (the "DIN (Recent N)" baseline).
* `SIMTower`: SIM's hard search (the target's category, most recent ``top_k``), then target
  attention over the retrieved events; it also takes the category ids (``id_features``).
* `TransformerTower`: a quadratic self-attention encoder over the history, then one STCA-style
  target-attention readout per target: the paper's architectural foil.
"""

from longseq.model.baselines.din import DINConfig, DINTower
from longseq.model.baselines.pooling import MeanPoolingConfig, MeanPoolingTower
from longseq.model.baselines.sim import SIMConfig, SIMTower
from longseq.model.baselines.transformer import TransformerConfig, TransformerTower

__all__ = [
    "DINConfig",
    "DINTower",
    "MeanPoolingConfig",
    "MeanPoolingTower",
    "SIMConfig",
    "SIMTower",
    "TransformerConfig",
    "TransformerTower",
]
