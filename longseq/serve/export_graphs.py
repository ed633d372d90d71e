"""The modules `longseq.serve.export` traces: `UserEncoder` (raw history ids and user/context
features -> the flat user state) and `CandidateScorer` (the flat user state, candidate ids and
candidate features -> probabilities), over plain tensors, every table copied out of the TorchRec
EmbeddingCollection into `nn.Embedding`. `ExportFeatures` is the side features' part of them:
the model's `longseq.model.features.SideFeatures` over padded tensors (docs/serving.md,
"Export").

Side feature inputs, per declared feature the model reads, in declaration order (`feature_inputs`
names them): an ``id`` one int64 id per row (``feat_<name> [B]``, ``tgt_feat_<name> [B, K]``); a
``multi_hot`` its lists padded to ``M`` ids and their lengths (``feat_<name> [B, M]`` +
``feat_<name>_len [B]``; ``tgt_feat_<name> [B, K, M]`` + ``tgt_feat_<name>_len [B, K]``; slots
past the length are ignored); then the ``dense`` ones as one float32 tensor of transformed
values (`FeatureSpec.transform_values`): ``dense [B, n]``, ``tgt_dense [B, K, n]``.
"""

from __future__ import annotations

import torch
from torch import nn

from longseq.data.features import FeatureSpec
from longseq.model.interaction import UserSide
from longseq.model.model import LongSeqModel
from longseq.model.tower import SequenceTower, UserState
from longseq.serve.flat_state import flatten_state, structure, unflatten_state

#: the candidates' raw id inputs, after the state's tensors
CANDIDATE_INPUTS = ("tgt_item_id", "tgt_category_id")

#: the head's user tokens among the inputs, after the tower's state (``model.head=rankmixer``)
HEAD_TOKENS = "head_tokens"

#: the MLP head's user/context feature vector among the inputs, after the tower's state
USER_FEATURES = "user_features"

#: the user side's raw history inputs (`UserEncoder`)
HISTORY_INPUTS = ("hist_item_id", "hist_category_id", "hist_action", "hist_dt_bucket")


def tower_of(model: LongSeqModel) -> SequenceTower:
    """The model's tower, which must be in the padded layout (see `padded_equivalent`)."""
    tower = model.interaction.tower
    if tower.layout != "padded":  # `padded_equivalent` turns a packed tower padded first
        raise ValueError(
            f"export takes a tower in the padded layout; {type(tower).__name__} is {tower.layout}"
        )
    return tower


def user_extra(model: LongSeqModel) -> str | None:
    """The input after the tower's state: `HEAD_TOKENS` (``model.head=rankmixer`` with a user
    token), `USER_FEATURES` (the MLP head with user/context features) or None."""
    if model.cfg.head == "rankmixer":
        return HEAD_TOKENS if model.interaction.head.user_features else None
    return USER_FEATURES if model.interaction.side.request_feats else None


def user_extra_width(model: LongSeqModel) -> tuple[int, ...]:
    """The per-request shape of `user_extra`'s input: ``(U, D)`` or ``(W,)``."""
    if user_extra(model) == HEAD_TOKENS:
        return (len(model.interaction.head.user_features), model.cfg.rankmixer.dim)
    return (sum(model.interaction.side.user_widths.values()),)


def flatten_user(user: UserSide) -> tuple[torch.Tensor, ...]:
    """A `UserSide`'s tensors in the order of `state_names`: the tower's flat state, then the
    head's user tokens ``[B, U, D]`` (``model.head=rankmixer``) or the MLP head's user feature
    vector ``[B, W]``, if it has them."""
    flat = flatten_state(user.state)
    extra = user.head_tokens if user.head_tokens is not None else user.features
    return flat if extra is None else (*flat, extra)


def ids_of(tower: SequenceTower, item: torch.Tensor, category: torch.Tensor):
    """The raw ids ``tower`` compares (`SequenceTower.ids`), ``[B, N, F]``, or None."""
    return tower.ids({"item_id": item, "category_id": category})


def feature_inputs(features: tuple[FeatureSpec, ...], request: bool) -> list[str]:
    """Input names of the user/context (``request``) or candidate features, in order."""
    feats = [f for f in features if f.per_request == request]
    names: list[str] = []
    for f in feats:
        if f.sparse:
            names += [f.key] + ([f"{f.key}_len"] if f.kind == "multi_hot" else [])
    if any(f.kind == "dense" for f in feats):
        names.append("dense" if request else "tgt_dense")
    return names


class ExportFeatures(nn.Module):
    """One side's feature groups from padded inputs (see the module doc): ``forward(*inputs)``
    -> ``{group: [..., w]}`` in first-declaration order, as `SideFeatures.user` /
    `SideFeatures.candidate` compute them."""

    def __init__(self, model: LongSeqModel, request: bool) -> None:
        super().__init__()
        side = model.interaction.side
        self.feats = tuple(side.request_feats if request else side.candidate_feats)
        tables = model.ec.embeddings
        self.tables = nn.ModuleDict(
            {
                f.name: nn.Embedding.from_pretrained(
                    tables[f"feat_{f.name}"].weight.detach().clone()
                )
                for f in self.feats
                if f.sparse
            }
        )
        self.num_inputs = len(feature_inputs(self.feats, request))

    def forward(self, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        it = iter(inputs)
        sparse = {}
        for f in self.feats:
            if not f.sparse:
                continue
            emb = self.tables[f.name](next(it))
            if f.kind == "multi_hot":
                lens = next(it)
                slots = torch.arange(emb.shape[-2], device=emb.device)
                mask = (slots < lens.unsqueeze(-1)).unsqueeze(-1).to(emb.dtype)
                emb = (emb * mask).sum(dim=-2)
                if f.pooling == "mean":
                    emb = emb / lens.clamp(min=1).unsqueeze(-1).to(emb.dtype)
            sparse[f.name] = emb
        dense = next(it, None)
        parts: dict[str, list[torch.Tensor]] = {}
        d = 0
        for f in self.feats:
            if f.kind == "dense":
                v = dense[..., d : d + 1]
                d += 1
            else:
                v = sparse[f.name]
            parts.setdefault(f.token_group, []).append(v)
        return {g: torch.cat(p, dim=-1) if len(p) > 1 else p[0] for g, p in parts.items()}


class CandidateScorer(nn.Module):
    """The candidate side of a model over plain tensors (module doc of `longseq.serve.export`).

    ``forward(*state, [head_tokens | user_features], tgt_item_id, tgt_category_id,
    *candidate_features)`` -> probabilities ``[B, K, tasks]``.
    """

    def __init__(self, model: LongSeqModel, example: UserState) -> None:
        super().__init__()
        self.tower = tower_of(model)
        self.spec = structure(example)  # the state's shape, no tensors
        self.num_state = len(flatten_state(example))
        tables = model.ec.embeddings
        self.item = nn.Embedding.from_pretrained(tables["item"].weight.detach().clone())
        self.category = nn.Embedding.from_pretrained(tables["category"].weight.detach().clone())
        self.tokens = model.interaction.tokens
        self.head = model.interaction.head
        self.head_kind = model.cfg.head
        self.extra = user_extra(model)
        self.features = ExportFeatures(model, request=False)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """See the class doc."""
        n = self.num_state + (self.extra is not None)
        state, (item, category), cand = inputs[:n], inputs[n : n + 2], list(inputs[n + 2 :])
        extra = state[-1] if self.extra is not None else None
        state = state[: self.num_state]
        item_emb, category_emb = self.item(item), self.category(category)
        xt = self.tokens.target(item_emb, category_emb)  # [B,K,d]
        tgt_ids = ids_of(self.tower, item, category)
        z = self.tower.score(unflatten_state(self.spec, tuple(state)), xt, tgt_ids)
        groups = self.features(cand)
        k = z.shape[1]
        if self.head_kind == "mlp":
            parts = [z, xt]
            if extra is not None:  # the request's user feature vector, to each candidate
                parts.append(extra[:, None].expand(-1, k, -1))
            return torch.sigmoid(self.head(torch.cat(parts + list(groups.values()), dim=-1)))
        # the RankMixer head over [B, K] targets: SequenceInteraction.target_features' names,
        # each request's user tokens broadcast to its K candidates
        feats = {"z": z, "item": item_emb, "category": category_emb, **groups}
        if extra is not None:
            extra = extra[:, None].expand(-1, k, -1, -1)
        return torch.sigmoid(self.head.mix(feats, extra))


class UserEncoder(nn.Module):
    """The user side of a model over plain tensors: raw history ids and user/context features
    -> the flat state.

    ``forward(hist_item_id, hist_category_id, hist_action, hist_dt_bucket, *user_features)``:
    the history ids int64 ``[B, L]`` (oldest -> newest, every slot a real event; ``dt_bucket``
    as `longseq.data.collate.dt_buckets` computes it), then the user/context feature inputs
    (module doc) -> the state tensors in `state_names` order.
    """

    def __init__(self, model: LongSeqModel) -> None:
        super().__init__()
        self.tower = tower_of(model)
        tables = model.ec.embeddings
        self.tables = nn.ModuleList(
            nn.Embedding.from_pretrained(tables[n].weight.detach().clone())
            for n in ("item", "category", "action", "dt_bucket")
        )
        self.tokens = model.interaction.tokens
        self.extra = user_extra(model)
        self.head = model.interaction.head if self.extra == HEAD_TOKENS else None
        self.features = ExportFeatures(model, request=True)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """See the class doc."""
        ids, feat_inputs = inputs[: len(HISTORY_INPUTS)], list(inputs[len(HISTORY_INPUTS) :])
        item, category, action, dt = (t(i) for t, i in zip(self.tables, ids, strict=True))
        b, length = ids[0].shape
        pos = torch.arange(length - 1, -1, -1, device=ids[0].device).expand(b, length)
        hist = self.tokens.events(item, category, action, dt, pos)
        mask = torch.ones(b, length, dtype=torch.bool, device=hist.device)
        by_feature = {"item_id": ids[0], "category_id": ids[1], "dt_bucket": ids[3]}
        hist_ids = self.tower.history_ids(by_feature)
        flat = flatten_state(self.tower.encode_user(hist, mask, hist_ids))
        groups = self.features(feat_inputs)
        if self.extra == USER_FEATURES:
            return (*flat, torch.cat(list(groups.values()), dim=-1))
        if self.head is None:
            return flat
        # the head's user tokens: the history token is the mean of the history tokens (no
        # padding: a plain mean), then the user/context feature groups
        extra = {"history": hist.mean(dim=1)} if "history" in self.head.user_features else {}
        return (*flat, self.head.user_tokens({**extra, **groups}))
