"""The tower protocol (`longseq.model.tower`): for every tower, STCA kernel and layout,
``score(encode_user(h), t) == forward(h, t)``; scoring candidates in chunks against one state
equals scoring them at once; the state does not depend on (and is not changed by) the targets."""

from __future__ import annotations

import dataclasses
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from longseq.model.baselines import (
    DINConfig,
    DINTower,
    MeanPoolingConfig,
    MeanPoolingTower,
    SIMConfig,
    SIMTower,
    TransformerConfig,
    TransformerTower,
)
from longseq.model.interaction import SequenceInteraction
from longseq.model.model_config import _with_towers
from longseq.model.ops.kernels import LAYOUTS, kernels_of
from longseq.model.stca import STCAConfig, STCATower
from longseq.model.tower import ID_FEATURES, SequenceTower, UserState
from longseq.model.towers import TOWERS, Tower

D = 8
HIST_LENS = [3, 0, 7, 1]  # incl. a request without history
N_TGT = [4, 3, 1, 4]
RECIPE = dict(match_bias=True, position_bias=True, count_channel=True, position_dim=4)


def _stca(kernel: str, **kw) -> STCATower:
    layout = "packed" if kernel in kernels_of("packed") else "padded"
    return STCATower(STCAConfig(D, 2, 3, kernel=kernel, layout=layout, **kw))


PADDED: dict[str, Callable[[], SequenceTower]] = {
    **{f"stca_{k}": (lambda k=k: _stca(k)) for k in kernels_of("padded")},
    **{f"stca_{k}_recipe": (lambda k=k: _stca(k, **RECIPE)) for k in kernels_of("padded")},
    **{
        f"stca_{k}_time": (lambda k=k: _stca(k, **RECIPE, time_bias=True))
        for k in kernels_of("padded")
    },
    "stca_shared_hist_ffn": lambda: _stca("kv", shared_hist_ffn=True, ffn_depth=2),
    "pooling": lambda: MeanPoolingTower(MeanPoolingConfig(d_model=D)),
    "din": lambda: DINTower(DINConfig(d_model=D, att_hidden=[6, 4])),
    "din_last2": lambda: DINTower(DINConfig(d_model=D, att_hidden=[6], last_n=2)),
    "transformer": lambda: TransformerTower(TransformerConfig(d_model=D, num_heads=2)),
    "transformer_causal_absorbed": lambda: TransformerTower(
        TransformerConfig(d_model=D, num_heads=2, causal=True, kernel="absorbed")
    ),
    "sim": lambda: SIMTower(SIMConfig(d_model=D, num_heads=2, top_k=2)),
}
#: the packed layout's kernels (``flex`` runs its ``pairs`` fallback here: autograd is on)
PACKED: dict[str, Callable[[], SequenceTower]] = {
    **{f"stca_{k}": (lambda k=k: _stca(k)) for k in kernels_of("packed")},
    **{f"stca_{k}_recipe": (lambda k=k: _stca(k, **RECIPE)) for k in kernels_of("packed")},
    **{
        f"stca_{k}_time": (lambda k=k: _stca(k, **RECIPE, time_bias=True))
        for k in kernels_of("packed")
    },
}


def _tower(make: Callable[[], SequenceTower]) -> SequenceTower:
    torch.manual_seed(0)
    return make().double().eval()


def _inputs(tower: SequenceTower, seed: int = 0):
    """Padded ``hist [B,L,d]``, mask, ``tgt [B,T,d]``, and the tower's ids (small vocabularies,
    so matches happen)."""
    g = torch.Generator().manual_seed(seed)
    b, L, T = len(HIST_LENS), max(HIST_LENS), max(N_TGT)
    mask = torch.arange(L)[None, :] < torch.tensor(HIST_LENS)[:, None]
    hist = torch.randn(b, L, D, generator=g, dtype=torch.float64)
    tgt = torch.randn(b, T, D, generator=g, dtype=torch.float64)
    f, e = len(tower.id_features), len(tower.event_features)
    hist_ids = torch.randint(0, 3, (b, L, f), generator=g) if f else None
    tgt_ids = torch.randint(0, 3, (b, T, f), generator=g) if f else None
    if e:  # event features (STCA's dt buckets) follow the ids, on the history side only
        dt = torch.randint(0, 64, (b, L, e), generator=g)
        hist_ids = dt if hist_ids is None else torch.cat([hist_ids, dt], -1)
    return hist, mask, tgt, hist_ids, tgt_ids


def _tensors(state: UserState) -> list[torch.Tensor]:
    out = []
    for f in dataclasses.fields(state):
        stack = [getattr(state, f.name)]
        while stack:
            x = stack.pop()
            if isinstance(x, torch.Tensor):
                out.append(x.clone())
            elif isinstance(x, (list, tuple)):
                stack.extend(x)
    return out


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(PADDED))
def test_padded_score_of_state_is_forward_in_chunks_and_state_is_target_free(name):
    tower = _tower(PADDED[name])
    hist, mask, tgt, hist_ids, tgt_ids = _inputs(tower)
    z = tower(hist, mask, tgt, hist_ids, tgt_ids)
    state = tower.encode_user(hist, mask, hist_ids)
    before = _tensors(state)
    _close(tower.score(state, tgt, tgt_ids), z)
    # candidates in chunks against the same state
    cuts = [(0, 1), (1, 3), (3, 4)]
    chunks = [
        tower.score(state, tgt[:, a:b], None if tgt_ids is None else tgt_ids[:, a:b])
        for a, b in cuts
    ]
    _close(torch.cat(chunks, dim=1), z)
    # another candidate set, same state object
    _, _, tgt2, _, tgt_ids2 = _inputs(tower, seed=1)
    _close(tower.score(state, tgt2, tgt_ids2), tower(hist, mask, tgt2, hist_ids, tgt_ids2))
    after = _tensors(state)
    assert len(before) == len(after) > 0
    for x, y in zip(before, after):
        assert torch.equal(x, y)


def _flat(hist, mask, tgt, hist_ids, tgt_ids, n_tgt):
    tmask = torch.arange(tgt.shape[1])[None, :] < torch.tensor(n_tgt)[:, None]
    return (
        hist[mask],
        tgt[tmask],
        None if hist_ids is None else hist_ids[mask],
        None if tgt_ids is None else tgt_ids[tmask],
    )


@pytest.mark.parametrize("name", list(PACKED))
def test_packed_score_of_state_is_forward_in_chunks_and_state_is_target_free(name):
    tower = _tower(PACKED[name])
    hist, mask, tgt, hist_ids, tgt_ids = _inputs(tower)
    lens, n_tgt = torch.tensor(HIST_LENS), torch.tensor(N_TGT)
    x, xt, hid, tid = _flat(hist, mask, tgt, hist_ids, tgt_ids, N_TGT)
    z = tower.forward_packed(x, lens, xt, n_tgt, hid, tid)
    state = tower.encode_user_packed(x, lens, hid)
    before = _tensors(state)
    _close(tower.score_packed(state, xt, n_tgt, tid), z)
    # the same function as the padded layout's
    padded = tower.padded_equivalent()
    assert padded.layout == "padded" and tower.padded_equivalent() is not tower
    torch.testing.assert_close(z, padded(hist, mask, tgt, hist_ids, tgt_ids)[mask_t(N_TGT)])
    # candidates in chunks: each request's first 1 (or fewer) targets, then the rest
    first = [min(1, n) for n in N_TGT]
    rest = [n - f for n, f in zip(N_TGT, first)]
    zs = []
    for a, b in ((0, 1), (1, max(N_TGT))):
        counts = first if a == 0 else rest
        _, xt_c, _, tid_c = _flat(
            hist, mask, tgt[:, a:b], hist_ids, None if tgt_ids is None else tgt_ids[:, a:b], counts
        )
        zs.append(tower.score_packed(state, xt_c, torch.tensor(counts), tid_c))
    # reassemble in request order: request r's first chunk rows, then its rest
    o1, o2, rows = 0, 0, []
    for f, r in zip(first, rest):
        rows += [zs[0][o1 : o1 + f], zs[1][o2 : o2 + r]]
        o1, o2 = o1 + f, o2 + r
    _close(torch.cat(rows), z)
    for x0, x1 in zip(before, _tensors(state)):
        assert torch.equal(x0, x1)


def mask_t(n_tgt: list[int]) -> torch.Tensor:
    return torch.arange(max(n_tgt))[None, :] < torch.tensor(n_tgt)[:, None]


def test_every_registered_tower_is_a_sequence_tower_with_declared_inputs():
    for name, entry in TOWERS.items():
        tower = entry.module(entry.default())
        assert isinstance(tower, SequenceTower), name
        assert set(tower.id_features) <= set(ID_FEATURES), name
        assert tower.layout in LAYOUTS, name
        assert tower.padded_equivalent().layout == "padded", name
        assert tower.packed_kernel in (None, *kernels_of("packed")), name
    with pytest.raises(TypeError, match="SequenceTower"):
        Tower(nn.Linear, MeanPoolingConfig)


@pytest.mark.parametrize("name", list(TOWERS))
def test_state_names_name_every_tensor_of_the_padded_state(name):
    """A tower's `state_names` (when it gives them) are one per tensor of its flat state, in
    order, unique; its packed scoring kernel scores a packed state like its forward."""
    entry = TOWERS[name]
    torch.manual_seed(0)
    tower = entry.module(dataclasses.replace(entry.default(), d_model=D)).eval()
    hist, mask, tgt, hist_ids, tgt_ids = _inputs(tower)
    hist, tgt = hist.float(), tgt.float()  # FlexAttention on CPU: fp32 and narrower
    state = tower.encode_user(hist, mask, hist_ids)
    names = tower.state_names()
    if names is not None:
        leaves = [x for x in _tensors(dataclasses.replace(state, hist_mask=None))]
        assert len(names) == len(set(names)) == len(leaves)
    if tower.packed_kernel is None:
        with pytest.raises(NotImplementedError):
            tower.encode_user_packed(hist[mask], torch.tensor(HIST_LENS))
        return
    x, xt, hid, tid = _flat(hist, mask, tgt, hist_ids, tgt_ids, N_TGT)
    with torch.no_grad():
        packed = tower.encode_user_packed(x, torch.tensor(HIST_LENS), hid)
        z = tower.score_packed(packed, xt, torch.tensor(N_TGT), tid, tower.packed_kernel)
    want = tower(hist, mask, tgt, hist_ids, tgt_ids)[mask_t(N_TGT)]
    torch.testing.assert_close(z, want, rtol=1e-5, atol=1e-5)


def test_stca_layers_are_the_per_layer_modules():
    tower = _stca("kv")
    assert tower.checkpoint_layers() == [*tower.hist_ffn, *tower.attn, *tower.fuse_ffn]
    assert tower.shard_layers() == [*tower.hist_ffn, *tower.attn]
    assert MeanPoolingTower(MeanPoolingConfig(d_model=D)).checkpoint_layers() == []


def _docs_example(monkeypatch) -> types.ModuleType:
    """Import the smallest-tower example of docs/model.md ("The tower protocol") as a module."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "model.md").read_text()
    section = text.split("## The tower protocol", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("docs_last_tower")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, "docs/model.md", "exec", dont_inherit=True), module.__dict__)  # noqa: S102
    return module


def test_the_docs_tower_is_one_file_plus_one_registration(monkeypatch):
    """The docs' example tower, registered by one `TOWERS` entry, gets a config section and runs
    inside the model; its state scores candidates like its forward."""
    docs = _docs_example(monkeypatch)
    last, config = docs.LastTower, docs.LastConfig
    tower = _tower(lambda: last(config(d_model=D)))
    hist, mask, tgt, _, _ = _inputs(tower)
    _close(tower.score(tower.encode_user(hist, mask), tgt), tower(hist, mask, tgt))

    monkeypatch.setitem(TOWERS, "last", Tower(last, config))  # the one registration
    cfg_type = _with_towers()  # what model.py builds from TOWERS at import
    cfg = cfg_type(embedding_dim=4, pos_dim=4, tower="last", head_hidden=[8])
    cfg.last.d_model = D
    cfg.validate()
    interaction = SequenceInteraction(cfg, 2)
    lens, n_tgt = torch.tensor([2, 0, 3]), torch.tensor([1, 2, 2])
    emb = {
        k: JaggedTensor(torch.randn(int(n.sum()), 4), lengths=n)
        for k, n in [(f"hist_{f}", lens) for f in ("item_id", "category_id", "action")]
        + [("hist_dt_bucket", lens), ("tgt_item_id", n_tgt), ("tgt_category_id", n_tgt)]
    }
    assert interaction(emb, n_tgt).shape == (5, 2)


class _Last(SequenceTower):
    """The docs' smallest tower (docs/model.md, "The tower protocol")."""

    def __init__(self, cfg: MeanPoolingConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * cfg.d_model, cfg.d_model)

    def encode_user(self, hist, hist_mask, hist_ids=None):
        last = (hist_mask.sum(1) - 1).clamp(min=0)
        return _LastState(hist[torch.arange(hist.shape[0]), last] * hist_mask.any(1)[:, None])

    def score(self, state, tgt, tgt_ids=None):
        user = state.last[:, None].expand(-1, tgt.shape[1], -1)
        return self.proj(torch.cat([user, tgt], dim=-1))


@dataclasses.dataclass
class _LastState(UserState):
    last: torch.Tensor


def test_a_new_tower_needs_only_the_protocol():
    tower = _tower(lambda: _Last(MeanPoolingConfig(d_model=D)))
    Tower(_Last, MeanPoolingConfig)  # the registration entry accepts it
    hist, mask, tgt, _, _ = _inputs(tower)
    state = tower.encode_user(hist, mask)
    _close(tower.score(state, tgt), tower(hist, mask, tgt))


@pytest.mark.parametrize("kernel", kernels_of("padded"))
def test_a_state_without_a_mask_scores_as_one_with_every_slot_valid(kernel):
    """``hist_mask=None`` (what an exported graph passes) is the all-valid mask, exactly."""
    tower = _tower(lambda: _stca(kernel, **RECIPE))
    hist, _, tgt, hist_ids, tgt_ids = _inputs(tower)
    full = torch.ones(hist.shape[:2], dtype=torch.bool)
    state = tower.encode_user(hist, full, hist_ids)
    want = tower.score(state, tgt, tgt_ids)
    got = tower.score(dataclasses.replace(state, hist_mask=None), tgt, tgt_ids)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
