"""Small models of every tower (STCA with each kernel of each layout, every baseline) and
checkpoints of them, for the serving tests."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch

TASKS = ["click"]

#: name -> (tower, overrides of its config section)
CONFIGS: dict[str, tuple[str, dict]] = {
    **{
        f"stca_{kernel}_{layout}": ("stca", {"kernel": kernel, "layout": layout})
        for kernel, layout in (
            ("kv", "padded"),
            ("absorbed", "padded"),
            ("sdpa", "padded"),
            ("pairs", "packed"),
        )
    },
    "stca_paper": ("stca", {"match_bias": False, "count_channel": False}),
    "stca_soft": ("stca", {"soft_match": True, "soft_match_cooccur": 0.1}),
    "stca_time": ("stca", {"time_bias": True, "position_bias": True}),
    "pooling": ("pooling", {}),
    "din": ("din", {"att_hidden": [8]}),
    "transformer": ("transformer", {"num_heads": 2}),
    "sim": ("sim", {"num_heads": 2, "top_k": 4}),
}


def model_config(name: str):
    """A small `ModelConfig` of ``CONFIGS[name]``."""
    from longseq.model.model import ModelConfig

    tower, over = CONFIGS[name]
    cfg = ModelConfig(embedding_dim=8, pos_dim=4, tower=tower, head_hidden=[16])
    section = getattr(cfg, tower)
    extra = {"num_layers": 2, "num_heads": 2} if tower == "stca" else {}
    setattr(cfg, tower, dataclasses.replace(section, d_model=16, **{**extra, **over}))
    return cfg


def sizes(data: Path):
    from longseq.model.embeddings import TableSizes

    meta = json.loads((data / "meta.json").read_text())
    return TableSizes(
        num_items=meta["num_items"],
        num_categories=meta["num_categories"],
        num_actions=meta["num_actions"],
    )


def build(name: str, data: Path, seed: int = 0):
    """A randomly initialised `LongSeqModel` of ``CONFIGS[name]`` (eval mode)."""
    from longseq.model.model import LongSeqModel

    torch.manual_seed(seed)
    return LongSeqModel(model_config(name), sizes(data), TASKS).eval()


def save(model, data: Path, run_dir: Path) -> Path:
    """``model`` as a checkpoint of the project's format (`save_checkpoint`, one process)."""
    from longseq.parallel.checkpoint import save_checkpoint

    meta = {
        "model": dataclasses.asdict(model.cfg),
        "tables": dataclasses.asdict(sizes(data)),
        "tasks": list(model.tasks),
        "data": str(data),
    }
    with warnings.catch_warnings():  # DCP: "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        return save_checkpoint(run_dir, 1, {"model": model.state_dict()}, meta, {})
