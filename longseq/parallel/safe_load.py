"""Loading DCP checkpoints without running code from them, or being steered by them.

torch.distributed.checkpoint's `FileSystemReader.read_metadata` reads ``<ckpt>/.metadata`` with a
plain ``pickle.load``, and its `DefaultLoadPlanner.load_bytes` reads non-tensor entries with
``torch.load(weights_only=False)``: a crafted checkpoint could run any code in every job that
loads it (eval, resume, serving, the evaluation callback). Restricting the globals a pickle may
name is not enough: its ``BUILD`` opcode can still set attributes on what it may name (setting
``pathlib.PosixPath._str`` on the class redirected every path the process then built). Here:

* `read_metadata_file` reads ``.metadata`` as data (`longseq.parallel.pickle_data`): the only
  records are the DCP metadata dataclasses (and ``_StorageInfo``), made by their own
  constructors after every field is checked (`longseq.parallel.metadata_schema`); besides them only ``torch.Size`` of
  ints, torch dtypes/layouts/memory formats, paths and plain builtins. No class is called, built
  or changed by the file; anything else raises `UnsafeCheckpointError` naming the file and what
  was refused. Storage entries must name files directly inside the checkpoint folder.
* `SafeFileSystemReader` uses it; `SafeLoadPlanner` reads non-tensor entries with
  ``torch.load(weights_only=True)`` (tensor entries already are).

`safe_dcp_load` is the only way longseq loads a DCP checkpoint.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from longseq.parallel.metadata_schema import METADATA_SCHEMA
from longseq.parallel.pickle_data import RefusedPickle, load_data
from longseq.parallel.untrusted import SymlinkRefused, excerpt, open_no_follow


class UnsafeCheckpointError(ValueError):
    """A checkpoint file holds something a checkpoint must not (code, foreign objects)."""


def read_metadata_file(path: str | Path) -> Metadata:
    """A DCP ``.metadata`` file read as data (`longseq.parallel.pickle_data.load_data` with
    `METADATA_SCHEMA`): no class is called, built or changed by the file; every record's fields
    are checked; storage entries name files directly inside the checkpoint folder. A symbolic
    link is refused."""
    path = Path(path)
    try:
        with open_no_follow(path) as f:
            md = load_data(f, METADATA_SCHEMA)
    except RefusedPickle as e:
        raise UnsafeCheckpointError(
            f"{path}: {e}: a checkpoint's metadata may only hold torch.distributed.checkpoint "
            "metadata records with their fields, torch.Size, torch dtypes and plain builtins "
            "(the file was crafted or corrupted; do not trust this checkpoint)"
        ) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (not a complete DCP checkpoint)") from None
    except SymlinkRefused:
        raise
    except Exception as e:  # truncated, not a pickle, too deep, ...
        raise ValueError(
            f"{path}: unreadable checkpoint metadata ({type(e).__name__}: {excerpt(str(e), 120)})"
        ) from e
    if not isinstance(md, Metadata):
        raise UnsafeCheckpointError(f"{path}: holds a {type(md).__name__}, not DCP Metadata")
    return md


class SafeFileSystemReader(FileSystemReader):
    """`FileSystemReader` whose ``read_metadata`` cannot execute code (`read_metadata_file`)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        metadata = read_metadata_file(os.fspath(path))
        if metadata.storage_meta is None:
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
