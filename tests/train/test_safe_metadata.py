"""A DCP ``.metadata`` is read as data (issue 25, case 1): the pickle's BUILD can set no
attribute on any class or object, records are made by their own constructors with their fields
checked, and only plain containers are filled."""

from __future__ import annotations

import pathlib
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.metadata as dcp_metadata

from longseq.parallel.safe_load import UnsafeCheckpointError, read_metadata_file

#: Classes a crafted metadata pickle may name, whose attributes the tests watch.
WATCHED = (
    pathlib.PosixPath,
    pathlib.PurePosixPath,
    pathlib.Path,
    pathlib.PurePath,
    dcp_metadata.Metadata,
    dcp_metadata.TensorProperties,
    torch.Size,
)


@pytest.fixture
def classes_untouched():
    """Fails the test if a watched class changed; restores it either way (a successful trick
    must not leak into the other tests)."""
    before = {cls: dict(vars(cls)) for cls in WATCHED}
    yield
    changed = []
    for cls, saved in before.items():
        now = dict(vars(cls))
        for k in set(now) - set(saved):
            delattr(cls, k)
            changed.append(f"{cls.__name__}.{k}")
        for k, v in saved.items():
            if now.get(k) is not v:
                setattr(cls, k, v)
                changed.append(f"{cls.__name__}.{k}")
    assert changed == [], f"the pickle changed {changed}"


@pytest.fixture(scope="module")
def real_metadata(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The ``.metadata`` bytes of a small real DCP checkpoint (a tensor and a byte entry)."""
    folder = tmp_path_factory.mktemp("dcp")
    with warnings.catch_warnings():  # one process: "assuming the intent is to save in a single"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"w": torch.arange(6.0).reshape(3, 2), "note": {"k": 1}}, checkpoint_id=folder)
    return (folder / ".metadata").read_bytes()


def _s(text: str) -> bytes:
    """SHORT_BINUNICODE ``text``."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _global(module: str, name: str) -> bytes:
    return _s(module) + _s(name) + b"\x93"  # STACK_GLOBAL


def _build_on_class(attr: str, value: bytes) -> bytes:
    """PosixPath (the class itself) BUILT with slot state ``{attr: value}``, then popped."""
    return _global("pathlib", "PosixPath") + b"N}" + _s(attr) + value + b"s\x86b0"


def _crafted(prefix: bytes, real: bytes) -> bytes:
    """``prefix`` ops run before the real metadata pickle (which follows unchanged)."""
    assert real[:2] == b"\x80\x04"
    return b"\x80\x04" + prefix + real[2:]


def _write(tmp_path: Path, data: bytes) -> Path:
    f = tmp_path / ".metadata"
    f.write_bytes(data)
    return f


def test_real_metadata_reads_as_plain_pickle_does(real_metadata: bytes, tmp_path: Path):
    got = read_metadata_file(_write(tmp_path, real_metadata))
    want = pickle.loads(real_metadata)
    assert got.state_dict_metadata == want.state_dict_metadata
    assert got.storage_data == want.storage_data
    assert got.planner_data == want.planner_data and got.version == want.version
    props = got.state_dict_metadata["w"].properties
    assert props.memory_format == torch.contiguous_format and props.layout == torch.strided


@pytest.mark.parametrize(
    "attr,value",
    [
        ("_str", _s("/elsewhere")),  # every PosixPath of the process would print as this
        ("write_text", _global("builtins", "frozenset")),  # writes would silently do nothing
    ],
)
def test_build_on_an_allowed_class_is_refused(
    attr: str, value: bytes, real_metadata: bytes, tmp_path: Path, classes_untouched
):
    f = _write(tmp_path, _crafted(_build_on_class(attr, value), real_metadata))
    with pytest.raises(
        UnsafeCheckpointError, match=r"refusing to set attributes of pathlib\.Posix"
    ):
        read_metadata_file(f)
    assert attr not in vars(pathlib.PosixPath)


def test_the_build_trick_works_against_plain_pickle(real_metadata: bytes):
    """What the tests above guard against: a plain unpickler sets the class attribute."""
    data = _crafted(_build_on_class("_str", _s("/elsewhere")), real_metadata)
    try:
        assert isinstance(pickle.loads(data), dcp_metadata.Metadata)
        assert str(pathlib.PosixPath("/tmp/x")) == "/elsewhere"
    finally:
        if "_str" in vars(pathlib.PosixPath):
            delattr(pathlib.PosixPath, "_str")
    assert str(pathlib.PosixPath("/tmp/x")) == "/tmp/x"


def test_build_on_an_object_made_by_a_call_is_refused(
    real_metadata: bytes, tmp_path: Path, classes_untouched
):
    path = _global("pathlib", "PosixPath") + _s("/a") + b"\x85R"  # PosixPath("/a")
    prefix = path + b"N}" + _s("_str") + _s("/b") + b"s\x86b0"
    with pytest.raises(UnsafeCheckpointError, match="refusing to set attributes of a pathlib"):
        read_metadata_file(_write(tmp_path, _crafted(prefix, real_metadata)))


def test_a_record_built_twice_or_with_an_unknown_field_is_refused(tmp_path: Path):
    md = _global("torch.distributed.checkpoint.metadata", "Metadata") + b")\x81"
    fields = b"}" + _s("state_dict_metadata") + b"}s"
    twice = md + fields + b"b" + fields + b"b."
    with pytest.raises(UnsafeCheckpointError, match="refusing to set attributes of an instance"):
        read_metadata_file(_write(tmp_path, b"\x80\x04" + twice))
    extra = md + b"}" + _s("state_dict_metadata") + b"}s" + _s("evil") + b"K\x01s" + b"b."
    with pytest.raises(UnsafeCheckpointError, match="unknown field 'evil'"):
        read_metadata_file(_write(tmp_path, b"\x80\x04" + extra))
    ok = md + fields + b"b."
    assert read_metadata_file(_write(tmp_path, b"\x80\x04" + ok)).state_dict_metadata == {}


def test_record_fields_are_type_checked(tmp_path: Path):
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    for info, match in [
        (_StorageInfo("../outside", 0, 1), "field 'relative_path'"),
        (_StorageInfo("__0_0.distcp", -5, 1), "field 'offset'"),
        (_StorageInfo("__0_0.distcp", 0, "1"), "field 'length'"),
    ]:
        key = dcp_metadata.MetadataIndex("w", torch.Size([0]), 0)
        md = dcp_metadata.Metadata(state_dict_metadata={}, storage_data={key: info})
        with pytest.raises(UnsafeCheckpointError, match=match):
            read_metadata_file(_write(tmp_path, pickle.dumps(md, protocol=4)))
    bad = dcp_metadata.Metadata(state_dict_metadata={"w": "not metadata"})
    with pytest.raises(UnsafeCheckpointError, match="field 'state_dict_metadata'"):
        read_metadata_file(_write(tmp_path, pickle.dumps(bad, protocol=4)))


def test_calls_check_their_arguments_and_containers_stay_plain(tmp_path: Path):
    size = _global("torch", "Size")
    cases = [
        (size + _s("x") + b"\x85\x85R.", "torch.Size"),  # Size(("x",))
        (size + b"\x8a\x01\xff\x85\x85R.", "non-negative"),  # Size((-1,))
        (size + b")\x85R" + b"K\x01a.", "refusing APPEND on a torch.Size"),  # Size([]).append
        (_global("builtins", "getattr") + b".", "refusing to load builtins.getattr"),
        (_global("torch", "Size") + b".", "refusing torch.Size as a value"),
        (b"]\x94h\x00a.", "cyclic"),  # a list that holds itself
    ]
    for body, match in cases:
        with pytest.raises(UnsafeCheckpointError, match=match):
            read_metadata_file(_write(tmp_path, b"\x80\x04" + body))


def test_a_symlinked_metadata_file_is_refused(real_metadata: bytes, tmp_path: Path):
    outside = tmp_path / "outside.metadata"
    outside.write_bytes(real_metadata)
    link = tmp_path / "ckpt" / ".metadata"
    link.parent.mkdir()
    link.symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        read_metadata_file(link)
