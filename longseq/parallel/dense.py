"""Data parallelism for the dense (unsharded) part of a DMP-wrapped model: DDP or FSDP2.

TorchRec's `DistributedModelParallel` shards the embedding tables and hands everything else to a
``data_parallel_wrapper``; its default wraps the whole remaining module in DDP. `FSDP2Wrapper`
instead applies ``torch.distributed.fsdp.fully_shard`` (FSDP2, torchtitan style) to the dense
modules: first one FSDP unit per layer module of the tower (its ``shard_layers()``; for STCA the
history FFN and attention of each layer), then each *dense root*, i.e. each largest submodule that holds no sharded embedding module (in
`LongSeqModel`: ``interaction``, which holds tokens, tower and heads). Parameters become
``DTensor`` shards (dim 0) under the same names, so checkpoints (DCP) keep their keys and load
into DDP, FSDP2 or an unsharded model alike. The model code knows nothing of this.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torchrec.distributed.model_parallel import (
    DataParallelWrapper,
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.types import ShardedModule, ShardingEnv

DENSE_MODES = ("ddp", "fsdp2")


def _holds_sharded(module: nn.Module) -> bool:
    return any(isinstance(m, ShardedModule) for m in module.modules())


def dense_roots(root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The largest submodules of ``root`` that hold parameters but no sharded module.

    Raises ``ValueError`` if a module that also holds a sharded module owns parameters directly
    (FSDP2 could only shard them by wrapping the sharded module too).
    """
    if isinstance(root, ShardedModule):
        return
    if not _holds_sharded(root):
        if any(True for _ in root.parameters()):
            yield prefix, root
        return
    own = [n for n, _ in root.named_parameters(recurse=False)]
    if own:
        raise ValueError(
            f"sharding.dense=fsdp2: module {prefix or '<root>'!r} holds parameters {own} next "
            "to a sharded embedding module; move them into a submodule"
        )
    for name, child in root.named_children():
        yield from dense_roots(child, f"{prefix}.{name}" if prefix else name)


def layer_units(module: nn.Module) -> list[nn.Module]:
    """Per-layer FSDP2 units inside ``module``: each tower's ``shard_layers()``
    (`longseq.model.tower.SequenceTower`; STCA: each layer's history FFN and attention)."""
    from longseq.model.tower import SequenceTower

    units: list[nn.Module] = []
    for m in module.modules():
        if isinstance(m, SequenceTower):
            units.extend(m.shard_layers())
    return units


class FSDP2Wrapper(DataParallelWrapper):
    """`DataParallelWrapper` that applies ``fully_shard`` to the dense modules (see module doc).

    Args:
        reshard_after_forward: FSDP2's option for the per-layer units (the dense roots keep
            their parameters gathered between forward and backward, as torchtitan does for the
            root).
    """

    def __init__(self, reshard_after_forward: bool = True) -> None:
        self.reshard_after_forward = reshard_after_forward
        self.units: list[str] = []

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        from torch.distributed.device_mesh import DeviceMesh
        from torch.distributed.fsdp import fully_shard

        pg = env.process_group
        if pg is None:
            raise RuntimeError("sharding.dense=fsdp2 needs a process-group ShardingEnv")
        mesh = DeviceMesh.from_group(pg, device.type)
        root = dmp._dmp_wrapped_module
        roots = list(dense_roots(root))
        for name, module in roots:
            module.to(device)
            names = {id(m): n for n, m in module.named_modules()}
            for unit in layer_units(module):
                fully_shard(unit, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
                self.units.append(f"{name}.{names[id(unit)]}")
            fully_shard(module, mesh=mesh, reshard_after_forward=False)
            self.units.append(name)


def data_parallel_wrapper(mode: str) -> DataParallelWrapper:
    """TorchRec's DDP wrapper (``ddp``) or `FSDP2Wrapper` (``fsdp2``)."""
    if mode == "ddp":
        return DefaultDataParallelWrapper()
    if mode == "fsdp2":
        return FSDP2Wrapper()
    raise ValueError(f"sharding.dense={mode!r}: choose one of {DENSE_MODES}")


def is_fsdp2(module: nn.Module) -> bool:
    """Whether any submodule of ``module`` is an FSDP2 unit."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())
