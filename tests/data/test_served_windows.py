"""One served-window convention: an int of most recent events, 0 = the full stored history."""

from __future__ import annotations

import pytest

from longseq.data.windows import FULL, check_served_windows, served_window, served_windows


def test_zero_is_the_full_history_everywhere():
    assert FULL == 0
    assert served_window(0) is None and served_window(50) == 50
    assert served_windows([]) == [None]  # an empty list: the full history alone
    assert served_windows([50, 0, 250]) == [50, None, 250]
    with pytest.raises(ValueError, match="got -3"):
        served_window(-3)


@pytest.mark.parametrize(
    "build, key",
    [
        (lambda: __import__("longseq.eval.config", fromlist=["x"]).EvalConfig(
            checkpoint="c", out="o", windows=[50, -1]), "windows="),
        (lambda: __import__("longseq.serve.config", fromlist=["x"]).ServeConfig(
            checkpoint="c", out="o", window=-1), "window="),
    ],
)  # fmt: skip
def test_entry_configs_name_the_window_key(build, key):
    cfg = build()
    cfg.data.path = "d"
    with pytest.raises(ValueError, match=key):
        cfg.validate()


def test_trainer_eval_windows_named_and_zero_allowed():
    from longseq.train.config import TrainerConfig

    TrainerConfig(eval_windows=[50, 0]).validate("cpu")
    with pytest.raises(ValueError, match=r"trainer\.eval_windows=\[-2\]"):
        TrainerConfig(eval_windows=[-2]).validate("cpu")
    check_served_windows([0, 1], "k")
