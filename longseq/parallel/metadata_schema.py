"""What a DCP ``.metadata`` pickle may consist of, as a `longseq.parallel.pickle_data.Schema`.

Records: the dataclasses of ``torch.distributed.checkpoint.metadata`` and the file reader's
``_StorageInfo``, each made by its own constructor from the pickled ``__dict__`` after every key
is checked to be one of its fields with a value of the field's type (`_FIELDS`);
``TensorProperties`` from its ``__getstate__`` tuple. Values: torch dtypes, layouts and memory
formats. Calls: ``torch.Size`` of non-negative ints, a layout by name, the memory-format
encoding enum, paths of strings (as ``PurePosixPath``: no file-system methods), ``OrderedDict``,
``set``, ``frozenset``, ``complex`` and ``bytearray`` of plain data.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Any

import torch
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import _MEM_FORMAT_ENCODING as _MEM
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    StorageMeta,
    TensorProperties,
)

from longseq.parallel.pickle_data import Schema


def plain_name(rel: object) -> bool:
    """Whether ``rel`` names a file directly inside a folder (no separator, not ``..``)."""
    return (
        isinstance(rel, str) and rel not in ("", ".", "..") and "/" not in rel and "\\" not in rel
    )


def _ints(args: tuple, what: str) -> tuple[int, ...]:
    if len(args) != 1 or not isinstance(args[0], tuple):
        raise ValueError(f"{what} takes one tuple")
    if not all(type(v) is int and v >= 0 for v in args[0]):
        raise ValueError(f"{what} takes non-negative ints")
    return args[0]


def _layout(args: tuple) -> torch.layout:
    name = args[0] if len(args) == 1 and isinstance(args[0], str) else ""
    value = getattr(torch, name.removeprefix("torch."), None) if name.startswith("torch.") else None
    if not isinstance(value, torch.layout):
        raise ValueError("not the name of a torch layout")
    return value


def _strs(args: tuple, what: str) -> tuple[str, ...]:
    if not all(isinstance(a, str) for a in args):
        raise ValueError(f"{what} takes strings")
    return args


def _items(args: tuple) -> list:
    if args == ():
        return []
    if len(args) != 1 or not isinstance(args[0], list | tuple):
        raise ValueError("takes one list")
    return list(args[0])


def _complex(args: tuple) -> complex:
    if len(args) != 2 or not all(type(a) in (int, float) for a in args):
        raise ValueError("takes two numbers")
    return complex(*args)


def _bytearray(args: tuple) -> bytearray:
    if args == ():
        return bytearray()
    if len(args) == 1 and isinstance(args[0], bytes):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] == "latin-1":
        return bytearray(args[0], "latin-1")
    raise ValueError("takes bytes")


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _is_size(v: Any) -> bool:
    return isinstance(v, torch.Size)


def _plain_data(v: Any, depth: int = 0) -> bool:
    """Strings, numbers, None and containers of them (``planner_data``)."""
    if isinstance(v, str | bytes | int | float | type(None)):
        return True
    if depth < 16 and isinstance(v, list | tuple):
        return all(_plain_data(x, depth + 1) for x in v)
    if depth < 16 and isinstance(v, dict):
        return all(_plain_data(k, depth + 1) and _plain_data(x, depth + 1) for k, x in v.items())
    return False


#: per metadata record: field -> (check of its value, what it must be)
_FIELDS: dict[type, dict[str, tuple[Any, str]]] = {
    dcp_metadata.Metadata: {
        "state_dict_metadata": (
            lambda v: (
                isinstance(v, dict)
                and all(
                    isinstance(k, str)
                    and isinstance(x, dcp_metadata.TensorStorageMetadata | BytesStorageMetadata)
                    for k, x in v.items()
                )
            ),
            "a dict of names to tensor or bytes storage metadata",
        ),
        "planner_data": (_plain_data, "plain data"),
        "storage_data": (
            lambda v: (
                v is None
                or isinstance(v, dict)
                and all(
                    isinstance(k, dcp_metadata.MetadataIndex) and isinstance(x, _StorageInfo)
                    for k, x in v.items()
                )
            ),
            "a dict of MetadataIndex to _StorageInfo",
        ),
        "storage_meta": (lambda v: v is None or isinstance(v, StorageMeta), "StorageMeta"),
        "version": (lambda v: v is None or isinstance(v, str), "a string"),
    },
    dcp_metadata.TensorStorageMetadata: {
        "properties": (lambda v: isinstance(v, dcp_metadata.TensorProperties), "properties"),
        "size": (_is_size, "a torch.Size"),
        "chunks": (
            lambda v: (
                isinstance(v, list)
                and all(isinstance(c, dcp_metadata.ChunkStorageMetadata) for c in v)
            ),
            "a list of ChunkStorageMetadata",
        ),
    },
    BytesStorageMetadata: {},
    dcp_metadata.ChunkStorageMetadata: {
        "offsets": (_is_size, "a torch.Size"),
        "sizes": (_is_size, "a torch.Size"),
    },
    dcp_metadata.MetadataIndex: {
        "fqn": (lambda v: isinstance(v, str), "a string"),
        "offset": (lambda v: v is None or _is_size(v), "a torch.Size"),
        "index": (lambda v: v is None or type(v) is int and v >= 0, "an int >= 0"),
    },
    StorageMeta: {
        "checkpoint_id": (lambda v: v is None or isinstance(v, str | PurePosixPath), "a path"),
        "save_id": (lambda v: v is None or isinstance(v, str), "a string"),
        "load_id": (lambda v: v is None or isinstance(v, str), "a string"),
        "modules": (lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v), "names"),
    },
    _StorageInfo: {
        "relative_path": (plain_name, "a file name inside the checkpoint folder"),
        "offset": (lambda v: type(v) is int and v >= 0, "an int >= 0"),
        "length": (lambda v: type(v) is int and v >= 0, "an int >= 0"),
        "transform_descriptors": (
            lambda v: (
                v is None or isinstance(v, list | tuple) and all(isinstance(d, str) for d in v)
            ),
            "strings",
        ),
    },
}


def _record(cls: type) -> Any:
    """The maker of one metadata dataclass from its pickled ``__dict__``: every key a field of
    ``cls`` with a value of the field's type, then ``cls(**fields)``."""
    fields = _FIELDS[cls]

    def make(state: Any) -> Any:
        if state is None:  # no BUILD: the pickler writes none for an empty __dict__
            state = {}
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # (dict, no slot state)
        _check(isinstance(state, dict), "its state is not a dict of fields")
        for k, v in state.items():
            _check(k in fields, f"unknown field {str(k)[:40]!r}")
            check, what = fields[k]
            _check(check(v), f"field {k!r} is not {what}")
        return cls(**state)

    return make


def _tensor_properties(state: Any) -> TensorProperties:
    """`TensorProperties` from its ``__getstate__`` tuple (what its ``__setstate__`` reads)."""
    _check(isinstance(state, tuple) and len(state) == 5, "its state is not a 5-tuple")
    dtype, layout, requires_grad, mem, pin = state
    _check(isinstance(dtype, torch.dtype), "dtype is not a torch dtype")
    _check(isinstance(layout, torch.layout), "layout is not a torch layout")
    _check(type(requires_grad) is bool and type(pin) is bool, "flags are not booleans")
    formats = {
        _MEM.TORCH_CONTIGUOUS_FORMAT: torch.contiguous_format,
        _MEM.TORCH_CHANNELS_LAST: torch.channels_last,
        _MEM.TORCH_PRESERVE_FORMAT: torch.preserve_format,
    }
    _check(isinstance(mem, _MEM) and mem in formats, "not a memory format encoding")
    return TensorProperties(dtype, layout, requires_grad, formats[mem], pin)


def _enum(args: tuple) -> _MEM:
    _check(len(args) == 1 and type(args[0]) is int, "takes one int")
    return _MEM(args[0])


def _schema() -> Schema:
    md = dcp_metadata.__name__
    records: dict[tuple[str, str], Any] = {
        (cls.__module__, cls.__name__): _record(cls) for cls in _FIELDS
    }
    records[(md, "TensorProperties")] = _tensor_properties
    values = {
        ("torch", name): getattr(torch, name)
        for name in dir(torch)
        if isinstance(getattr(torch, name, None), torch.dtype | torch.layout | torch.memory_format)
    }
    calls = {
        ("torch", "Size"): lambda a: torch.Size(_ints(a, "torch.Size")),
        ("torch.serialization", "_get_layout"): _layout,
        (md, "_MEM_FORMAT_ENCODING"): _enum,
        ("pathlib", "PosixPath"): lambda a: PurePosixPath(*_strs(a, "a path")),
        ("pathlib", "PurePosixPath"): lambda a: PurePosixPath(*_strs(a, "a path")),
        ("collections", "OrderedDict"): lambda a: OrderedDict(_items(a)),
        ("builtins", "set"): lambda a: set(_items(a)),
        ("builtins", "frozenset"): lambda a: frozenset(_items(a)),
        ("builtins", "complex"): _complex,
        ("builtins", "bytearray"): _bytearray,
    }
    value_types = (torch.Size, torch.layout, torch.dtype, torch.memory_format, _MEM, PurePosixPath)
    return Schema(values=values, calls=calls, records=records, value_types=value_types)


#: What a DCP ``.metadata`` pickle may consist of (`longseq.parallel.pickle_data.Schema`).
METADATA_SCHEMA = _schema()
