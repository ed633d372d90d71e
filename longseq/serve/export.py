"""Export the candidate-scoring graph with `torch.export`: a ``.pt2`` loadable without longseq.

`CandidateScorer` (`longseq.serve.export_graphs`) is the candidate side of a checkpointed model
(any tower: STCA with any kernel, a packed-layout STCA as its `padded_equivalent`, and every
baseline) as a pure-torch module: the item, category and candidate feature tables copied out of
the TorchRec EmbeddingCollection into plain `nn.Embedding`, the target tokens, the tower's
``score`` and the head (either ``model.head``). Its inputs are a user state flattened into
tensors (`flatten_user`: the tower's state as `longseq.serve.flat_state.flatten_state` writes
it, then with ``model.head=rankmixer`` the head's user tokens `HEAD_TOKENS`, or with the MLP
head and user/context features their vector `USER_FEATURES`; in the order of `state_names`)
followed by the candidates' raw ids ``tgt_item_id`` / ``tgt_category_id`` int64 ``[B, K]`` and
the candidate feature inputs (`export_graphs.feature_inputs`); its output is probabilities
``[B, K, tasks]``. `export_model` exports it with dynamic ``B``, ``K`` (candidates), ``L``
(history length) and ``M_<name>`` (a multi-hot feature's padded list length) and writes the
``.pt2`` (``torch.export.save``) with a JSON manifest in its extra files (``manifest.json``:
input names and shapes, tasks, features). Loading it needs torch only::

    ep = torch.export.load("scorer.pt2")
    probs = ep.module()(*state_tensors, tgt_item_id, tgt_category_id, *candidate_features)

The user state is computed by the exported user side (`UserEncoder`, from the raw history ids
and user/context features) or by longseq (`longseq.serve.Scorer.encode`). Every history slot of
the state must be a real event (no padding: one request per state, or requests of equal history
length stacked). docs/serving.md, "Export".

CLI: ``python -m longseq.serve.export checkpoint=<run dir | pointer | step> out=<file.pt2>``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from longseq.model.model import LongSeqModel
from longseq.model.tower import UserState
from longseq.serve.export_graphs import (
    CANDIDATE_INPUTS,
    HEAD_TOKENS,
    HISTORY_INPUTS,
    USER_FEATURES,
    CandidateScorer,
    UserEncoder,
    feature_inputs,
    flatten_user,
    tower_of,
    user_extra,
    user_extra_width,
)
from longseq.serve.flat_state import flatten_state, named_leaves

__all__ = [
    "CANDIDATE_INPUTS",
    "HEAD_TOKENS",
    "HISTORY_INPUTS",
    "USER_FEATURES",
    "CandidateScorer",
    "UserEncoder",
    "export_model",
    "export_scorer",
    "flatten_user",
    "manifest",
    "state_names",
]

#: the export's example: B requests, K candidates, L events, M ids per multi-hot list
_B, _K, _L, _M = 2, 3, 5, 4


def _example_extra(model: LongSeqModel, b: int) -> tuple[torch.Tensor, ...]:
    """A random `user_extra` input ``[b, ...]`` (empty tuple: the head takes none)."""
    if user_extra(model) is None:
        return ()
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(b, *user_extra_width(model), generator=gen),)


def _example_state(model: LongSeqModel, b: int = _B, length: int = _L, seed: int = 0) -> UserState:
    """The tower's state of a random padding-free history of ``b`` requests x ``length`` events."""
    gen = torch.Generator().manual_seed(seed)
    hist = torch.randn(b, length, model.cfg.tower_config.d_model, generator=gen)
    mask = torch.ones(b, length, dtype=torch.bool)
    ids = torch.randint(0, 3, (b, length, 3), generator=gen)
    by_feature = {"item_id": ids[..., 0], "category_id": ids[..., 1], "dt_bucket": ids[..., 2]}
    tower = tower_of(model)
    with torch.no_grad():
        return tower.encode_user(hist, mask, tower.history_ids(by_feature))


def _example_features(model: LongSeqModel, request: bool, lead: tuple[int, ...]):
    """Random side feature inputs of one side (`feature_inputs` order) with leading dims
    ``lead`` (``(B,)`` or ``(B, K)``), and their dynamic shapes (``B``, ``K``, ``M_<name>``)."""
    gen = torch.Generator().manual_seed(2)
    dims = {n: torch.export.Dim(n, min=1, max=1 << 20) for n in ("B", "K")}
    lead_dims = {i: dims[n] for i, n in enumerate(("B", "K")[: len(lead)])}
    side = model.interaction.side
    feats = side.request_feats if request else side.candidate_feats
    tensors, shapes = [], []
    for f in feats:
        if f.kind == "id":
            tensors.append(torch.randint(0, f.cardinality, lead, generator=gen))
            shapes.append(dict(lead_dims))
        elif f.kind == "multi_hot":
            tensors.append(torch.randint(0, f.cardinality, (*lead, _M), generator=gen))
            m = torch.export.Dim(f"M_{f.name}", min=1, max=1 << 20)
            shapes.append({**lead_dims, len(lead): m})
            tensors.append(torch.randint(0, _M + 1, lead, generator=gen))
            shapes.append(dict(lead_dims))
    n_dense = sum(f.kind == "dense" for f in feats)
    if n_dense:
        tensors.append(torch.randn(*lead, n_dense, generator=gen))
        shapes.append(dict(lead_dims))
    return tuple(tensors), shapes


def padded_equivalent(model: LongSeqModel) -> LongSeqModel:
    """``model`` itself, or for a model whose tower is in the packed layout a copy with the
    tower's `SequenceTower.padded_equivalent` (same weights). What `export_model` traces."""
    tower = model.interaction.tower
    padded = tower.padded_equivalent()
    if padded is tower:
        return model
    out = copy.deepcopy(model)
    out.interaction.tower = padded.eval()
    return out


def state_names(model: LongSeqModel) -> list[str]:
    """Names of the flattened user-state inputs of `CandidateScorer`, in order: the tower's
    `SequenceTower.state_names` (STCA: ``k_i, v_i`` or ``x_i``, ``positions``, ``hist_ids``),
    else its state's field paths (`longseq.serve.flat_state.named_leaves`), then `user_extra`."""
    names = tower_of(model).state_names()
    if names is None:
        names = [name for name, _ in named_leaves(_example_state(model))]
    extra = user_extra(model)
    return names + ([extra] if extra else [])


def _example(model: LongSeqModel):
    """Example inputs of `CandidateScorer`: a random history's state, then candidate ids and
    candidate features."""
    gen = torch.Generator().manual_seed(0)
    cand = tuple(torch.randint(0, 3, (_B, _K), generator=gen) for _ in CANDIDATE_INPUTS)
    state = flatten_state(_example_state(model)) + _example_extra(model, _B)
    return state + cand + _example_features(model, False, (_B, _K))[0]


def _dynamic_shapes(model: LongSeqModel) -> tuple:
    """``B``, ``K``, ``L`` (and ``M_<name>``) of every input of `CandidateScorer`, the state's
    read off two example states: a dim that follows the requests (2 -> 3) is ``B``, one that
    follows the history length (5 -> 7) is ``L``; the others are fixed (width, heads)."""
    big_b, big_k, big_l = (torch.export.Dim(n, min=1, max=1 << 20) for n in ("B", "K", "L"))
    small = flatten_state(_example_state(model, 2, 5)) + _example_extra(model, 2)
    large = flatten_state(_example_state(model, 3, 7)) + _example_extra(model, 3)
    shapes = []
    for name, x, y in zip(state_names(model), small, large, strict=True):
        dims = {}
        for i, pair in enumerate(zip(x.shape, y.shape)):
            if pair == (2, 3):
                dims[i] = big_b
            elif pair == (5, 7):
                dims[i] = big_l
            elif pair[0] != pair[1]:
                raise ValueError(f"state input {name}: dim {i} is neither B nor L ({pair})")
        shapes.append(dims)
    shapes += [{0: big_b, 1: big_k}] * len(CANDIDATE_INPUTS)
    return tuple(shapes + _example_features(model, False, (_B, _K))[1])


def _feature_shapes(model: LongSeqModel) -> dict[str, str]:
    """Each side feature input's dtype and shape, in words."""
    out = {}
    for request, lead in ((True, "B"), (False, "B, K")):
        for name in feature_inputs(model.features, request):
            if name in ("dense", "tgt_dense"):
                n = sum(f.kind == "dense" and f.per_request == request for f in model.features)
                out[name] = f"float32 [{lead}, {n}]"
            elif name.endswith("_len"):
                out[name] = f"int64 [{lead}]"
            else:
                spec = next(f for f in model.features if f.key == name)
                m = f", M_{spec.name}" if spec.kind == "multi_hot" else ""
                out[name] = f"int64 [{lead}{m}]"
    return out


def manifest(model: LongSeqModel) -> dict[str, Any]:
    """What a loader needs to call the package: its inputs in order, outputs, tasks, the side
    features (their inputs' shapes and the dense columns' transforms)."""
    out = {
        "format": "longseq-candidate-scorer/1",
        "inputs": state_names(model)
        + list(CANDIDATE_INPUTS)
        + feature_inputs(model.features, False),
        "user_inputs": list(HISTORY_INPUTS) + feature_inputs(model.features, True),
        "user_outputs": state_names(model),
        "output": "probabilities [B, K, tasks]",
        "tasks": list(model.tasks),
        "tower": model.cfg.tower,
        "head": model.cfg.head,
        "d_model": model.cfg.tower_config.d_model,
    }
    if model.features:
        out["feature_inputs"] = _feature_shapes(model)
        out["features"] = [f.to_dict() for f in model.features]
        extra = user_extra(model)
        if extra is not None:
            out["user_extra_shape"] = f"[B, {', '.join(map(str, user_extra_width(model)))}]"
    out.update(tower_of(model).export_info())
    return out


def user_path(out: str | Path) -> Path:
    """Where `export_model` writes the user side next to the candidate side ``out``."""
    out = Path(out)
    return out.with_name(out.stem + ".user.pt2")


def aoti_path(path: str | Path) -> Path:
    """Where ``aoti=True`` writes the AOTInductor package of the exported program ``path``."""
    path = Path(path)
    return path.with_name(path.stem + ".aoti.pt2")


def _save(ep: torch.export.ExportedProgram, path: Path, extra: dict, aoti: bool) -> None:
    torch.export.save(ep, path, extra_files=extra)
    if aoti:  # needs a C++ compiler; about 35 s per program on a busy 2-core CPU
        torch._inductor.aoti_compile_and_package(ep, package_path=str(aoti_path(path)))


def export_model(
    model: LongSeqModel, out: str | Path, user_side: bool = True, aoti: bool = False
) -> Path:
    """Export ``model``'s candidate side (dynamic ``B``, ``K``, ``L``, ``M_<name>``) to the
    ``.pt2`` ``out`` and, with ``user_side``, its `UserEncoder` (dynamic ``B``, ``L``,
    ``M_<name>``) to `user_path` ``(out)``. ``aoti``: also compile each with AOTInductor to
    `aoti_path` of it (load with ``torch._inductor.aoti_load_package``)."""
    model = padded_equivalent(model.cpu().eval())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"manifest.json": json.dumps(manifest(model), indent=1)}
    with torch.no_grad():
        ep = torch.export.export(
            CandidateScorer(model, _example_state(model)).eval(),
            _example(model),
            dynamic_shapes={"inputs": _dynamic_shapes(model)},
            strict=False,
        )
        _save(ep, out, extra, aoti)
        if user_side:
            big_b, big_l = (torch.export.Dim(n, min=1, max=1 << 20) for n in ("B", "L"))
            gen = torch.Generator().manual_seed(0)
            ids = tuple(torch.randint(0, 2, (_B, _L), generator=gen) for _ in HISTORY_INPUTS)
            feats, fshapes = _example_features(model, True, (_B,))
            shapes = ({0: big_b, 1: big_l},) * len(HISTORY_INPUTS) + tuple(fshapes)
            ep = torch.export.export(
                UserEncoder(model).eval(),
                ids + feats,
                dynamic_shapes={"inputs": shapes},
                strict=False,
            )
            _save(ep, user_path(out), extra, aoti)
    return out


def export_scorer(
    checkpoint: str | Path, out: str | Path, user_side: bool = True, aoti: bool = False
) -> Path:
    """Export the candidate side (and user side) of a checkpoint (folder, pointer or run dir)
    to ``out`` (and `user_path` ``(out)``); see `export_model`."""
    from longseq.serve.scorer import Scorer

    model = Scorer.from_checkpoint(checkpoint, cache_mb=0).model
    return export_model(model, out, user_side, aoti)


@dataclass
class ExportConfig:
    """``python -m longseq.serve.export``: the candidate-scoring graph of a checkpoint.

    Attributes:
        checkpoint: a ``step_<n>`` checkpoint folder, a pointer file or a run dir.
        out: the ``.pt2`` file of the candidate side.
        user_side: also write the user side (`UserEncoder`) to ``<out stem>.user.pt2``.
        aoti: also compile each program with AOTInductor to ``<stem>.aoti.pt2`` (needs a C++
            compiler; tens of seconds per program on CPU).
    """

    checkpoint: str = "???"
    out: str = "???"
    user_side: bool = True
    aoti: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the key (run once by the CLI, before loading anything)."""
        if not self.checkpoint:
            raise ValueError("checkpoint must be set (a checkpoint folder, pointer or run dir)")
        if not str(self.out).endswith(".pt2"):
            raise ValueError(f"out={self.out!r}: must name a .pt2 file (torch.export.save)")


def register() -> None:
    """Register `ExportConfig` as ``serve_export_schema`` in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="serve_export_schema", node=ExportConfig)


def _main() -> None:
    import hydra
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR

    register()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve_export")
    def main(cfg) -> None:
        from longseq._quiet import quiet_known_warnings

        quiet_known_warnings()
        job: ExportConfig = OmegaConf.to_object(cfg)
        job.validate()
        print(export_scorer(job.checkpoint, job.out, job.user_side, job.aoti))

    main()


if __name__ == "__main__":
    _main()
