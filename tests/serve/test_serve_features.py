"""Side features on the serving path, for the MLP and the RankMixer head: `Scorer` scores equal
``model(batch)`` (request by request, through the cache, packed, from raw values with
``make_request``), a cache hit with other user/context features gives the fresh state's scores,
and ``python -m longseq.serve`` equals ``longseq.eval`` on a checkpoint that reads features."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import TASKS  # noqa: E402
from feature_data import SPECS, feature_data, feature_model, save_features  # noqa: E402

from longseq.serve import Scorer, make_request

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
HEADS = ["mlp", "rankmixer"]


@pytest.fixture(scope="module")
def fdata(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return feature_data(tiny_data, tmp_path_factory.mktemp("fdata"))


@pytest.fixture(scope="module")
def table(fdata: Path):
    from longseq.data.shards import list_parquet_files

    return pq.read_table(list_parquet_files(fdata / "test")[0]).slice(0, 8)


def _batch(table, windows=None):
    from longseq.data.collate import collate

    return collate(table, TASKS, windows, features=SPECS)


@pytest.mark.parametrize("head", HEADS)
def test_request_path_and_cache_equal_forward(head: str, fdata: Path, table) -> None:
    scorer = Scorer(feature_model(head, fdata))
    batch = _batch(table, np.array([3, 0, 40, 1000, 7, 1, 64, 12]))
    with torch.no_grad():
        want = torch.sigmoid(scorer.model(batch))
    torch.testing.assert_close(scorer.score_batch(batch), want, atol=1e-6, rtol=0)
    versions = list(range(batch.batch_size))
    first = scorer.score_requests(batch, versions)
    again = scorer.score_requests(batch, versions)  # every state from the cache
    assert scorer.cache.hits == batch.batch_size
    torch.testing.assert_close(first, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, first, atol=1e-7, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_a_hit_serves_the_requests_own_user_features(head: str, fdata: Path, table) -> None:
    """The cache keys the tower's state by ``(user_id, version)``; the user and context
    features are the request's own: a hit with other features scores as a fresh encode."""
    import pyarrow as pa

    scorer = Scorer(feature_model(head, fdata))
    batch = _batch(table)
    versions = [("v", r) for r in range(batch.batch_size)]
    base = scorer.score_requests(batch, versions)
    # the same histories (same versions: hits), other user and context features
    cols = {"feat_age": pa.array([(a + 1) % 5 for a in table.column("feat_age").to_pylist()]),
            "feat_activity": pa.array([a + 5.0 for a in table.column("feat_activity").to_pylist()]),
            "feat_hour": pa.array([(h + 7) % 24 for h in table.column("feat_hour").to_pylist()])}  # fmt: skip
    moved = table
    for name, col in cols.items():
        moved = moved.set_column(moved.schema.get_field_index(name), name, col)
    other = _batch(moved)
    hits = scorer.cache.hits
    got = scorer.score_requests(other, versions)
    assert scorer.cache.hits == hits + batch.batch_size
    with torch.no_grad():
        want = torch.sigmoid(scorer.model(other))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float((got - base).abs().max()) > 1e-4  # the features did move the scores
    # the per-request API: encode hits, with the new request's features
    user = scorer.encode(other, 2, version=versions[2])
    nt = other.num_targets.tolist()
    s, e = sum(nt[:2]), sum(nt[:3])
    items = other.sparse["tgt_item_id"].values()[s:e]
    cats = other.sparse["tgt_category_id"].values()[s:e]
    row = moved.slice(2, 1).to_pylist()[0]
    cand = {n: row[f"tgt_feat_{n}"] for n in ("creator", "genres", "duration")}
    torch.testing.assert_close(scorer.score(user, items, cats, cand), want[s:e], atol=1e-6, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_make_request_with_raw_feature_values(head: str, fdata: Path, table) -> None:
    scorer = Scorer(feature_model(head, fdata))
    row = table.slice(5, 1).to_pylist()[0]
    values = {s.name: row[s.column] for s in SPECS}
    req = make_request(
        row["hist_item_id"], row["hist_category_id"], row["hist_action"], row["hist_ts"],
        row["request_ts"], row["tgt_item_id"], row["tgt_category_id"], window=20,
        features=SPECS, feature_values=values,
    )  # fmt: skip
    want = scorer.score_batch(_batch(table.slice(5, 1), [20]))
    torch.testing.assert_close(scorer.score_batch(req), want, atol=1e-6, rtol=0)
    assert req.sparse.keys() == _batch(table.slice(5, 1), [20]).sparse.keys()
    user_only = {s.name: row[s.column] for s in SPECS if s.per_request}
    user = scorer.encode(make_request(
        row["hist_item_id"], row["hist_category_id"], row["hist_action"], row["hist_ts"],
        row["request_ts"], window=20, features=SPECS, feature_values=user_only,
    ))  # fmt: skip
    cand = {s.name: row[s.column] for s in SPECS if not s.per_request}
    got = scorer.score(user, row["tgt_item_id"], row["tgt_category_id"], cand)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="'creator'.* is missing"):
        scorer.score(user, row["tgt_item_id"], row["tgt_category_id"], {})
    with pytest.raises(ValueError, match="'age'.* is missing"):
        make_request([1], [1], [0], [5], 10, features=SPECS, feature_values={})
    with pytest.raises(ValueError, match="feat_hour: id 99 .* 'feat_hour' has 24 rows"):
        scorer.score_batch(make_request([1], [1], [0], [5], 10, features=SPECS,
                                        feature_values={**user_only, "hour": 99}))  # fmt: skip


def test_packed_scoring_with_features(fdata: Path, table) -> None:
    scorer = Scorer(feature_model("mlp", fdata), packed=True)
    batch = _batch(table)
    with torch.no_grad():
        want = torch.sigmoid(scorer.model(batch))
    torch.testing.assert_close(scorer.score_batch(batch), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_serve_scores_equal_eval_with_features(head, fdata: Path, tmp_path: Path) -> None:
    from longseq.eval.config import EvalDataConfig
    from longseq.eval.load import load_model
    from longseq.eval.predict import predict
    from longseq.parallel.checkpoint import verify_checkpoint
    from longseq.serve.config import ServeConfig
    from longseq.serve.run import serve

    ckpt = save_features(feature_model(head, fdata, seed=3), fdata, tmp_path / "run")
    assert [f.to_dict() for f in Scorer.from_checkpoint(ckpt).model.features] == [
        s.to_dict() for s in SPECS
    ]
    cfg = ServeConfig(checkpoint=str(ckpt), data=EvalDataConfig(path=str(fdata), batch_size=16),
                      window=48, out=str(tmp_path / "out"), progress=False)  # fmt: skip
    serve(cfg)
    got = pq.read_table(tmp_path / "out" / "scores.parquet").to_pydict()
    want = predict(load_model(ckpt, verify_checkpoint(ckpt)), fdata / "test", 48, 16,
                   progress=False)  # fmt: skip
    np.testing.assert_array_equal(got["request_id"], want.request_id)
    np.testing.assert_array_equal(got["target_index"], want.target_index)
    diff = float(np.abs(np.asarray(got["score_click"]) - want.scores[:, 0]).max())
    print(f"{head}: max |serve - eval| with features = {diff:.2e}")
    assert diff <= 1e-5
