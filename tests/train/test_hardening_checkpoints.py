"""Checkpoint files as untrusted input (issue 25, cases 3, 4 and 7), unit level: symbolic links
in pointers, step folders and checkpoint files are refused; ``longseq.json`` is plain JSON with
its keys checked; errors quote only a short, sanitised excerpt of what a file holds."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from longseq.parallel.checkpoint import (
    load_rank_state,
    read_checkpoint_meta,
    save_checkpoint,
    verify_checkpoint,
)
from longseq.parallel.pointers import latest_checkpoint, resolve_checkpoint, write_pointer

SECRET = "SENTINEL-0a7f-do-not-print"


def _save(run: Path, step: int, **meta) -> Path:
    with warnings.catch_warnings():  # one process: "assuming the intent is to save in a single"
        warnings.simplefilter("ignore", UserWarning)
        return save_checkpoint(run, step, {"w": torch.ones(4)}, meta, {"pos": step})


@pytest.fixture
def run(tmp_path: Path) -> Path:
    r = tmp_path / "run"
    _save(r, 2)
    _save(r, 4)
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the run dir whose content must never be printed, nor changed."""
    f = tmp_path / "outside.txt"
    f.write_text(f"{SECRET}\nsecond line\n")
    return f


@pytest.mark.parametrize("name", ["latest", "best"])
def test_a_symlinked_pointer_is_refused_unread(run: Path, outside: Path, name: str):
    pointer = run / "checkpoints" / name
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link") as e:
        resolve_checkpoint(pointer)
    assert SECRET not in str(e.value)
    if name == "latest":
        with pytest.raises(ValueError, match="symbolic link") as e:
            latest_checkpoint(run)
        assert SECRET not in str(e.value)


def test_a_pointer_with_junk_is_quoted_short_and_sanitised(run: Path):
    (run / "checkpoints" / "latest").write_text("\x1b[2J" + "x" * 500)
    with pytest.raises(ValueError, match="not a step_<n> folder") as e:
        latest_checkpoint(run)
    msg = str(e.value)
    assert "\x1b" not in msg and "x" * 40 not in msg


def test_a_symlinked_step_folder_is_refused_even_inside_the_run(run: Path):
    root = run / "checkpoints"
    (root / "step_6").symlink_to(root / "step_4", target_is_directory=True)
    (root / "latest").write_text("step_6\n")
    with pytest.raises(ValueError, match="step_6: a symbolic link"):
        latest_checkpoint(run)
    (root / "latest").unlink()  # the scan for the newest step folder
    with pytest.raises(ValueError, match="step_6: a symbolic link"):
        latest_checkpoint(run)
    with pytest.raises(ValueError, match="step_6: a symbolic link"):
        resolve_checkpoint(root / "step_6")  # named directly


@pytest.mark.parametrize("name", ["__0_0.distcp", "rank_0.json", "longseq.json", ".metadata"])
def test_a_symlinked_checkpoint_file_is_refused(run: Path, tmp_path: Path, name: str):
    ckpt = run / "checkpoints" / "step_4"
    copy = tmp_path / "copy"
    copy.write_bytes((ckpt / name).read_bytes())  # the same bytes and size: only the link differs
    (ckpt / name).unlink()
    (ckpt / name).symlink_to(copy)
    with pytest.raises(ValueError, match=f"{name}: a symbolic link"):
        verify_checkpoint(ckpt)
    if name == "rank_0.json":
        with pytest.raises(ValueError, match="symbolic link"):
            load_rank_state(ckpt, 0)


def test_longseq_json_is_plain_json_interpolations_are_refused(run: Path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_TEST_SECRET", SECRET)
    ckpt = run / "checkpoints" / "step_4"
    meta = json.loads((ckpt / "longseq.json").read_text())
    meta["model"] = {"tower": "${oc.env:LONGSEQ_TEST_SECRET}"}
    (ckpt / "longseq.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"model\.tower holds an OmegaConf interpolation") as e:
        read_checkpoint_meta(ckpt)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("tables", {"num_items": 4, "num_categories": 2, "num_actions": 2, "num_evil": 1},
         r"tables\.num_evil: not a table size"),
        ("tables", {"num_items": -4, "num_categories": 2, "num_actions": 2},
         r"tables\.num_items must be an integer >= 1"),
        ("tables", {"num_items": 4}, r"tables lacks num_categories"),
        ("manifest", {"__0_0.distcp": "big"}, r"manifest\.__0_0\.distcp: size 'big' is not"),
        ("manifest", {"__0_0.distcp": 1.5}, r"manifest\.__0_0\.distcp: size 1\.5 is not"),
        ("manifest", {"../x": 1}, r"manifest: '\.\./x' is not a file name"),
        ("tasks", "click", r"tasks must be a list of names"),
        ("step", "4", r"step must be an integer"),
    ],
)  # fmt: skip
def test_longseq_json_keys_are_checked_and_named(run: Path, key: str, value, match: str):
    ckpt = run / "checkpoints" / "step_4"
    meta = json.loads((ckpt / "longseq.json").read_text())
    meta[key] = value
    (ckpt / "longseq.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match) as e:
        verify_checkpoint(ckpt)
    assert str(ckpt / "longseq.json") in str(e.value)


def test_write_pointer_replaces_a_planted_tmp_link_without_writing_through_it(
    run: Path, outside: Path
):
    root = run / "checkpoints"
    (root / "latest.tmp").symlink_to(outside)
    before = outside.read_text()
    write_pointer(root, "latest", root / "step_2")
    assert outside.read_text() == before
    assert (root / "latest").read_text() == "step_2\n" and not (root / "latest").is_symlink()
