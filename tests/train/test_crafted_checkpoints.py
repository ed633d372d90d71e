"""Crafted checkpoints through every entry point that reads them (issue 25, acceptance 2).

A real run dir (the tiny experiment, 4 steps) is copied and crafted as an attacker would: a
``.metadata`` whose BUILD sets ``pathlib.PosixPath._str`` on the class, an OmegaConf
interpolation of a secret environment variable in ``longseq.json``, and symbolic links for
``latest``, ``best``, a step folder and each checkpoint data file. Each case goes through the
evaluation, serving, export, a resume and the training's evaluation callback (where that entry
point reads the crafted file) and must be refused, with nothing secret printed, no file outside
the run dir read (its content never appears; its access time, where the file system keeps one,
unchanged) or written, and no class of the process changed.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from inproc import one_process_group, tiny_job, train_in_process  # noqa: F401 - the fixture

SECRET = "crafted-9c1e-SECRET"
ENV = "LONGSEQ_CRAFTED_SECRET"


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine run dir: checkpoints step_2 and step_4, ``latest`` -> step_4. Read-only."""
    run = tmp_path_factory.mktemp("crafted") / "run"
    train_in_process(tiny_job(tiny_data, run, 4))
    (run / ".lock").unlink()
    return run


# --------------------------------------------------------------------------- the crafts


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _build_trick(run: Path, outside: Path) -> None:
    """Every ``.metadata``: first set ``PosixPath._str`` on the class (every path of the process
    would then name ``outside/redirected``), then the real metadata; the manifest updated."""
    prefix = _s("pathlib") + _s("PosixPath") + b"\x93N}" + _s("_str")
    prefix += _s(str(outside / "redirected")) + b"s\x86b0"
    for ckpt in (run / "checkpoints").glob("step_*"):
        real = (ckpt / ".metadata").read_bytes()
        (ckpt / ".metadata").write_bytes(real[:2] + prefix + real[2:])
        _set_meta(ckpt, lambda m, c=ckpt: m["manifest"].update({".metadata": _size(c)}))


def _size(ckpt: Path) -> int:
    return (ckpt / ".metadata").stat().st_size


def _set_meta(ckpt: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((ckpt / "longseq.json").read_text())
    change(meta)
    (ckpt / "longseq.json").write_text(json.dumps(meta))


def _interpolation(run: Path, outside: Path) -> None:
    """``model.tower`` of every ``longseq.json`` names the secret environment variable."""
    for ckpt in (run / "checkpoints").glob("step_*"):
        _set_meta(ckpt, lambda m: m["model"].update({"tower": "${oc.env:" + ENV + "}"}))


def _pointer_link(name: str) -> Callable[[Path, Path], None]:
    def craft(run: Path, outside: Path) -> None:
        (run / "checkpoints" / name).unlink(missing_ok=True)
        (run / "checkpoints" / name).symlink_to(outside / "secret.txt")

    return craft


def _step_link(run: Path, outside: Path) -> None:
    """``step_4`` (what ``latest`` names) is a link to a complete copy outside the run dir."""
    step = run / "checkpoints" / "step_4"
    shutil.move(step, outside / "step_4")
    step.symlink_to(outside / "step_4", target_is_directory=True)


def _file_link(name: str) -> Callable[[Path, Path], None]:
    def craft(run: Path, outside: Path) -> None:
        f = run / "checkpoints" / "step_4" / name
        shutil.move(f, outside / name)  # the same bytes: only the link is wrong
        f.symlink_to(outside / name)

    return craft


@dataclass
class Case:
    craft: Callable[[Path, Path], None]
    match: str
    #: the checkpoint= argument (relative to the run dir; "" = the run dir itself)
    target: str = ""
    #: whether the evaluation callback (given the step_4 folder) reads the crafted file
    callback: bool = True


LINK = "symbolic link"
CASES = {
    "build_trick": Case(_build_trick, r"refusing to set attributes of pathlib\.PosixPath"),
    "interpolation": Case(_interpolation, r"model\.tower holds an OmegaConf interpolation"),
    "latest_link": Case(_pointer_link("latest"), LINK, callback=False),
    "best_link": Case(_pointer_link("best"), LINK, "checkpoints/best", callback=False),
    "step_link": Case(_step_link, LINK),
    **{
        f"file_link[{name}]": Case(_file_link(name), LINK)
        for name in ("__0_0.distcp", ".metadata", "longseq.json", "rank_0.json")
    },
}


# --------------------------------------------------------------------------- the entry points


def _eval(run: Path, target: Path, data: Path) -> None:
    from longseq.eval.config import EvalConfig, EvalDataConfig
    from longseq.eval.evaluate import evaluate

    cfg = EvalConfig(checkpoint=str(target), data=EvalDataConfig(path=str(data)), progress=False)
    cfg.out, cfg.windows = str(run / "eval_out"), [16]
    evaluate(cfg)


def _serve(run: Path, target: Path, data: Path) -> None:
    from longseq.serve.config import ServeConfig
    from longseq.serve.run import serve

    cfg = ServeConfig(checkpoint=str(target), out=str(run / "serve_out"), progress=False)
    cfg.data.path = str(data)
    serve(cfg)


def _export(run: Path, target: Path, data: Path) -> None:
    from longseq.serve.export import export_scorer

    export_scorer(target, run / "export_out" / "scorer.pt2")


def _resume(run: Path, target: Path, data: Path) -> None:
    from longseq.train.loop import train

    resume = "auto" if target == run else str(target)
    train(tiny_job(data, run, 6, f"resume={resume}"))


def _callback(run: Path, target: Path, data: Path) -> None:
    from longseq.train.callbacks import LoopState
    from longseq.train.eval_callback import EvalCallback

    ckpt = run / "checkpoints" / "step_4"
    EvalCallback(str(data), [16], every=2, at_end=True).on_train_end(
        LoopState(4, 4, str(run), {}, str(ckpt))
    )


ENTRIES = {"eval": _eval, "serve": _serve, "export": _export, "resume": _resume}
ENTRIES["callback"] = _callback
MATRIX = [
    pytest.param(case, entry, id=f"{case}-{entry}")
    for case in CASES
    for entry in ENTRIES
    if entry != "callback" or CASES[case].callback
]


# --------------------------------------------------------------------------- the checks


def _tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (links not followed) with its content and mtime."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _atimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_atime_ns for p in folder.rglob("*") if p.is_file()}


def _atime_kept(folder: Path) -> bool:
    """Whether reading a file here updates its access time (relatime does, for an access time
    older than the modification time; noatime mounts never do)."""
    probe = folder / "atime_probe"
    probe.write_text("x")
    st = probe.stat()
    os.utime(probe, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    before = probe.stat().st_atime_ns
    probe.read_text()
    kept = probe.stat().st_atime_ns != before
    probe.unlink()
    return kept


WATCHED = (pathlib.PosixPath, pathlib.PurePosixPath, pathlib.Path, pathlib.PurePath)


@pytest.mark.usefixtures("one_process_group")
@pytest.mark.parametrize("case,entry", MATRIX)
def test_a_crafted_checkpoint_is_refused(
    case: str, entry: str, trained: Path, tiny_data: Path, tmp_path: Path, monkeypatch, capsys,
    caplog,
):  # fmt: skip
    monkeypatch.setenv(ENV, SECRET)
    run, outside = tmp_path / "run", tmp_path / "outside"
    shutil.copytree(trained, run, symlinks=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\nsecond line\n")
    spec = CASES[case]
    spec.craft(run, outside)
    tracks_atime = _atime_kept(outside)
    for f in outside.rglob("*"):  # access times older than the files: a read would move them
        if f.is_file():
            st = f.stat()
            os.utime(f, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
    files, atimes = _tree(outside), _atimes(outside)
    classes = {cls: dict(vars(cls)) for cls in WATCHED}
    target = run / spec.target if spec.target else run
    try:
        with warnings.catch_warnings():  # "torch.distributed is disabled" on a one-process load
            warnings.simplefilter("ignore", UserWarning)
            with pytest.raises(Exception) as e:  # noqa: PT011 - the message is checked below
                ENTRIES[entry](run, target, tiny_data)
    finally:
        changed = [k for cls, saved in classes.items() for k in set(vars(cls)) ^ set(saved)]
        for cls, saved in classes.items():  # a trick that worked must not leak into other tests
            for k in set(vars(cls)) - set(saved):
                delattr(cls, k)
    assert changed == [], f"the checkpoint changed classes of the process: {changed}"
    assert re.search(spec.match, str(e.value)), str(e.value)
    printed = capsys.readouterr()
    for text in (str(e.value), printed.out, printed.err, caplog.text):
        assert SECRET not in text
    assert _tree(outside) == files  # nothing outside the run dir written
    if tracks_atime:
        assert _atimes(outside) == atimes  # nor read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "run"]
    for out in ("eval_out", "serve_out", "export_out"):  # refused before any output
        assert not (run / out).exists() or not any(p.is_file() for p in (run / out).rglob("*"))
    assert not (run / "checkpoints" / "step_6").exists()


def test_the_crafts_work_against_a_plain_reader(trained: Path, tmp_path: Path, monkeypatch):
    """What the suite refuses would have worked: the BUILD trick redirects paths under plain
    pickle, OmegaConf resolves the secret, the links lead to the outside files."""
    import pickle

    from omegaconf import OmegaConf

    monkeypatch.setenv(ENV, SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    for name in ("build", "interp", "latest"):
        shutil.copytree(trained, tmp_path / name, symlinks=True)
    _build_trick(tmp_path / "build", outside)
    try:
        pickle.loads((tmp_path / "build" / "checkpoints" / "step_4" / ".metadata").read_bytes())
        assert str(pathlib.PosixPath("/tmp")) == str(outside / "redirected")
    finally:
        if "_str" in vars(pathlib.PosixPath):
            delattr(pathlib.PosixPath, "_str")
    _interpolation(tmp_path / "interp", outside)
    meta = json.loads((tmp_path / "interp" / "checkpoints" / "step_4" / "longseq.json").read_text())
    assert OmegaConf.create(meta["model"]).tower == SECRET
    _pointer_link("latest")(tmp_path / "latest", outside)
    assert SECRET in (tmp_path / "latest" / "checkpoints" / "latest").read_text()
