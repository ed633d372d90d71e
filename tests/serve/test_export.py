"""`longseq.serve.export`: the exported candidate-scoring graph scores as the eager `Scorer` does
(fp32, 1e-5) for several candidate counts K and history lengths L (dynamic dims), the exported
user side gives `Scorer.encode`'s state, and a fresh process that imports torch only (no
longseq, no torchrec) loads the ``.pt2`` files and scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import TASKS, build, model_config, save, sizes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

#: STCA with each padded kernel and the recipe (match bias, count channel), the paper's tower,
#: and every baseline
# (the paper's tower, no bias at all, is the recipe's graph without its bias terms: not repeated)
NAMES = ["stca_kv_padded", "stca_absorbed_padded", "stca_sdpa_padded", "posbias", "stca_time",
         "pooling", "din", "transformer", "sim", "rankmixer"]  # fmt: skip

#: largest |exported - eager| per config (printed with -s)
MAX_DIFF: dict[str, float] = {}

#: (history length, candidates) pairs; the export's example has L=5, K=3
SHAPES = [(7, 1), (7, 4), (30, 11), (30, 64)]

LOADER = """
import json, sys, torch
extra = {"manifest.json": ""}
scorer = torch.export.load(sys.argv[1], extra_files=extra).module()
user = torch.export.load(sys.argv[2]).module()
hist, inputs = torch.load(sys.argv[3])
with torch.no_grad():
    probs = scorer(*inputs)
    end_to_end = scorer(*user(*hist), *inputs[-2:])
torch.save((probs, end_to_end), sys.argv[4])
print(json.dumps(json.loads(extra["manifest.json"])["inputs"]))
assert "longseq" not in sys.modules and "longseq.train" not in sys.modules
assert "torchrec" not in sys.modules, "torchrec was imported"
"""


def _request(meta: dict, length: int, k: int, seed: int):
    from longseq.serve import make_request

    rng = np.random.default_rng(seed)
    items = rng.integers(0, meta["num_items"], length + k)
    cats = rng.integers(0, meta["num_categories"], length + k)
    tgt_items = np.concatenate([items[: k // 2], items[length : length + k - k // 2]])
    tgt_cats = np.concatenate([cats[: k // 2], cats[length : length + k - k // 2]])
    return make_request(
        hist_item_id=items[:length],
        hist_category_id=cats[:length],
        hist_action=rng.integers(0, meta["num_actions"], length),
        hist_ts=np.sort(rng.integers(0, 10_000, length)),
        request_ts=20_000,
        tgt_item_id=tgt_items,  # half of them in the history: the match bias and counts fire
        tgt_category_id=tgt_cats,
    )


def _inputs(scorer, meta: dict, length: int, k: int, seed: int, raw: bool = False):
    """The flat state and candidate ids of one request, and the eager scores ``[K, tasks]``
    (``raw``: also the raw history ids ``[1, L]`` of `HISTORY_INPUTS`)."""
    from longseq.serve.export import HISTORY_INPUTS, flatten_user

    batch = _request(meta, length, k, seed)
    user = scorer.encode(batch)
    ids = batch.sparse
    item, cat = ids["tgt_item_id"].values(), ids["tgt_category_id"].values()
    want = scorer.score(user, item, cat)
    inputs = flatten_user(user) + (item[None], cat[None])
    if raw:
        return inputs, want, tuple(ids[n].values()[None] for n in HISTORY_INPUTS)
    return inputs, want


def _build(name: str, data: Path):
    """``common.build``, plus ``posbias``: the sdpa recipe tower with the position bias, and
    ``rankmixer``: the kv recipe tower with ``model.head=rankmixer`` (its user token an input)."""
    if name not in ("posbias", "rankmixer"):
        return build(name, data)
    from longseq.model.model import LongSeqModel
    from longseq.model.rankmixer_head import RankMixerConfig

    if name == "posbias":
        cfg = model_config("stca_sdpa_padded")
        cfg.stca.position_bias = True
    else:
        cfg = model_config("stca_kv_padded")
        cfg.head, cfg.rankmixer = "rankmixer", RankMixerConfig(dim=16, layers=2, ffn_mult=2.0)
    torch.manual_seed(0)
    model = LongSeqModel(cfg, sizes(data), TASKS).eval()
    with torch.no_grad():  # the biases start at zero: make them matter
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def packages(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from longseq.serve.export import export_model, export_scorer

    root = tmp_path_factory.mktemp("export")
    out = {}
    for i, name in enumerate(NAMES):
        model = _build(name, tiny_data)
        if i == 0:  # one through the checkpoint path
            ckpt = save(model, tiny_data, root / name)
            out[name] = (model, export_scorer(ckpt, root / f"{name}.pt2"))
        else:
            out[name] = (model, export_model(model, root / f"{name}.pt2"))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_exported_scores_equal_eager(name: str, packages, tiny_meta: dict) -> None:
    from longseq.serve import Scorer
    from longseq.serve.export import user_path

    model, path = packages[name]
    scorer = Scorer(model, cache_bytes=0)
    module = torch.export.load(path).module()
    user = torch.export.load(user_path(path)).module()
    for seed, (length, k) in enumerate(SHAPES):
        inputs, want, hist = _inputs(scorer, tiny_meta, length, k, seed, raw=True)
        with torch.no_grad():
            got = module(*inputs)
            state = user(*hist)
            end_to_end = module(*state, *inputs[len(state) :])
        assert got.shape == (1, k, 1)
        for a, b in zip(state, inputs, strict=False):  # the exported user side's state
            assert a.shape == b.shape and a.dtype == b.dtype
            assert float((a.double() - b.double()).abs().max()) <= 1e-5
        diff = float((got[0] - want).abs().max())
        diff = max(diff, float((end_to_end[0] - want).abs().max()))
        assert diff <= 1e-5, (name, length, k, diff)
        MAX_DIFF[name] = max(MAX_DIFF.get(name, 0.0), diff)
    # two requests of equal history length stacked: a dynamic batch dim
    (a, want_a), (b, want_b) = (_inputs(scorer, tiny_meta, 9, 5, s) for s in (10, 11))
    with torch.no_grad():
        got = module(*(torch.cat([x, y]) for x, y in zip(a, b, strict=True)))
    assert float((got - torch.stack([want_a, want_b])).abs().max()) <= 1e-5
    print(f"{name}: max |exported - eager| {MAX_DIFF[name]:.1e}")


@pytest.mark.parametrize("name", ["stca_kv_padded", "rankmixer"])
def test_package_scores_in_a_fresh_torch_only_process(name, packages, tiny_meta, tmp_path) -> None:
    from longseq.serve import Scorer
    from longseq.serve.export import CANDIDATE_INPUTS, state_names, user_path

    model, path = packages[name]
    inputs, want, hist = _inputs(Scorer(model, cache_bytes=0), tiny_meta, 23, 6, 3, raw=True)
    torch.save((hist, inputs), tmp_path / "inputs.pt")
    args = [path, user_path(path), tmp_path / "inputs.pt", tmp_path / "p"]
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == state_names(model) + list(
        CANDIDATE_INPUTS
    )
    for got in torch.load(tmp_path / "p"):
        assert float((got[0] - want).abs().max()) <= 1e-5


@pytest.mark.parametrize("kernel", ["pairs", "flex"])
def test_a_packed_model_exports_as_its_padded_equivalent(kernel, tiny_data, tiny_meta, tmp_path):
    """A model trained in the packed layout (``pairs``, or FlexAttention) is exported as the
    same function in the padded layout: its chained programs score as the eager packed model."""
    from longseq.serve import Scorer
    from longseq.serve.export import HISTORY_INPUTS, export_model, user_path

    torch.manual_seed(0)
    cfg = model_config("stca_pairs_packed")
    cfg.stca.kernel = kernel
    from longseq.model.model import LongSeqModel

    model = LongSeqModel(cfg, sizes(tiny_data), TASKS).eval()
    path = export_model(model, tmp_path / "packed.pt2")
    module, user = (torch.export.load(p).module() for p in (path, user_path(path)))
    scorer = Scorer(model, cache_bytes=0)
    for seed, (length, k) in enumerate(SHAPES):
        batch = _request(tiny_meta, length, k, seed)
        ids = batch.sparse
        item, cat = ids["tgt_item_id"].values(), ids["tgt_category_id"].values()
        want = scorer.score(scorer.encode(batch), item, cat)  # eager, packed state
        with torch.no_grad():
            got = module(
                *user(*(ids[n].values()[None] for n in HISTORY_INPUTS)), item[None], cat[None]
            )
        assert float((got[0] - want).abs().max()) <= 1e-5, (kernel, length, k)


def test_manifest_and_state_names_come_from_the_tower(tiny_data) -> None:
    """The export asks the tower (its `state_names`, `export_info`), never its class."""
    from longseq.serve.export import manifest, state_names

    absorbed = build("stca_absorbed_padded", tiny_data)
    assert state_names(absorbed) == ["x_0", "x_1", "positions", "hist_ids"]
    assert manifest(absorbed)["kernel"] == "absorbed" and manifest(absorbed)["num_layers"] == 2
    din = build("din", tiny_data)
    assert "kernel" not in manifest(din)
    assert state_names(din) == manifest(din)["inputs"][: len(state_names(din))]


def test_cli_config_composes() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR
    from longseq.serve.export import ExportConfig, register

    register()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("serve_export", overrides=["checkpoint=c", "out=o.pt2", "aoti=true"])
    job = OmegaConf.to_object(cfg)
    assert isinstance(job, ExportConfig) and job.aoti and job.user_side and job.out == "o.pt2"


def test_exported_graphs_extend_a_time_bias_state(packages, tiny_meta: dict) -> None:
    """With ``model.stca.time_bias`` the exported graphs serve an incremental user state: the
    exported user side of the *new* events alone, appended (dim 1) to the cached state's
    per-event tensors, with only ``positions`` (distance from the newest, time-delta bucket at
    the request time) rebuilt on the host, scores as the eager model does on the whole
    history (docs/serving.md)."""
    from longseq.serve import Scorer
    from longseq.serve.export import state_names, user_path

    model, path = packages["stca_time"]
    scorer = Scorer(model, cache_bytes=0)
    module = torch.export.load(path).module()
    user = torch.export.load(user_path(path)).module()
    names = state_names(model)
    batch = _request(tiny_meta, 30, 8, seed=5)
    ids = batch.sparse
    hist = [ids[n].values()[None] for n in ("hist_item_id", "hist_category_id", "hist_action")]
    want = scorer.score(scorer.encode(batch), ids["tgt_item_id"].values(),
                        ids["tgt_category_id"].values())  # fmt: skip
    with torch.no_grad():
        state: list[torch.Tensor] | None = None
        for lo, hi in ((0, 21), (21, 22), (22, 30)):  # a cached part, then new events
            part = [h[:, lo:hi] for h in hist]
            stale_dt = torch.zeros_like(part[0])  # the tokens do not read it under time_bias
            new = user(*part, stale_dt)
            state = list(new) if state is None else [
                s if n == "positions" else torch.cat([s, x], 1)
                for n, s, x in zip(names, state, new, strict=True)
            ]  # fmt: skip
        assert state is not None
        length = state[names.index("hist_ids")].shape[1]
        pos = torch.arange(length - 1, -1, -1)
        dt = ids["hist_dt_bucket"].values()  # `dt_buckets(request_ts - ts)`, as collated
        state[names.index("positions")] = torch.stack([pos, dt], -1)[None]
        cands = (ids["tgt_item_id"].values()[None], ids["tgt_category_id"].values()[None])
        got = module(*state, *cands)
    assert float((got[0] - want).abs().max()) <= 1e-5
