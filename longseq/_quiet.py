"""Silence known, harmless third-party warnings at entry points (never in library code).

Only exact messages we have checked are filtered, so new warnings still show.
"""

from __future__ import annotations

import logging
import warnings


def quiet_known_warnings() -> None:
    """Filter the deprecation chatter of torchrec 1.8 / torch 2.13 that users cannot act on."""
    # torchrec's DMP passes DDP's deprecated `broadcast_buffers` itself
    warnings.filterwarnings("ignore", message=r"`broadcast_buffers` is deprecated")
    # torch.fx helper used by torchrec on every forward
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    # torchrec 1.8 shards tables as ShardedTensor; the deprecation is theirs to act on
    warnings.filterwarnings("ignore", message=r"Please use DTensor instead and we are deprecating")
    # the planner's default storage reservation warns on every dry run; we report its estimate
    warnings.filterwarnings("ignore", message=r"HeuristicalStorageReservation is known to cause")
    # a one-process DCP load (evaluation) is intended, not a mistake
    warnings.filterwarnings("ignore", message=r"torch.distributed is disabled, unavailable")
