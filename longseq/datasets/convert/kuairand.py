"""KuaiRand (1K, 27K, Pure) -> request-level Parquet.

Input (as published, ``<src>`` or ``<src>/data``): ``log_standard_*.csv`` (the recommendation
feed), ``log_random_*.csv`` (randomly exposed videos), ``video_features_basic_*.csv`` (the
``tag`` column gives the category). Log columns used: ``user_id, video_id, date (yyyymmdd),
hourmin (HHMM), time_ms`` and the feedback flags. Time is ``time_ms`` (milliseconds); where it
is empty, ``date`` + ``hourmin`` in Beijing time (``tz_offset_s``).

- requests: a user's standard-log impressions grouped by gap (``gap_s``, ``max_targets``);
- history: every earlier impression (standard and, by default, random) with its feedback
  packed into ``hist_action`` (bit k = ``action_columns[k]``);
- targets: the request's impressions, labels ``tgt_is_click``, ``tgt_long_view``,
  ``tgt_is_like`` (``tasks``); category: first tag of the video (unknown: its own category);
- the random log's requests (grouped the same way) form the ``test_random`` split;
- side features (`kuairand_features`): the request's local hour (context), the user's
  ``user_features_*.csv`` columns (user), the video's ``video_features_basic_*.csv`` columns
  (candidate).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.datasets.convert.base import Converter, find_files, seq_column
from longseq.datasets.convert.csvsource import CsvSpec, bad_row_error, iter_blocks
from longseq.datasets.convert.features import FieldFeature, field_checks
from longseq.datasets.convert.kuairand_features import (
    KUAIRAND_USER_FEATURES,
    kuairand_video_features,
)
from longseq.datasets.convert.options import DatasetOptions, SplitConfig
from longseq.datasets.convert.partition import event_schema

_VARIANTS = {"pure": "KuaiRand-Pure", "1k": "KuaiRand-1K", "27k": "KuaiRand-27K"}
_UNKNOWN_TAG = -1


def _variant(path: Path) -> str:
    m = re.search(r"_(pure|1k|27k)(?:_part\d+)?\.csv$", path.name)
    return _VARIANTS[m.group(1)] if m else "KuaiRand"


#: KuaiRand feedback columns turned into the history action (bit k = column k is 1).
KUAIRAND_ACTION_COLUMNS = [
    "is_click", "long_view", "is_like", "is_follow",
    "is_comment", "is_forward", "is_hate", "is_profile_enter",
]  # fmt: skip


@dataclass
class KuaiRandOptions(DatasetOptions):
    """KuaiRand (1K, 27K, Pure). Defaults: the 04-08..04-21 log is warm-up (history only),
    train 04-22..05-01, valid 05-02..05-05, test 05-06..05-08 (Beijing time).

    Attributes:
        tasks: label columns of the log written as ``tgt_<column>``.
        action_columns: feedback columns packed into ``hist_action`` as bits (2^k actions).
        random_from: the randomly exposed log becomes the ``test_random`` split from this split's
            start on: ``test`` (default), ``valid``, ``all`` (the whole random log) or ``none``
            (the random log is not read at all, so it is in no history either).
        random_in_history: random-log impressions are part of later histories.
        tz_offset_s: offset of the ``date``/``hourmin`` columns from UTC (used only where
            ``time_ms`` is empty) and of the ``hour`` context feature.
        context_hour: the ``hour`` context feature (local hour of ``request_ts``).
        user_features: ``user_features_*.csv`` columns made ``id`` features.
        video_features: ``video_features_basic_*.csv`` columns made candidate features.
    """

    max_hist_len: int = 10000
    gap_s: int = 600
    max_targets: int = 128
    split: SplitConfig = field(
        default_factory=lambda: SplitConfig(
            train_start=1650556800, valid_start=1651420800, test_start=1651766400
        )
    )
    tasks: list[str] = field(default_factory=lambda: ["is_click", "long_view", "is_like"])
    action_columns: list[str] = field(default_factory=lambda: list(KUAIRAND_ACTION_COLUMNS))
    random_from: str = "test"
    random_in_history: bool = True
    tz_offset_s: int = 28800
    context_hour: bool = True
    user_features: list[str] = field(default_factory=lambda: list(KUAIRAND_USER_FEATURES))
    video_features: list[FieldFeature] = field(default_factory=kuairand_video_features)

    def checks(self, prefix: str) -> list[tuple[str, bool, str]]:
        """The shared checks and ``random_from``, ``tasks``."""
        ok = self.random_from in ("test", "valid", "all", "none")
        return super().checks(prefix) + [
            (f"{prefix}.random_from", ok, "test|valid|all|none"),
            (f"{prefix}.tasks", len(self.tasks) >= 1, "non-empty"),
            *field_checks(f"{prefix}.video_features", self.video_features),
            *field_checks(
                f"{prefix}.user_features", [FieldFeature(c, "id") for c in self.user_features]
            ),
        ]


@dataclass
class KuaiRandConverter(Converter):
    """See the module docstring."""

    request_kinds: tuple[int, ...] = (0, 1)
    _tag_video: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _tag_value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        o = self.opts
        assert isinstance(o, KuaiRandOptions)
        self.tasks = list(o.tasks)
        self.num_actions = 2 ** len(o.action_columns)
        if o.random_from == "none":
            self.request_kinds = (0,)

    def _log_types(self) -> dict[str, pa.DataType]:
        o = self.opts
        types = {"user_id": pa.int64(), "video_id": pa.int64(), "date": pa.int64()}
        types |= {"hourmin": pa.int64(), "time_ms": pa.int64()}
        for c in dict.fromkeys([*o.tasks, *o.action_columns]):
            types[c] = pa.int64()
        return types

    def inputs(self, src: Path) -> list[CsvSpec]:
        std = find_files(src, "log_standard_*.csv")
        if not std:
            raise FileNotFoundError(f"src={src}: no KuaiRand log_standard_*.csv found")
        rnd = find_files(src, "log_random_*.csv") if 1 in self.request_kinds else []
        variants = {_variant(p) for p in std + rnd}
        if len(variants) > 1:
            raise ValueError(f"src={src}: logs of several KuaiRand versions {sorted(variants)}")
        self.variant = variants.pop()
        types = self._log_types()
        specs = [CsvSpec(p, types, kind="standard") for p in std]
        return specs + [CsvSpec(p, types, kind="random") for p in rnd]

    def prepare(self, src: Path) -> None:
        """Load video -> first tag from ``video_features_basic_*.csv`` (streamed), and the side
        features (``features``)."""
        if self.opts.features:
            from longseq.datasets.convert.kuairand_features import side_features

            o = self.opts
            self.side_features = side_features(
                src, o.user_features, o.video_features, o.context_hour, o.tz_offset_s,
                int(self.cfg.block_mb * 2**20), self.note,
            )  # fmt: skip
        files = find_files(src, "video_features_basic_*.csv")
        vids, tags = [], []
        for p in files:
            spec = CsvSpec(p, {"video_id": pa.int64(), "tag": pa.string()})
            for batch, _ in iter_blocks(spec, int(self.cfg.block_mb * 2**20)):
                first = pc.list_element(pc.split_pattern(batch.column("tag"), ","), 0)
                num = pc.utf8_trim_whitespace(first)
                ok = pc.fill_null(pc.match_substring_regex(num, r"^-?\d+(\.0*)?$"), False)
                num = pc.if_else(ok, num, pa.scalar(None, pa.string()))
                val = pc.cast(pc.cast(num, pa.float64()), pa.int64())
                vids.append(batch.column("video_id").to_numpy())
                tags.append(val.fill_null(_UNKNOWN_TAG).to_numpy(zero_copy_only=False))
        if not vids:
            return
        v, t = np.concatenate(vids), np.concatenate(tags)
        order = np.argsort(v, kind="stable")
        v, t = v[order], t[order]
        first = np.concatenate(([True], v[1:] != v[:-1]))
        self._tag_video, self._tag_value = v[first], t[first]

    def _category(self, video: np.ndarray) -> np.ndarray:
        if self._tag_video.size == 0:
            return np.full(video.size, _UNKNOWN_TAG, np.int64)
        i = np.minimum(np.searchsorted(self._tag_video, video), self._tag_video.size - 1)
        return np.where(self._tag_video[i] == video, self._tag_value[i], _UNKNOWN_TAG)

    def normalize(
        self, batch: pa.RecordBatch, spec: CsvSpec, first_line: int, seq0: int
    ) -> pa.Table:
        o = self.opts
        col = {name: batch.column(name) for name in batch.schema.names}
        for name in ("user_id", "video_id"):
            if col[name].null_count:
                row = int(np.flatnonzero(col[name].is_null().to_numpy(zero_copy_only=False))[0])
                raise bad_row_error(spec, first_line, row, name, "empty value")
        ms = self._time_ms(col, spec, first_line)
        bits = {}
        for name in dict.fromkeys([*o.tasks, *o.action_columns]):
            v = col[name].fill_null(0).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero((v != 0) & (v != 1))
            if bad.size:
                raise bad_row_error(
                    spec, first_line, int(bad[0]), name, f"value {v[bad[0]]} not 0/1"
                )
            bits[name] = v
        action = np.zeros(batch.num_rows, np.int64)
        for k, name in enumerate(o.action_columns):
            action |= bits[name] << k
        video = col["video_id"].to_numpy()
        cols = {
            "user": col["user_id"], "item": video, "cat": self._category(video),
            "ts": ms // 1000, "sub": ms,
            "kind": np.full(batch.num_rows, 0 if spec.kind == "standard" else 1, np.int8),
            "action": action, "seq": seq_column(seq0, batch.num_rows),
        }  # fmt: skip
        cols |= {f"lab_{t}": bits[t].astype(np.int8) for t in o.tasks}
        return pa.table(cols, schema=event_schema(self.label_names))

    def _time_ms(self, col: dict[str, pa.Array], spec: CsvSpec, first_line: int) -> np.ndarray:
        """``time_ms``, or ``date`` + ``hourmin`` (local time) where it is empty."""
        ms = col["time_ms"]
        if not ms.null_count:
            return ms.to_numpy()
        out = ms.fill_null(0).to_numpy(zero_copy_only=False).copy()
        tz = self.opts.tz_offset_s  # type: ignore[attr-defined]
        for row in np.flatnonzero(ms.is_null().to_numpy(zero_copy_only=False)):
            d, hm = col["date"][row].as_py(), col["hourmin"][row].as_py()
            try:
                day = dt.datetime.strptime(str(d), "%Y%m%d").replace(tzinfo=dt.UTC)
                if hm is None or not (0 <= hm // 100 < 24 and 0 <= hm % 100 < 60):
                    raise ValueError
            except (ValueError, TypeError):
                raise bad_row_error(
                    spec, first_line, int(row), "time_ms",
                    f"empty, and date={d!r} hourmin={hm!r} do not give a time",
                ) from None  # fmt: skip
            secs = int(day.timestamp()) - tz + (hm // 100) * 3600 + (hm % 100) * 60
            out[row] = secs * 1000
        return out

    def history_mask(self, ev) -> np.ndarray:
        if self.opts.random_in_history:  # type: ignore[attr-defined]
            return np.ones(len(ev), bool)
        return ev.kind == 0


#: the names `longseq.datasets.convert.registry` looks up
Options = KuaiRandOptions
Converter = KuaiRandConverter
