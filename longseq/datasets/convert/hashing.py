"""Counter-based hashing (SplitMix64), vectorized: seeded decisions that depend only on their
keys, never on how the input was cut into blocks or buckets."""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer of ``x`` (any integer array; computed modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_keys(*keys: np.ndarray | int) -> np.ndarray:
    """One 64-bit hash per element of the broadcast ``keys`` (order matters)."""
    arrays = np.broadcast_arrays(*[np.asarray(k, dtype=np.int64) for k in keys])
    h = np.zeros(arrays[0].shape, dtype=np.uint64)
    for a in arrays:
        h = splitmix64(h ^ a.astype(np.uint64))
    return h


def hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform floats in [0, 1) from :func:`hash_keys` (53 bits)."""
    return (hash_keys(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
