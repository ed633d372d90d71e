"""Every job validates its config exactly once, at its entry point (issue 24, item 3).

The ``validate`` methods of the entry configs and of their sub-configs are wrapped with a counter;
a tiny training (with its end-of-run evaluation callback), an evaluation and a batch scoring of
its checkpoint then run in this process. Each job must validate each of its configs once: the
entry config's ``validate`` validates the sub-configs, and nothing deeper down (the stream
builder, the plan builder, the DMP wrapper, the evaluation callback) validates them again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from inproc import tiny_job, train_in_process

from longseq.data.config import DataConfig
from longseq.data.windows import WindowConfig
from longseq.eval.config import EvalConfig, EvalDataConfig
from longseq.parallel.sharding import ShardingConfig
from longseq.serve.config import ServeConfig
from longseq.train.config import TrainerConfig, TrainJobConfig
from longseq.train.optim import DenseOptimConfig

COUNTED = (
    TrainJobConfig, TrainerConfig, DenseOptimConfig, DataConfig, WindowConfig, ShardingConfig,
    EvalConfig, EvalDataConfig, ServeConfig,
)  # fmt: skip


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts ``<Config>.validate`` calls by class name (the originals still run)."""
    counter: Counter = Counter()
    for cls in COUNTED:

        def counted(self, *args, _orig=cls.validate, _name=cls.__name__, **kwargs):
            counter[_name] += 1
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(cls, "validate", counted)
    return counter


def test_each_job_validates_each_config_once(
    calls: Counter, tiny_data: Path, tmp_path: Path
) -> None:
    from longseq.eval.evaluate import evaluate
    from longseq.serve.run import serve

    run = tmp_path / "run"
    job = tiny_job(tiny_data, run, 2, "trainer.eval_at_end=true", "trainer.eval_every=0")
    train_in_process(job)
    assert (run / "eval" / "eval.json").is_file()  # the evaluation callback ran
    train_configs = ("TrainJobConfig", "TrainerConfig", "DenseOptimConfig", "DataConfig")
    want = dict.fromkeys((*train_configs, "WindowConfig", "ShardingConfig"), 1)
    assert dict(calls) == want, "training"

    calls.clear()
    data = EvalDataConfig(path=str(tiny_data), batch_size=16)
    evaluate(EvalConfig(checkpoint=str(run), data=data, out=str(tmp_path / "e"), progress=False))
    assert dict(calls) == {"EvalConfig": 1, "EvalDataConfig": 1}, "evaluation"

    calls.clear()
    serve(ServeConfig(checkpoint=str(run), data=data, out=str(tmp_path / "s"), progress=False))
    assert dict(calls) == {"ServeConfig": 1, "EvalDataConfig": 1}, "serving"
