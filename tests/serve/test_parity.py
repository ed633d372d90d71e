"""Serving scores equal the evaluation's (`longseq.eval.predict.predict`) on the same checkpoint
and data, to 1e-5 in fp32: STCA in every attention form and layout, and every baseline. The
checkpoints are randomly initialised models written with the project's checkpoint code."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from common import CONFIGS, build, save  # noqa: E402

#: the evaluation's one-process load (intended) warns through DCP
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

#: largest |serve - eval| seen per config (printed with -s)
MAX_DIFF: dict[str, float] = {}


@pytest.fixture(scope="module")
def checkpoints(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return {n: save(build(n, tiny_data), tiny_data, root / n) for n in CONFIGS}


def _eval_scores(ckpt: Path, data: Path, window: int | None, batch_size: int):
    from longseq.eval.load import load_model
    from longseq.eval.predict import predict
    from longseq.parallel.checkpoint import verify_checkpoint

    model = load_model(ckpt, verify_checkpoint(ckpt))
    return predict(model, data / "test", window, batch_size, progress=False)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_serve_scores_equal_eval_scores(name: str, checkpoints, tiny_data: Path, tmp_path):
    from longseq.eval.config import EvalDataConfig
    from longseq.serve.config import ServeConfig
    from longseq.serve.run import serve

    window = 48 if name.endswith("padded") else None  # a window, and the full history
    cfg = ServeConfig(
        checkpoint=str(checkpoints[name]),
        data=EvalDataConfig(path=str(tiny_data), batch_size=16),
        window=window or 0,
        out=str(tmp_path),
        progress=False,
    )
    summary = serve(cfg)
    got = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    want = _eval_scores(checkpoints[name], tiny_data, window, 16)
    assert summary["targets"] == len(want.request_id) == len(got["request_id"])
    np.testing.assert_array_equal(got["request_id"], want.request_id)
    np.testing.assert_array_equal(got["user_id"], want.user_id)
    np.testing.assert_array_equal(got["target_index"], want.target_index)
    np.testing.assert_array_equal(got["label_click"], want.labels[:, 0])
    diff = float(np.abs(np.asarray(got["score_click"]) - want.scores[:, 0]).max())
    MAX_DIFF[name] = diff
    print(f"{name}: max |serve - eval| = {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.parametrize("name", ["stca_kv_padded", "stca_pairs_packed", "stca_paper", "stca_soft"])
def test_packed_serve_scores_equal_eval_scores(name: str, checkpoints, tiny_data: Path, tmp_path):
    """``packed=true``: each batch scored at once through FlexAttention, whatever layout the
    model was trained in, equals the evaluation's scores."""
    from longseq.eval.config import EvalDataConfig
    from longseq.serve.config import ServeConfig
    from longseq.serve.run import serve

    data = EvalDataConfig(path=str(tiny_data), batch_size=64)
    cfg = ServeConfig(checkpoint=str(checkpoints[name]), data=data, out=str(tmp_path),
                      progress=False, packed=True)  # fmt: skip
    serve(cfg)
    got = pq.read_table(tmp_path / "scores.parquet").to_pydict()
    want = _eval_scores(checkpoints[name], tiny_data, None, 64)
    np.testing.assert_array_equal(got["request_id"], want.request_id)
    np.testing.assert_array_equal(got["target_index"], want.target_index)
    diff = float(np.abs(np.asarray(got["score_click"]) - want.scores[:, 0]).max())
    print(f"{name} packed: max |serve - eval| = {diff:.2e}")
    assert diff <= 1e-5


def test_packed_scoring_of_a_baseline_is_a_clear_error(checkpoints):
    from longseq.serve.scorer import Scorer

    with pytest.raises(ValueError, match=r"packed scoring .* STCA's.*PoolingTower"):
        Scorer.from_checkpoint(checkpoints["pooling"], packed=True)
