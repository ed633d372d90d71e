"""Loading DCP checkpoints without running code from them.

torch.distributed.checkpoint's `FileSystemReader.read_metadata` reads ``<ckpt>/.metadata`` with a
plain ``pickle.load``, and its `DefaultLoadPlanner.load_bytes` reads non-tensor entries with
``torch.load(weights_only=False)``: a crafted checkpoint could run any code in every job that
loads it (eval, resume, the evaluation callback). Here:

* `SafeFileSystemReader` unpickles ``.metadata`` with `MetadataUnpickler`, which resolves only
  the checkpoint metadata classes, ``torch.Size``, torch dtypes/layouts/memory formats and a few
  plain builtins; anything else raises `UnsafeCheckpointError` naming the file and the global.
  It also refuses storage entries whose file lies outside the checkpoint folder.
* `SafeLoadPlanner` reads non-tensor entries with ``torch.load(weights_only=True)`` (tensor
  entries already are).

`safe_dcp_load` is the only way longseq loads a DCP checkpoint.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path, PosixPath, PurePosixPath
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds something a checkpoint must not (code, foreign objects)."""


#: (module, name) pairs the metadata unpickler resolves besides the DCP metadata classes.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("pathlib", "PosixPath"): PosixPath,
    ("pathlib", "PurePosixPath"): PurePosixPath,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
}
_TORCH_VALUE_TYPES = (torch.dtype, torch.layout, torch.memory_format)


class MetadataUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only what DCP metadata consists of (see module doc)."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == dcp_metadata.__name__ and not name.startswith("__"):
            obj = getattr(dcp_metadata, name, None)
            if isinstance(obj, type) and obj.__module__ == module:
                return obj
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_VALUE_TYPES):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"{self.source}: refusing to load {module}.{name}: a checkpoint's metadata may only "
            "hold torch.distributed.checkpoint metadata classes, torch.Size, torch dtypes and "
            "plain builtins (the file was crafted or corrupted; do not trust this checkpoint)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self.source}: unexpected persistent id in metadata")


def read_metadata_file(path: str | Path) -> Metadata:
    """Unpickle a DCP ``.metadata`` file with `MetadataUnpickler` and check what it holds."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            md = MetadataUnpickler(f, str(path)).load()
    except UnsafeCheckpointError:
        raise
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (not a complete DCP checkpoint)") from None
    except Exception as e:  # truncated, not a pickle, a class called with bad arguments, ...
        raise ValueError(f"{path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from e
    if not isinstance(md, Metadata):
        raise UnsafeCheckpointError(f"{path}: holds a {type(md).__name__}, not DCP Metadata")
    for info in (md.storage_data or {}).values():
        rel = getattr(info, "relative_path", None)
        if not isinstance(info, _StorageInfo) or not _plain_name(rel):
            raise UnsafeCheckpointError(
                f"{path}: a storage entry points outside the checkpoint folder ({rel!r})"
            )
    return md


def _plain_name(rel: object) -> bool:
    return (
        isinstance(rel, str) and rel not in ("", ".", "..") and "/" not in rel and "\\" not in rel
    )


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose ``read_metadata`` cannot execute code (`read_metadata_file`)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        metadata = read_metadata_file(path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id  # as FileSystemReader does
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """`DefaultLoadPlanner` that reads non-tensor entries with ``weights_only=True``."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def safe_dcp_load(state: dict[str, Any], path: str | Path, no_dist: bool = False) -> None:
    """``dcp.load(state, checkpoint_id=path)`` with `SafeFileSystemReader` and
    `SafeLoadPlanner`: loads tensors into ``state`` in place, never runs code from the files."""
    dcp.load(
        state,
        storage_reader=SafeFileSystemReader(str(path)),
        planner=SafeLoadPlanner(),
        no_dist=no_dist,
    )
