"""Benchmark plumbing: arguments, threads, environment capture, JSON (timing: `timing`).

`BenchArgs` is the typed config of ``python -m longseq.bench`` (Hydra: `longseq.bench.config`).

Plain torch only (no torchrec import), so the torch-only suites run on any accelerator machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCHEMA_VERSION = 1


class BenchError(ValueError):
    """A bad command-line value (the message names the key)."""


@dataclass
class BenchArgs:
    """Command-line options (``key=value``; Hydra schema ``bench_schema``).

    Attributes:
        suite: a name in `longseq.bench.suites.SUITES` (``scaling``, ``rlb``, ``kernel``,
            ``serve``, ``eval_scale``, ``reader``, ``trainer``) or ``all``.
        quick: small grid (all suites in a few minutes on 2 CPU cores).
        device: ``cpu`` or ``cuda``.
        out: result folder (``<out>/<suite>.json`` and ``.png``).
        dtype: ``fp32``, ``bf16`` or ``auto`` (fp32 on CPU, bf16 on CUDA).
        reps: timed repetitions per measurement (the median is reported; at least 5 by default).
        warmup: untimed calls before timing.
        threads: torch intra-op threads; 0 = auto: 1 on CPU (on a shared 2-core machine two
            OpenMP workers stall each other when another process holds a core: measured 60x
            slower), every usable core on CUDA (host side only).
        tiny: test shapes only (checks the plumbing; numbers mean nothing).
        report: after the run, regenerate this markdown file from ``out``'s parent folder.
    """

    suite: str = "all"
    quick: bool = True
    device: str = "cpu"
    out: str = "benchmarks/results/cpu"
    dtype: str = "auto"
    reps: int = 5
    warmup: int = 2
    threads: int = 0
    tiny: bool = False
    report: str = ""

    @property
    def torch_dtype(self) -> torch.dtype:
        """The resolved torch dtype."""
        return DTYPES[self.resolved_dtype]

    @property
    def resolved_dtype(self) -> str:
        """``fp32``/``bf16`` with ``auto`` resolved by device."""
        if self.dtype == "auto":
            return "bf16" if self.device == "cuda" else "fp32"
        return self.dtype

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def mode(self) -> str:
        """``tiny``, ``quick`` or ``full``."""
        return "tiny" if self.tiny else ("quick" if self.quick else "full")

    def validate(self) -> None:
        """Raise `BenchError` naming the key of a value outside its choices."""
        from longseq.bench.suites import SUITES

        choices = {
            "suite": (*SUITES, "all"),
            "device": ("cpu", "cuda"),
            "dtype": ("auto", *DTYPES),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise BenchError(
                    f"{key}={getattr(self, key)!r}: choose one of {', '.join(allowed)}"
                )
        if self.reps < 1 or self.warmup < 0 or self.threads < 0:
            raise BenchError("reps must be >= 1, warmup >= 0 and threads >= 0")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BenchError("device=cuda: torch.cuda.is_available() is False on this machine")
        if not self.out:
            raise BenchError("out= must name a folder")


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: glibc ``mallopt`` parameters and the values `tune_malloc` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_SETTINGS = {"mmap_threshold": 32 * 2**20, "trim_threshold": 2**31 - 1}
_malloc_state: dict[str, Any] = {"tuned": False}


def tune_malloc() -> dict[str, Any]:
    """Keep freed host memory in glibc's heap (mmap threshold 32 MiB, no trimming).

    By default glibc returns large freed blocks to the OS, so every step of a tower with
    multi-MiB activations pays first-touch page faults again (measured: STCA at 8k history
    0.17-0.32 s instead of 0.15 s when timed round-robin with the Transformer). Benchmarks
    usually fix this with jemalloc/tcmalloc; this is the in-process equivalent. No-op off glibc.
    """
    if not _malloc_state["tuned"]:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_SETTINGS["mmap_threshold"]) == 1
            ok &= libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_SETTINGS["trim_threshold"]) == 1
            _malloc_state.update(tuned=True, applied=bool(ok), **MALLOC_SETTINGS)
        except (OSError, AttributeError):
            _malloc_state.update(tuned=True, applied=False)
    return {k: v for k, v in _malloc_state.items() if k != "tuned"}


def setup_threads(args: BenchArgs) -> int:
    """Set torch's intra-op threads from ``args.threads`` (0: see `BenchArgs`) and
    `tune_malloc`; return the thread count."""
    n = args.threads or (usable_cores() if args.device == "cuda" else 1)
    tune_malloc()
    torch.set_num_threads(n)
    return n


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(args: BenchArgs) -> dict[str, Any]:
    """Versions, machine and settings of this run."""
    dev = args.torch_device
    env: dict[str, Any] = {
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": _version("numpy"),
        "pyarrow": _version("pyarrow"),
        "torchrec": _version("torchrec"),
        "fbgemm_gpu": _version("fbgemm_gpu") or _version("fbgemm-gpu"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "malloc": tune_malloc(),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_model(),
        "dtype": args.resolved_dtype,
        "mode": args.mode,
        "git": _git(),
    }
    return env


def command_line(args: BenchArgs, suite: str) -> str:
    """The command that regenerates one suite's result."""
    parts = [f"suite={suite}", f"quick={str(args.quick).lower()}", f"device={args.device}"]
    parts += [f"out={args.out}", f"dtype={args.resolved_dtype}"]
    if args.tiny:
        parts.append("tiny=true")
    return "python -m longseq.bench " + " ".join(parts)


def result_payload(
    args: BenchArgs,
    suite: str,
    config: dict[str, Any],
    results: list[dict[str, Any]],
    summary: dict[str, Any],
    notes: list[str],
    **extra: Any,
) -> dict[str, Any]:
    """The JSON document every suite writes."""
    return {
        "suite": suite,
        "schema": SCHEMA_VERSION,
        "command": command_line(args, suite),
        "argv": sys.argv[1:],
        "environment": environment(args),
        "config": {"reps": args.reps, "warmup": args.warmup, **config},
        "results": results,
        "summary": summary,
        "notes": notes,
        **extra,
    }


def write_json(out: str | Path, suite: str, payload: dict[str, Any]) -> Path:
    """Write ``<out>/<suite>.json`` (pretty, sorted keys kept in insertion order)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{suite}.json"
    path.write_text(json.dumps(payload, indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
