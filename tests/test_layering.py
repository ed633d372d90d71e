"""Import layering: what each layer may import, checked statically (ast) and in fresh processes.

`RULES` holds one rule per package (docs/architecture.md). The tower modules (`TOWER_FILES`:
the tower protocol and registry, every tower, the attention module and its kernels in
``model/ops``) are pure torch so they run where TorchRec/FBGEMM do not; ``model/ops`` imports
nothing of longseq but itself, and its padded kernels load no packed one.

Note: ``import torchrec`` itself imports ``torchrec.distributed`` (torchrec/__init__.py), so no
module using TorchRec can avoid loading it; for ``longseq.model.model`` the check is therefore
that it loads no distributed module beyond what a bare ``import torchrec`` loads.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "longseq"

PROBE = """
import json, sys
before = set(sys.modules)
{imports}
print("@@" + json.dumps(sorted(set(sys.modules) - before)))
"""


def _new_modules(imports: str) -> tuple[list[str], str, str]:
    """Modules newly loaded by ``imports`` in a fresh interpreter, plus any other output."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    head, _, payload = proc.stdout.rpartition("@@")
    return json.loads(payload), head, proc.stderr


def _under(mods: list[str], *prefixes: str) -> list[str]:
    return [m for m in mods if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_import_longseq_is_free_of_torch_and_silent():
    mods, out, err = _new_modules("import longseq")
    assert "longseq" in mods
    assert _under(mods, "torch", "torchrec", "fbgemm_gpu", "numpy", "pyarrow") == []
    assert out == "" and err == ""


def test_tower_modules_load_plain_torch_only():
    mods, out, err = _new_modules(
        "import longseq.model.towers, longseq.model.stca, longseq.model.layers, "
        "longseq.model.tokens, longseq.model.rankmixer_head"
    )
    assert "longseq.model.stca" in mods and "torch" in mods
    assert _under(mods, "torchrec", "fbgemm_gpu", "longseq.data") == []
    assert _under(mods, "longseq.train", "longseq.parallel", "longseq.eval") == []
    assert out == "" and err == ""


def test_model_loads_no_trainer_and_nothing_distributed_beyond_torchrec():
    mods, out, _ = _new_modules(
        "import torchrec\nbefore = set(sys.modules)\nimport longseq.model.model"
    )
    assert "longseq.model.model" in mods and "longseq.model.stca" in mods
    assert _under(mods, "longseq.train", "longseq.parallel", "longseq.eval") == []
    assert _under(mods, "torchrec.distributed", "torch.distributed") == []
    assert out == ""


# --------------------------------------------------------------------------- static (ast)


def _imports(path: Path, pkg: Path = PKG) -> list[tuple[int, str]]:
    """``(line, module)`` imported by ``path`` (relative imports resolved; for ``from m import
    x`` both ``m`` and ``m.x``, so ``from torch import distributed`` is seen)."""
    package = list(path.relative_to(pkg.parent).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return out


def _violations(folder: str, forbidden: tuple[str, ...], pkg: Path = PKG) -> list[str]:
    bad = []
    root = pkg / folder
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert files, folder
    for f in files:
        for line, mod in _imports(f, pkg):
            if _under([mod], *forbidden):
                bad.append(f"{f.relative_to(pkg.parent)}:{line} imports {mod}")
    return bad


#: The layering rules, one per package: what it must not import. Bottom up: the shared leaves
#: (``longseq.config``, ``longseq.metrics``), ``data`` (runtime input pipeline), ``model`` (pure
#: modules, nothing distributed), ``datasets`` (offline tooling over ``data``), ``parallel``
#: (sharding, checkpoints), ``eval`` (scoring checkpoints), ``train`` (the loop; evaluation runs in
#: it as a callback), then the tools on top (``bench``, ``report``). docs/architecture.md draws it.
ALL = ("data", "model", "datasets", "parallel", "eval", "train", "bench", "report")
RULES: dict[str, tuple[str, ...]] = {
    "metrics.py": ALL + ("serve", "torch"),
    "config.py": ALL + ("serve",),
    "log.py": ALL + ("serve", "torch"),
    "data": ("model", "datasets", "parallel", "eval", "train", "serve", "bench", "report"),
    "model": ("datasets", "parallel", "eval", "train", "serve", "bench", "report"),
    "datasets": ("model", "parallel", "eval", "train", "serve", "bench", "report"),
    "parallel": ("datasets", "eval", "train", "serve", "bench", "report"),
    "eval": ("datasets", "train", "serve", "bench", "report"),
    "train": ("datasets", "serve", "bench", "report"),
    # serving a checkpoint: data, model, parallel, eval (the loader) -- never the trainer
    "serve": ("datasets", "train", "bench", "report"),
    "bench": ("report",),
    "report": ("datasets", "parallel", "train", "serve", "bench"),
}
#: Beyond the longseq packages: the model never loads distributed code.
EXTRA = {"model": ("torch.distributed", "torchrec.distributed")}


def _forbidden(layer: str) -> tuple[str, ...]:
    return tuple(
        m if "." in m or m == "torch" else f"longseq.{m}" for m in RULES[layer]
    ) + EXTRA.get(layer, ())


def test_every_package_has_a_rule():
    """A new package (or top-level module) must say where it sits."""
    found = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    found |= {p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "_quiet.py")}
    assert found == set(RULES), f"add a rule to RULES for {sorted(found ^ set(RULES))}"


@pytest.mark.parametrize("layer", sorted(RULES))
def test_static_layer_rules(layer):
    assert _violations(layer, _forbidden(layer)) == []


def test_import_model_loads_no_pyarrow():
    """The model side (what serving loads) does not drag in the Parquet stack."""
    mods, _, _ = _new_modules("import longseq.model.model")
    assert _under(mods, "pyarrow", "longseq.datasets") == []


#: the attention kernels (`longseq.model.ops`): the floor of the model's attention
OPS_FILES = [f"ops/{p.name}" for p in sorted((PKG / "model" / "ops").glob("*.py"))]
#: the pure-torch modules of the tower path: the protocol, the registry, every tower, the
#: attention module and its kernels, the RankMixer backbone and head
TOWER_FILES = [
    "tower.py",
    "towers.py",
    "stca.py",
    "stca_config.py",
    "attention.py",
    "match.py",
    "soft_match.py",
    "cooccur.py",
    "layers.py",
    "tokens.py",
    "rankmixer.py",
    "rankmixer_head.py",
    *(f"baselines/{p.name}" for p in sorted((PKG / "model" / "baselines").glob("*.py"))),
    *OPS_FILES,
]


def _module(name: str) -> str:
    """``ops/flex.py`` -> ``longseq.model.ops.flex`` (``ops/__init__.py`` -> ``...ops``)."""
    return "longseq.model." + name[:-3].replace("/", ".").removesuffix(".__init__")


@pytest.mark.parametrize("name", TOWER_FILES)
def test_static_tower_modules_import_no_torchrec_or_fbgemm(name):
    """The device path (STCA in both layouts, every tower) runs on a machine with plain torch."""
    mods = [m for _, m in _imports(PKG / "model" / name)]
    assert _under(mods, "torchrec", "fbgemm_gpu", "fbgemm") == []
    # and they import only plain torch, the standard library and each other
    longseq = {m for m in mods if m.startswith("longseq")}
    allowed = {_module(f) for f in TOWER_FILES} - {"longseq.model"}
    assert {
        m for m in longseq if not any(m == a or m.startswith(a + ".") for a in allowed)
    } == set()


#: kernels of the padded layout, and what they must not import: the packed kernels and the
#: dispatcher (which imports every kernel)
PADDED_OPS = ["ops/kernels.py", "ops/history.py", "ops/reference.py", "ops/padded.py"]
PACKED_OPS = ("longseq.model.ops.pairs", "longseq.model.ops.flex", "longseq.model.ops.dispatch")


def _runtime_imports(path: Path) -> list[str]:
    """`_imports` of ``path`` less those under ``if TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        line
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for child in node.body
        for line in range(child.lineno, (child.end_lineno or child.lineno) + 1)
    }
    return [m for line, m in _imports(path) if line not in typing_only]


@pytest.mark.parametrize("name", OPS_FILES)
def test_ops_import_nothing_of_longseq_but_ops(name):
    """``model/ops`` (the package rule of the kernels): the floor of the model's attention. Its
    history values name `AttentionBias` in annotations only (``if TYPE_CHECKING``)."""
    mods = _runtime_imports(PKG / "model" / name)
    outside = [m for m in mods if m.startswith("longseq") and not _under([m], "longseq.model.ops")]
    assert outside == []
    if name in PADDED_OPS:
        assert _under(mods, *PACKED_OPS) == [], f"{name} imports a packed kernel"


def test_padded_kernels_load_no_packed_kernel():
    mods, out, err = _new_modules("import longseq.model.ops.padded, longseq.model.ops.reference")
    assert "longseq.model.ops.padded" in mods
    assert _under(mods, *PACKED_OPS, "torch._dynamo") == []
    assert out == "" and err == ""


def test_every_model_subpackage_has_a_rule():
    """A new package inside ``model/`` needs its rule here (``ops``: the tests above)."""
    found = {p.name for p in (PKG / "model").iterdir() if (p / "__init__.py").exists()}
    assert found == {"ops", "baselines"}, f"add a rule for {sorted(found - {'ops', 'baselines'})}"


def test_static_checker_catches_violations(tmp_path):
    """The checker itself: relative, aliased and from-imports are all seen."""
    pkg = tmp_path / "longseq"
    (pkg / "model" / "sub").mkdir(parents=True)
    (pkg / "model" / "bad.py").write_text(
        "from ..train import loop\n"
        "from torch import distributed as d\n"
        "import torchrec.distributed.types as t\n"
        "from . import layers\n"
    )
    (pkg / "model" / "sub" / "deep.py").write_text("def f():\n    from ...parallel import wrap\n")
    forbidden = ("longseq.train", "torch.distributed", "torchrec.distributed", "longseq.parallel")
    bad = _violations("model", forbidden, pkg)
    assert bad == [
        "longseq/model/bad.py:1 imports longseq.train",
        "longseq/model/bad.py:1 imports longseq.train.loop",
        "longseq/model/bad.py:2 imports torch.distributed",
        "longseq/model/bad.py:3 imports torchrec.distributed.types",
        "longseq/model/sub/deep.py:2 imports longseq.parallel",
        "longseq/model/sub/deep.py:2 imports longseq.parallel.wrap",
    ]
