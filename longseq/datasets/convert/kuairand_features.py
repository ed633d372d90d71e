"""KuaiRand's side features: user features from ``user_features_<v>.csv`` (by ``user_id``),
candidate features from ``video_features_basic_<v>.csv`` (by ``video_id``), and the request's
local hour as a context feature. A file that is absent gives no features of its side (a note)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from longseq.datasets.convert.base import find_files
from longseq.datasets.convert.csvsource import CsvSpec, iter_blocks
from longseq.datasets.convert.features import FieldFeature, SideFeature, from_text, hour_feature

#: ``user_features_*.csv`` columns made ``id`` features (their text values, sorted)
KUAIRAND_USER_FEATURES = [
    "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
    "register_days_range", *[f"onehot_feat{i}" for i in range(18)],
]  # fmt: skip


def kuairand_video_features() -> list[FieldFeature]:
    """The default candidate features of ``video_features_basic_*.csv``."""
    return [
        FieldFeature("author_id", "id", cardinality=200_000),
        FieldFeature("video_type", "id"),
        FieldFeature("upload_type", "id"),
        FieldFeature("video_duration", "dense", transform="log1p_standardize"),
        FieldFeature("music_id", "id", cardinality=200_000),
        FieldFeature("tag", "multi_hot", separator=","),
    ]


def _read(files: list[Path], key: str, columns: list[str], block: int):
    """(keys, {column: text}, lines, the first file) of the files, streamed and concatenated."""
    keys, lines, cols = [], [], {c: [] for c in columns}
    for p in files:
        spec = CsvSpec(p, {key: pa.int64(), **{c: pa.string() for c in columns}})
        for batch, line in iter_blocks(spec, block):
            keys.append(batch.column(key).to_numpy(zero_copy_only=False))
            lines.append(np.arange(batch.num_rows, dtype=np.int64) + line)
            for c in columns:
                cols[c].append(batch.column(c))
    if not keys:
        z = np.zeros(0, np.int64)
        return z, {c: pa.array([], pa.string()) for c in columns}, z
    text = {c: pa.concat_arrays(v) for c, v in cols.items()}
    return np.concatenate(keys), text, np.concatenate(lines)


def side_features(
    src: Path,
    user_features: list[str],
    video_features: list[FieldFeature],
    context_hour: bool,
    tz_offset_s: int,
    block: int,
    note: Callable[[str], None],
) -> list[SideFeature]:
    """The features the ``kuairand`` options name (``user_features`` ... ``tz_offset_s``), from
    the files found under ``src`` (read in blocks of ``block`` bytes); a missing side file is a
    ``note``."""
    out: list[SideFeature] = []
    if context_hour:
        out.append(hour_feature("hour", tz_offset_s))
    sides = (
        ("user", "user", "user_features_*.csv", "user_id",
         [FieldFeature(c, "id") for c in user_features]),
        ("candidate", "item", "video_features_basic_*.csv", "video_id", list(video_features)),
    )  # fmt: skip
    for side, by, pattern, key, fields in sides:
        if not fields:
            continue
        files = find_files(src, pattern)
        if not files:
            note(f"src={src}: no {pattern}, so no {side} features")
            continue
        keys, text, lines = _read(files, key, [f.field for f in fields], block)
        source = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{pattern}"
        for ff in fields:
            out.append(from_text(ff, side, by, keys, text[ff.field], source, lines))
    return out
