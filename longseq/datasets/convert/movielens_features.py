"""MovieLens side features: the user's gender, age group and occupation (``users.dat`` of 1M/10M,
``u.user`` of 100K; 20M and later have no user file) and the movie's genres (multi-hot) and year
(from the title's ``(YYYY)``; dense, standardised) from ``movies.dat`` / ``u.item`` /
``movies.csv``. Files are small and read whole."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from longseq.datasets.convert.base import find_files
from longseq.datasets.convert.features import FieldFeature, SideFeature, from_text

#: MovieLens-1M's age groups (``users.dat`` stores the group's lower bound); 100K's exact ages
#: are put in the same groups
AGE_BUCKETS = [18.0, 25.0, 35.0, 45.0, 50.0, 56.0]
USER_FIELDS = [
    FieldFeature("gender", "id"),
    FieldFeature("age", "id", buckets=AGE_BUCKETS),
    FieldFeature("occupation", "id"),
]
MOVIE_FIELDS = [
    FieldFeature("genres", "multi_hot", separator="|"),
    FieldFeature("year", "dense", transform="standardize"),
]
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_NO_GENRE = "(no genres listed)"


def _users(src: Path) -> tuple[Path, list[tuple[int, int, dict[str, str]]]] | None:
    """(file, [(line, user, {gender, age, occupation})]) of the user file, if any."""
    for name, sep, cols in (("users.dat", "::", (1, 2, 3)), ("u.user", "|", (2, 1, 3))):
        for p in find_files(src, name):
            rows = []
            with open(p, encoding="latin-1") as f:
                for n, line in enumerate(f, 1):
                    parts = line.rstrip("\r\n").split(sep)
                    if len(parts) < 5:
                        raise ValueError(f"{p}: line {n}: {len(parts)} fields, expected 5")
                    g, a, o = (parts[i] for i in cols)
                    rows.append((n, int(parts[0]), {"gender": g, "age": a, "occupation": o}))
            return p, rows
    return None


def _movies(src: Path, genre_names: list[str]) -> tuple[Path, list[tuple]] | None:
    """(file, [(line, movie, {genres: "a|b", year})]) of the movies file, if any."""
    rows: list[tuple] = []
    for p in find_files(src, "movies.dat"):
        with open(p, encoding="latin-1") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\r\n").split("::")
                if len(parts) >= 3:
                    rows.append((n, int(parts[0]), parts[1], parts[2]))
        return p, [_movie(r) for r in rows]
    for p in find_files(src, "u.item"):
        with open(p, encoding="latin-1") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\r\n").split("|")
                if len(parts) >= 24:
                    flags = parts[-19:]
                    g = "|".join(genre_names[i] for i, x in enumerate(flags) if x == "1")
                    rows.append((n, int(parts[0]), parts[1], g))
        return p, [_movie(r) for r in rows]
    for p in find_files(src, "movies.csv"):
        with open(p, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                rows.append((n, int(row["movieId"]), row["title"], row["genres"]))
        return p, [_movie(r) for r in rows]
    return None


def _movie(r: tuple) -> tuple[int, int, dict[str, str]]:
    n, movie, title, genres = r
    m = _YEAR.search(title.strip())
    return n, movie, {"genres": "" if genres == _NO_GENRE else genres,
                      "year": m.group(1) if m else ""}  # fmt: skip


def side_features(
    src: Path, genre_names: list[str], note: Callable[[str], None]
) -> list[SideFeature]:
    """User and movie features from the files found under ``src`` (none: a ``note``)."""
    out: list[SideFeature] = []
    for side, by, found, fields, what in (
        ("user", "user", _users(src), USER_FIELDS, "users.dat or u.user"),
        ("candidate", "item", _movies(src, genre_names), MOVIE_FIELDS,
         "movies.dat, u.item or movies.csv"),
    ):  # fmt: skip
        if found is None:
            note(f"src={src}: no {what}, so no {side} features")
            continue
        path, rows = found
        keys = np.array([r[1] for r in rows], np.int64)
        lines = np.array([r[0] for r in rows], np.int64)
        for ff in fields:
            text = pa.array([r[2][ff.field] for r in rows], pa.string())
            out.append(from_text(ff, side, by, keys, text, str(path), lines))
    return out
