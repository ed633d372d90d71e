"""MovieLens -> request-level Parquet.

Input (as published, found under ``<src>``): ``ratings.dat`` (1M/10M: ``UserID::MovieID::
Rating::Timestamp``, no header), ``u.data`` (100K: tab-separated ``user item rating
timestamp``, no header) or ``ratings.csv`` (20M/25M/32M: ``userId,movieId,rating,timestamp``
with a header). Categories: the movie's first genre from ``movies.dat`` / ``u.item`` /
``movies.csv`` when present (else one category).

- requests: a user's ratings grouped into sessions by gap (``gap_s``, ``max_targets``);
- targets: the session's rated movies, ``tgt_<task>`` = rating >= ``threshold``;
- history: every earlier rating, ``hist_action`` = round(2 x rating) (0..10);
- side features (`movielens_features`): gender, age group, occupation (``users.dat`` /
  ``u.user``), genres (multi-hot) and year of the movie.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from longseq.datasets.convert.base import Converter, find_files, seq_column
from longseq.datasets.convert.csvsource import CsvSpec, bad_row_error
from longseq.datasets.convert.options import DatasetOptions
from longseq.datasets.convert.partition import event_schema

#: u.item's 19 genre flags, in file order (ml-100k README).
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip

_F64, _I64 = pa.float64(), pa.int64()


@dataclass
class MovieLensOptions(DatasetOptions):
    """MovieLens (100K ``u.data``, 1M/10M ``ratings.dat``, 20M/25M/32M ``ratings.csv``).

    Attributes:
        threshold: ``tgt_<task>`` = rating >= threshold.
        task: the task name.
    """

    max_hist_len: int = 2000
    gap_s: int = 1800
    max_targets: int = 64
    threshold: float = 4.0
    task: str = "like"


@dataclass
class MovieLensConverter(Converter):
    """See the module docstring."""

    num_actions: int = 11
    _movies: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _genres: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        o = self.opts
        assert isinstance(o, MovieLensOptions)
        self.tasks = [o.task]

    def inputs(self, src: Path) -> list[CsvSpec]:
        found = {n: find_files(src, n) for n in ("ratings.dat", "u.data", "ratings.csv")}
        present = [p for ps in found.values() for p in ps]
        if len(present) != 1:
            what = "no" if not present else f"{len(present)}"
            raise FileNotFoundError(
                f"src={src}: {what} MovieLens ratings file(s) (ratings.dat, u.data or ratings.csv)"
                + (f": {[str(p) for p in present]}" if present else "")
            )
        p = present[0]
        if p.name == "ratings.dat":
            self.variant = "ml-1m/ml-10m (ratings.dat)"
            names = ["user", "_1", "item", "_2", "rating", "_3", "ts"]
            return [
                CsvSpec(p, {"user": _I64, "item": _I64, "rating": _F64, "ts": _I64}, names, ":")
            ]
        if p.name == "u.data":
            self.variant = "ml-100k (u.data)"
            names = ["user", "item", "rating", "ts"]
            types = {"user": _I64, "item": _I64, "rating": _F64, "ts": _I64}
            return [CsvSpec(p, types, names, "\t")]
        self.variant = "ml-20m/25m/32m (ratings.csv)"
        types = {"userId": _I64, "movieId": _I64, "rating": _F64, "timestamp": _I64}
        return [CsvSpec(p, types)]

    def prepare(self, src: Path) -> None:
        """Movie -> first genre, from the movies file next to the ratings (small: read whole)."""
        genre: dict[int, str] = {}
        for p in find_files(src, "movies.dat"):
            with open(p, encoding="latin-1") as f:
                for line in f:
                    parts = line.rstrip("\r\n").split("::")
                    if len(parts) >= 3:
                        genre[int(parts[0])] = parts[2].split("|")[0]
        for p in find_files(src, "u.item"):
            with open(p, encoding="latin-1") as f:
                for line in f:
                    parts = line.rstrip("\r\n").split("|")
                    flags = parts[-19:]
                    if len(parts) >= 24:
                        first = next((i for i, x in enumerate(flags) if x == "1"), 0)
                        genre[int(parts[0])] = ML100K_GENRES[first]
        for p in find_files(src, "movies.csv"):
            with open(p, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    genre[int(row["movieId"])] = row["genres"].split("|")[0]
        ids = {g: i for i, g in enumerate(sorted(set(genre.values())))}
        movies = np.array(sorted(genre), np.int64)
        self._movies = movies
        self._genres = np.array([ids[genre[int(m)]] for m in movies], np.int64)
        if self.opts.features:
            from longseq.datasets.convert.movielens_features import side_features

            self.side_features = side_features(src, ML100K_GENRES, self.note)

    def _category(self, movie: np.ndarray) -> np.ndarray:
        """Genre index of each movie's first genre (sorted genre names); -1 if unknown."""
        if self._movies.size == 0:
            return np.full(movie.size, -1, np.int64)
        i = np.minimum(np.searchsorted(self._movies, movie), self._movies.size - 1)
        return np.where(self._movies[i] == movie, self._genres[i], -1)

    def normalize(
        self, batch: pa.RecordBatch, spec: CsvSpec, first_line: int, seq0: int
    ) -> pa.Table:
        o = self.opts
        assert isinstance(o, MovieLensOptions)
        names = list(spec.types)  # user, item, rating, ts in file order
        col = {k: batch.column(n) for k, n in zip(("user", "item", "rating", "ts"), names)}
        for k, n in zip(("user", "item", "rating", "ts"), names):
            if col[k].null_count:
                row = int(np.flatnonzero(col[k].is_null().to_numpy(zero_copy_only=False))[0])
                raise bad_row_error(spec, first_line, row, n, "empty value")
        rating = col["rating"].to_numpy()
        bad = np.flatnonzero((rating < 0) | (rating > 5))
        if bad.size:
            raise bad_row_error(
                spec, first_line, int(bad[0]), names[2], f"rating {rating[bad[0]]} not in [0, 5]"
            )
        item = col["item"].to_numpy()
        n = batch.num_rows
        cols = {
            "user": col["user"], "item": item, "cat": self._category(item), "ts": col["ts"],
            "sub": np.zeros(n, np.int64), "kind": np.zeros(n, np.int8),
            "action": np.rint(rating * 2).astype(np.int64), "seq": seq_column(seq0, n),
            f"lab_{o.task}": (rating >= o.threshold).astype(np.int8),
        }  # fmt: skip
        return pa.table(cols, schema=event_schema(self.label_names))


#: the names `longseq.datasets.convert.registry` looks up
Options = MovieLensOptions
Converter = MovieLensConverter
