"""Target-attention kernels: one readable reference, the exact kernels, one dispatch point.

The generative-recommenders ``ops/`` pattern: every kernel computes the same function (one query
per target over its own request's history, per head) and is tested against `reference` in one
parametrised parity test (tests/model/test_ops.py).

* `kernels`: the `Kernel` enum and the two layouts (``padded``, ``packed``).
* `history`: the two history values a kernel takes (`PaddedHistory`, `PackedHistory`) and the
  match inputs they carry.
* `reference`: the per-target, per-head loop (padded).
* `padded`: ``kv`` and ``absorbed`` (einsum) and ``sdpa`` (torch's fused kernel).
* `pairs`: the packed layout's pair gather (every real (target, event) pair).
* `flex`: the packed layout as one FlexAttention call (block mask from the request offsets).
* `dispatch`: `target_attention(kernel, q, kv, history)`, the one place a kernel is chosen.

Nothing is imported here, so loading one kernel module loads no other (the padded kernels never
load FlexAttention). Pure torch.
"""
