"""The Dockerfile, which cannot be built here (no Docker engine): linted with hadolint, and kept
consistent with requirements/ (the GPU pins, the CPU lock) and with the k8s manifests."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from slurm_cluster import require_tool

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
REQ = REPO / "requirements"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text()
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_defaults() -> dict[str, str]:
    found = {}
    for ins, rest in instructions():
        if ins == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            found[key] = value
    return found


def pins(path: Path) -> dict[str, str]:
    """name -> version of the ``name==version`` lines (names normalized)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


def runs() -> list[str]:
    return [rest for ins, rest in instructions() if ins == "RUN"]


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    binary = hadolint()
    require_tool(binary is not None, "hadolint is not installed (requirements/lock-launch.txt)")
    res = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_torch_fbgemm_torchrec_versions_match_the_locks() -> None:
    arg = args_defaults()
    cpu = pins(REQ / "lock-cpu.txt")
    gpu = pins(REQ / "gpu.txt")
    nodeps = pins(REQ / "gpu-nodeps.txt")
    assert arg["TORCH_VERSION"] == cpu["torch"] == gpu["torch"], (arg, cpu["torch"], gpu)
    assert arg["FBGEMM_GPU_VERSION"] == gpu["fbgemm-gpu"] == cpu["fbgemm-gpu-cpu"]
    assert arg["TORCHREC_VERSION"] == nodeps["torchrec"] == cpu["torchrec"]
    assert "torchrec" not in gpu, "torchrec must be installed with --no-deps (gpu-nodeps.txt)"


def test_runtime_pins_equal_the_cpu_lock() -> None:
    """The image and the CPU environment run the same runtime packages."""
    cpu = pins(REQ / "lock-cpu.txt")
    runtime = pins(REQ / "runtime.txt")
    assert runtime
    differ = {n: (v, cpu.get(n)) for n, v in runtime.items() if cpu.get(n) != v}
    assert not differ, f"runtime.txt vs lock-cpu.txt: {differ}"


def test_cuda_base_matches_the_torch_index() -> None:
    base = args_defaults()["CUDA_IMAGE"]
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-[a-z-]*runtime-ubuntu(\d+\.\d+)", base)
    assert m, base
    index = re.search(r"download\.pytorch\.org/whl/cu(\d+)", (REQ / "gpu.txt").read_text())
    assert index, "gpu.txt names no CUDA index"
    assert index.group(1) == m.group(1) + m.group(2), (base, index.group(0))
    assert [ins for ins, _ in instructions()].count("FROM") == 1


def test_install_order() -> None:
    """gpu.txt with deps, then gpu-nodeps.txt and the package with --no-deps, runtime between."""
    steps = []
    for cmd in runs():
        for part in cmd.split("&&"):
            words = shlex.split(part.split("python -c", 1)[0]) if "pip" in part else []
            if words[:2] == ["pip", "install"]:
                steps.append(words[2:])
    assert steps == [
        ["-r", "requirements/gpu.txt"],
        ["--no-deps", "-r", "requirements/gpu-nodeps.txt"],
        ["-r", "requirements/runtime.txt"],
        ["--no-deps", "-e", "."],
    ], steps


def test_python_version() -> None:
    version = args_defaults()["PYTHON_VERSION"]
    assert version in ("3.11", "3.12"), version
    pyproject = REPO / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        from packaging.specifiers import SpecifierSet

        spec = tomllib.loads(pyproject.read_text()).get("project", {}).get("requires-python")
        if spec:
            assert f"{version}.0" in SpecifierSet(spec), (version, spec)


def test_non_root_torchrun_entrypoint_and_uid_matches_k8s() -> None:
    ins = instructions()
    users = [rest for i, rest in ins if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    entry = [rest for i, rest in ins if i == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["torchrun"], entry
    uid = int(users[-1].split(":")[0])
    job = yaml.safe_load((REPO / "launch/k8s/base/pytorchjob.yaml").read_text())
    for rspec in job["spec"]["pytorchReplicaSpecs"].values():
        assert rspec["template"]["spec"]["securityContext"]["runAsUser"] == uid


def test_config_dir_points_at_the_copied_configs() -> None:
    workdir, config_env, copied = "/", None, None
    for i, rest in instructions():
        if i == "WORKDIR" and copied is None:
            workdir = rest
        if i == "ENV":
            m = re.search(r"LONGSEQ_CONFIG_DIR=(\S+)", rest)
            config_env = m.group(1) if m else config_env
        if i == "COPY" and rest.split()[0].rstrip("/") == "configs":
            copied = os.path.normpath(os.path.join(workdir, rest.split()[-1]))
    assert config_env and copied and os.path.normpath(config_env) == copied, (config_env, copied)


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.replace("**/", "")):
            ignored = not neg
    return ignored


def test_copy_sources_exist_and_are_in_the_context() -> None:
    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for must_skip in (".venv", ".git", "data", "runs", "tests"):
        assert _ignored(must_skip, patterns), must_skip
    for i, rest in instructions():
        if i != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository"
            assert not _ignored(src.rstrip("/"), patterns), f"COPY {src}: excluded by .dockerignore"


def test_build_time_version_check_works(tmp_path: Path) -> None:
    """The Dockerfile's own check of the installed torch/fbgemm/torchrec versions, run here
    against this CPU environment (fbgemm-gpu is called fbgemm-gpu-cpu here): passes with the
    right versions and fails with a wrong one."""
    cmd = next(c for c in runs() if "requirements/gpu.txt" in c)
    snippet = cmd[cmd.index("python -c") :].replace('"fbgemm-gpu"', '"fbgemm-gpu-cpu"')
    snippet = snippet.replace("python -c", shlex.quote(sys.executable) + " -c", 1)
    env = {**os.environ, **{k: v for k, v in args_defaults().items() if k.endswith("_VERSION")}}
    res = subprocess.run(["bash", "-c", snippet], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    env["TORCHREC_VERSION"] = "0.0.1"
    res = subprocess.run(["bash", "-c", snippet], env=env, capture_output=True, text=True)
    assert res.returncode != 0
