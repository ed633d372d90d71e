"""The one check that a configured data source can be read: the data set folder exists, the
split folder exists, and it holds Parquet files. Training (its ``data.split`` and
``trainer.eval_split``), evaluation and serving call it at their entry points, so that a wrong
path fails before anything is built, naming the config key and the path."""

from __future__ import annotations

from pathlib import Path


def check_split(data_path: str | Path, split: str, key: str = "data.split") -> Path:
    """The split folder ``<data_path>/<split>``; ``FileNotFoundError`` naming the config key and
    the path when the data set folder or the split is missing, or holds no Parquet file.

    Args:
        data_path: the data set folder (the value of ``data.path``).
        split: the split's folder name.
        key: the config key that named ``split`` (``data.split``, ``trainer.eval_split``).
    """
    root = Path(data_path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.path={data_path}: {root} is not a folder (a longseq data set folder holds "
            "meta.json and its split folders; python -m longseq.datasets.synth writes one)"
        )
    folder = root / split
    if not folder.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] not in "._")
        raise FileNotFoundError(
            f"{key}={split}: the data set {data_path} has no {split!r} split ({folder} does not "
            f"exist; its splits: {', '.join(have) or 'none'}; synthetic data: python -m "
            "longseq.datasets.synth valid_fraction=<f> writes a valid split) (data.path="
            f"{data_path})"
        )
    if next(folder.rglob("*.parquet"), None) is None:
        raise FileNotFoundError(
            f"{key}={split}: {folder} holds no .parquet files (data.path={data_path})"
        )
    return folder
