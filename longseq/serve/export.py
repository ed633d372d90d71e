"""Export the candidate-scoring graph with `torch.export`: a ``.pt2`` loadable without longseq.

`CandidateScorer` is the candidate side of a checkpointed model (any tower: STCA with any
kernel, a packed-layout STCA as its `padded_equivalent`, and every baseline) as a
pure-torch module: the item and category
tables copied out of the TorchRec EmbeddingCollection into plain `nn.Embedding`, the target
tokens, the tower's ``score`` and the head (either ``model.head``). Its inputs are a user state
flattened into tensors (`flatten_user`: the tower's state as
`longseq.serve.flat_state.flatten_state` writes it, then with ``model.head=rankmixer`` the head's
user tokens `HEAD_TOKENS`; in the order of `state_names`) followed by the candidates' raw ids
``tgt_item_id`` / ``tgt_category_id`` int64 ``[B, K]``; its output is probabilities
``[B, K, tasks]``. `export_scorer` exports it with dynamic ``B``, ``K`` (candidates) and ``L``
(history length) and writes the ``.pt2`` (``torch.export.save``) with a JSON manifest in its
extra files (``manifest.json``: input names, tasks, form). Loading it needs torch only::

    ep = torch.export.load("scorer.pt2")
    probs = ep.module()(*state_tensors, tgt_item_id, tgt_category_id)

The user state is computed by longseq (`longseq.serve.Scorer.encode`) and sent with the request.
Every history slot of the state must be a real event (no padding: one request per state, or
requests of equal history length stacked). docs/serving.md, "Export".

CLI: ``python -m longseq.serve.export checkpoint=<run dir | pointer | step> out=<file.pt2>``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from longseq.model.interaction import UserSide
from longseq.model.model import LongSeqModel
from longseq.model.tower import SequenceTower, UserState
from longseq.serve.flat_state import flatten_state, named_leaves, structure, unflatten_state

#: the candidates' raw id inputs, after the state's tensors
CANDIDATE_INPUTS = ("tgt_item_id", "tgt_category_id")

#: the head's user tokens among the inputs, after the tower's state (``model.head=rankmixer``)
HEAD_TOKENS = "head_tokens"

#: the user side's raw history inputs (`UserEncoder`)
HISTORY_INPUTS = ("hist_item_id", "hist_category_id", "hist_action", "hist_dt_bucket")


def _tower(model: LongSeqModel) -> SequenceTower:
    tower = model.interaction.tower
    if tower.layout != "padded":  # `padded_equivalent` turns a packed tower padded first
        raise ValueError(
            f"export takes a tower in the padded layout; {type(tower).__name__} is {tower.layout}"
        )
    return tower


def _has_head_tokens(model: LongSeqModel) -> bool:
    """Whether the head takes user-side tokens (``model.head=rankmixer`` with a user token):
    then `HEAD_TOKENS` is an input after the tower's state."""
    return model.cfg.head == "rankmixer" and bool(model.interaction.head.user_features)


def flatten_user(user: UserSide) -> tuple[torch.Tensor, ...]:
    """A `UserSide`'s tensors in the order of `state_names`: the tower's flat state, then the
    head's user tokens ``[B, U, D]`` if it has any (``model.head=rankmixer``)."""
    flat = flatten_state(user.state)
    return flat if user.head_tokens is None else (*flat, user.head_tokens)


def _example_head_tokens(model: LongSeqModel, b: int) -> tuple[torch.Tensor, ...]:
    """Random head user tokens ``[b, U, D]`` (empty tuple: the head takes none)."""
    if not _has_head_tokens(model):
        return ()
    u, d = len(model.interaction.head.user_features), model.cfg.rankmixer.dim
    return (torch.randn(b, u, d, generator=torch.Generator().manual_seed(1)),)


def _ids(tower: SequenceTower, item: torch.Tensor, category: torch.Tensor) -> torch.Tensor | None:
    """The raw ids ``tower`` compares (`SequenceTower.ids`), ``[B, N, F]``, or None."""
    return tower.ids({"item_id": item, "category_id": category})


def _example_state(model: LongSeqModel, b: int = 2, length: int = 5, seed: int = 0) -> UserState:
    """The tower's state of a random padding-free history of ``b`` requests x ``length`` events."""
    gen = torch.Generator().manual_seed(seed)
    hist = torch.randn(b, length, model.cfg.tower_config.d_model, generator=gen)
    mask = torch.ones(b, length, dtype=torch.bool)
    ids = torch.randint(0, 3, (b, length, 2), generator=gen)
    tower = _tower(model)
    with torch.no_grad():
        return tower.encode_user(hist, mask, _ids(tower, ids[..., 0], ids[..., 1]))


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
    else its state's field paths (`longseq.serve.flat_state.named_leaves`)."""
    names = _tower(model).state_names()
    if names is None:
        names = [name for name, _ in named_leaves(_example_state(model))]
    return names + ([HEAD_TOKENS] if _has_head_tokens(model) else [])


class CandidateScorer(nn.Module):
    """The candidate side of a model over plain tensors (see the module doc).

    ``forward(*state, tgt_item_id, tgt_category_id)`` -> probabilities ``[B, K, tasks]``.
    """

    def __init__(self, model: LongSeqModel) -> None:
        super().__init__()
        self.tower = _tower(model)
        self.spec = structure(_example_state(model))  # the state's shape, no tensors
        tables = model.ec.embeddings
        self.item = nn.Embedding.from_pretrained(tables["item"].weight.detach().clone())
        self.category = nn.Embedding.from_pretrained(tables["category"].weight.detach().clone())
        self.tokens = model.interaction.tokens
        self.head = model.interaction.head
        self.head_kind = model.cfg.head
        self.head_tokens = _has_head_tokens(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``(*state, [head_tokens [B,U,D]], tgt_item_id [B,K], tgt_category_id [B,K])`` ->
        ``[B, K, tasks]``."""
        *state, item, category = inputs
        user_tokens = state.pop() if self.head_tokens else None
        item_emb, category_emb = self.item(item), self.category(category)
        xt = self.tokens.target(item_emb, category_emb)  # [B,K,d]
        tgt_ids = _ids(self.tower, item, category)
        z = self.tower.score(unflatten_state(self.spec, tuple(state)), xt, tgt_ids)
        if self.head_kind == "mlp":
            return torch.sigmoid(self.head(torch.cat([z, xt], dim=-1)))
        # the RankMixer head over [B, K] targets: SequenceInteraction.target_features' names,
        # each request's user tokens broadcast to its K candidates
        feats = {"z": z, "item": item_emb, "category": category_emb}
        if user_tokens is not None:
            user_tokens = user_tokens[:, None].expand(-1, z.shape[1], -1, -1)
        return torch.sigmoid(self.head.mix(feats, user_tokens))


class UserEncoder(nn.Module):
    """The user side of a model over plain tensors: raw history ids -> the flat state.

    ``forward(hist_item_id, hist_category_id, hist_action, hist_dt_bucket)``, each int64
    ``[B, L]`` (oldest -> newest, every slot a real event; ``dt_bucket`` as
    `longseq.data.collate.dt_buckets` computes it) -> the state tensors in `state_names` order.
    """

    def __init__(self, model: LongSeqModel) -> None:
        super().__init__()
        self.tower = _tower(model)
        tables = model.ec.embeddings
        self.tables = nn.ModuleList(
            nn.Embedding.from_pretrained(tables[n].weight.detach().clone())
            for n in ("item", "category", "action", "dt_bucket")
        )
        self.tokens = model.interaction.tokens
        self.head = model.interaction.head if _has_head_tokens(model) else None

    def forward(self, *ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(hist_item_id, hist_category_id, hist_action, hist_dt_bucket)`` -> flat state."""
        item, category, action, dt = (t(i) for t, i in zip(self.tables, ids, strict=True))
        b, length = ids[0].shape
        pos = torch.arange(length - 1, -1, -1, device=ids[0].device).expand(b, length)
        tok = self.tokens
        side = tok.side_proj(torch.cat([action, dt, tok.pos(pos)], -1))
        hist = tok.hist_norm(tok.item_proj(torch.cat([item, category], -1)) + side)
        mask = torch.ones(b, length, dtype=torch.bool, device=hist.device)
        hist_ids = _ids(self.tower, ids[0], ids[1])
        flat = flatten_state(self.tower.encode_user(hist, mask, hist_ids))
        if self.head is None:
            return flat
        # the head's user token: the mean of the history tokens (no padding: a plain mean)
        return (*flat, self.head.user_tokens({"history": hist.mean(dim=1)}))


def _example(model: LongSeqModel, b: int = 2, k: int = 3, length: int = 5):
    """Example inputs of `CandidateScorer`: a random history's state, then candidate ids."""
    gen = torch.Generator().manual_seed(0)
    cand = tuple(torch.randint(0, 3, (b, k), generator=gen) for _ in CANDIDATE_INPUTS)
    state = flatten_state(_example_state(model, b, length)) + _example_head_tokens(model, b)
    return state + cand


def _dynamic_shapes(model: LongSeqModel) -> tuple:
    """``B``, ``K`` and ``L`` of every input (`state_names` + `CANDIDATE_INPUTS`), read off two
    example states: a dim that follows the requests (2 -> 3) is ``B``, one that follows the
    history length (5 -> 7) is ``L``; the others are fixed (width, heads)."""
    big_b, big_k, big_l = (torch.export.Dim(n, min=1, max=1 << 20) for n in ("B", "K", "L"))
    small = flatten_state(_example_state(model, 2, 5)) + _example_head_tokens(model, 2)
    large = flatten_state(_example_state(model, 3, 7)) + _example_head_tokens(model, 3)
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
    return tuple(shapes)


def manifest(model: LongSeqModel) -> dict[str, Any]:
    """What a loader needs to call the package: its inputs in order, outputs, tasks."""
    out = {
        "format": "longseq-candidate-scorer/1",
        "inputs": state_names(model) + list(CANDIDATE_INPUTS),
        "user_inputs": list(HISTORY_INPUTS),
        "output": "probabilities [B, K, tasks]",
        "tasks": list(model.tasks),
        "tower": model.cfg.tower,
        "head": model.cfg.head,
        "d_model": model.cfg.tower_config.d_model,
    }
    out.update(_tower(model).export_info())
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
    """Export ``model``'s candidate side (dynamic ``B``, ``K``, ``L``) to the ``.pt2`` ``out``
    and, with ``user_side``, its `UserEncoder` (dynamic ``B``, ``L``) to `user_path` ``(out)``.
    ``aoti``: also compile each with AOTInductor to `aoti_path` of it (load with
    ``torch._inductor.aoti_load_package``)."""
    model = padded_equivalent(model.cpu().eval())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"manifest.json": json.dumps(manifest(model), indent=1)}
    with torch.no_grad():
        ep = torch.export.export(
            CandidateScorer(model).eval(),
            _example(model),
            dynamic_shapes={"inputs": _dynamic_shapes(model)},
            strict=False,
        )
        _save(ep, out, extra, aoti)
        if user_side:
            big_b, big_l = (torch.export.Dim(n, min=1, max=1 << 20) for n in ("B", "L"))
            gen = torch.Generator().manual_seed(0)
            ids = tuple(torch.randint(0, 2, (2, 5), generator=gen) for _ in HISTORY_INPUTS)
            shapes = ({0: big_b, 1: big_l},) * len(HISTORY_INPUTS)
            ep = torch.export.export(
                UserEncoder(model).eval(), ids, dynamic_shapes={"ids": shapes}, strict=False
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
