"""`longseq.serve.export` with side features, for the MLP and the RankMixer head: the exported
user side takes the user/context feature inputs and returns the state with its feature part,
the candidate side takes the candidates' feature inputs, and both chained equal the eager
`Scorer` (fp32, 1e-5) over several history lengths, candidate counts and multi-hot list
lengths; the manifest names every feature input with its shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from feature_data import SPECS, feature_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
HEADS = ["mlp", "rankmixer"]

#: (history length, candidates, multi-hot slots); the export's example has L=5, K=3, M=4
SHAPES = [(7, 1, 1), (7, 4, 3), (30, 11, 6), (2, 64, 2)]


@pytest.fixture(scope="module")
def packages(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from longseq.serve.export import export_model

    root = tmp_path_factory.mktemp("export_features")
    return {
        h: (m := feature_model(h, tiny_data), export_model(m, root / f"{h}.pt2")) for h in HEADS
    }


def _pad(lists: list[list[int]], m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of ids -> ``[n, m]`` ids (zeros past each list) and ``[n]`` lengths."""
    ids = torch.zeros(len(lists), m, dtype=torch.int64)
    for i, x in enumerate(lists):
        ids[i, : len(x)] = torch.tensor(x, dtype=torch.int64)
    return ids, torch.tensor([len(x) for x in lists])


def _request(meta: dict, length: int, k: int, m: int, seed: int):
    """Raw history, user and candidate feature values of one request (lists of at most ``m``
    ids, some empty)."""
    rng = np.random.default_rng(seed)
    hist = dict(
        hist_item_id=rng.integers(0, meta["num_items"], length),
        hist_category_id=rng.integers(0, meta["num_categories"], length),
        hist_action=rng.integers(0, meta["num_actions"], length),
        hist_ts=np.sort(rng.integers(0, 10_000, length)),
        request_ts=20_000,
        tgt_item_id=rng.integers(0, meta["num_items"], k),
        tgt_category_id=rng.integers(0, meta["num_categories"], k),
    )

    def bag(card: int) -> list[int]:
        return rng.integers(0, card, int(rng.integers(0, m + 1))).tolist()

    values = {"age": int(rng.integers(0, 5)), "tags": bag(6), "activity": float(rng.uniform(0, 9)),
              "hour": int(rng.integers(0, 24)),
              "creator": rng.integers(0, 7, k).tolist(), "genres": [bag(4) for _ in range(k)],
              "duration": rng.uniform(0, 600, k).tolist()}  # fmt: skip
    return hist, values


def _graph_inputs(batch, values: dict, m: int):
    """The exported graphs' feature inputs of one request (B = 1), in `feature_inputs` order."""
    tags, tags_len = _pad([values["tags"]], m)
    user = (torch.tensor([values["age"]]), tags, tags_len, torch.tensor([values["hour"]]),
            batch.dense)  # fmt: skip
    genres, genres_len = _pad(values["genres"], m)
    cand = (torch.tensor(values["creator"])[None], genres[None], genres_len[None],
            batch.tgt_dense[None])  # fmt: skip
    return user, cand


@pytest.mark.parametrize("head", HEADS)
def test_exported_graphs_with_features_equal_eager(head, packages, tiny_meta) -> None:
    from longseq.serve import Scorer, make_request
    from longseq.serve.export import HISTORY_INPUTS, flatten_user, user_path

    model, path = packages[head]
    scorer = Scorer(model, cache_bytes=0)
    cand_graph = torch.export.load(path).module()
    user_graph = torch.export.load(user_path(path)).module()
    worst = 0.0
    for seed, (length, k, m) in enumerate(SHAPES):
        hist, values = _request(tiny_meta, length, k, m, seed)
        batch = make_request(**hist, features=SPECS, feature_values=values)
        want = scorer.score_batch(batch)  # eager: the model's whole forward
        user = scorer.encode(batch)
        ids = batch.sparse
        item, cat = ids["tgt_item_id"].values()[None], ids["tgt_category_id"].values()[None]
        ufeat, cfeat = _graph_inputs(batch, values, m)
        with torch.no_grad():
            state = user_graph(*(ids[n].values()[None] for n in HISTORY_INPUTS), *ufeat)
            got = cand_graph(*state, item, cat, *cfeat)
            eager_state = cand_graph(*flatten_user(user), item, cat, *cfeat)
        for a, b in zip(state, flatten_user(user), strict=True):  # the state, feature part too
            assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5
        assert got.shape == (1, k, 1)
        diff = max(float((got[0] - want).abs().max()), float((eager_state[0] - want).abs().max()))
        assert diff <= 1e-5, (head, length, k, m, diff)
        worst = max(worst, diff)
    print(f"{head}: max |exported - eager| with features {worst:.1e}")


@pytest.mark.parametrize("head", HEADS)
def test_two_requests_stacked(head, packages, tiny_meta) -> None:
    from longseq.serve import Scorer, make_request
    from longseq.serve.export import HISTORY_INPUTS, user_path

    model, path = packages[head]
    scorer = Scorer(model, cache_bytes=0)
    cand_graph, user_graph = (torch.export.load(p).module() for p in (path, user_path(path)))
    parts, wants = [], []
    for seed in (20, 21):
        hist, values = _request(tiny_meta, 9, 5, 3, seed)
        batch = make_request(**hist, features=SPECS, feature_values=values)
        wants.append(scorer.score_batch(batch))
        ids = batch.sparse
        ufeat, cfeat = _graph_inputs(batch, values, 3)
        hist_in = tuple(ids[n].values()[None] for n in HISTORY_INPUTS)
        cand = (ids["tgt_item_id"].values()[None], ids["tgt_category_id"].values()[None])
        parts.append((hist_in + ufeat, cand + cfeat))
    with torch.no_grad():
        state = user_graph(*(torch.cat(x) for x in zip(parts[0][0], parts[1][0], strict=True)))
        got = cand_graph(
            *state, *(torch.cat(x) for x in zip(parts[0][1], parts[1][1], strict=True))
        )
    assert float((got - torch.stack(wants)).abs().max()) <= 1e-5


def test_manifest_names_the_feature_inputs(packages) -> None:
    from longseq.serve.export import state_names, user_path

    for head in HEADS:
        model, path = packages[head]
        extra = {"manifest.json": ""}
        torch.export.load(user_path(path), extra_files=extra)
        man = json.loads(extra["manifest.json"])
        assert man["user_inputs"][4:] == ["feat_age", "feat_tags", "feat_tags_len", "feat_hour",
                                          "dense"]  # fmt: skip
        cand = ["tgt_feat_creator", "tgt_feat_genres", "tgt_feat_genres_len", "tgt_dense"]
        assert man["inputs"] == state_names(model) + ["tgt_item_id", "tgt_category_id", *cand]
        assert man["feature_inputs"] == {
            "feat_age": "int64 [B]", "feat_tags": "int64 [B, M_tags]", "feat_tags_len": "int64 [B]",
            "feat_hour": "int64 [B]", "dense": "float32 [B, 1]",
            "tgt_feat_creator": "int64 [B, K]", "tgt_feat_genres": "int64 [B, K, M_genres]",
            "tgt_feat_genres_len": "int64 [B, K]", "tgt_dense": "float32 [B, K, 1]",
        }  # fmt: skip
        assert man["features"] == [s.to_dict() for s in SPECS]
        last = "head_tokens" if head == "rankmixer" else "user_features"
        assert man["user_outputs"][-1] == last == state_names(model)[-1]


def test_a_feature_checkpoint_exports(tiny_data, tiny_meta, tmp_path) -> None:
    """Through the checkpoint path: the model rebuilt from ``longseq.json``'s features."""
    from feature_data import save_features

    from longseq.serve import Scorer, make_request
    from longseq.serve.export import HISTORY_INPUTS, export_scorer, user_path

    model = feature_model("mlp", tiny_data, seed=4)
    ckpt = save_features(model, tiny_data, tmp_path / "run")
    path = export_scorer(ckpt, tmp_path / "f.pt2")
    cand_graph, user_graph = (torch.export.load(p).module() for p in (path, user_path(path)))
    hist, values = _request(tiny_meta, 12, 6, 3, 7)
    batch = make_request(**hist, features=SPECS, feature_values=values)
    ids = batch.sparse
    ufeat, cfeat = _graph_inputs(batch, values, 3)
    with torch.no_grad():
        state = user_graph(*(ids[n].values()[None] for n in HISTORY_INPUTS), *ufeat)
        got = cand_graph(
            *state, ids["tgt_item_id"].values()[None], ids["tgt_category_id"].values()[None], *cfeat
        )
    want = Scorer(model, cache_bytes=0).score_batch(batch)
    assert float((got[0] - want).abs().max()) <= 1e-5
