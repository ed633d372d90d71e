"""Small RecBole atomic files shaped like ML-100K as ``recbole==1.2.1`` ships it:

- ``ml-100k.inter``: ``user_id:token item_id:token rating:float timestamp:float`` (integer
  ratings 1..5, Unix seconds), rows not in time order;
- ``ml-100k.item``: ``item_id:token movie_title:token_seq release_year:token class:token_seq``
  (genres space-separated, in ML-100K's flag order, ``Children's`` with its apostrophe, a
  UTF-8 title);
- ``ml-100k.user``: ``user_id:token age:token gender:token occupation:token zip_code:token``.

Every writer returns what it wrote as plain Python rows, for reference checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"
#: ML-100K's genre names in its flag order (the order RecBole's ``class`` lists them in)
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip


def item_genres(m: int) -> list[str]:
    """The genres of movie ``m`` in the fixture (one to three, in flag order)."""
    picks = {1 + m % 18, 1 + (m * 7) % 18} if m % 3 else {1 + m % 18}
    if m % 11 == 0:
        picks = {0}  # "unknown", as two ML-100K movies have
    return [GENRES[i] for i in sorted(picks)]


def write_atomic(
    folder: Path, users: int = 6, movies: int = 30, seed: int = 0, name: str = "ml-100k"
) -> list[tuple[int, int, float, int]]:
    """``<name>.inter``, ``.item``, ``.user`` under ``folder``; returns the interactions
    ``(user, movie, rating, ts)`` in file order. Movie ``movies`` (the last) is rated but
    missing from ``.item`` (its category is the unknown one)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[int, int, float, int]] = []
    for u in range(1, users + 1):
        t = 874_724_710 + int(rng.integers(0, 10**7))
        for _ in range(int(rng.integers(20, 60))):
            t += (
                int(rng.integers(0, 120)) if rng.random() < 0.85 else int(rng.integers(4000, 10**6))
            )
            rows.append((u, int(rng.integers(1, movies + 1)), float(rng.integers(1, 6)), t))
    rng.shuffle(rows)  # type: ignore[arg-type]  # ML-100K's .inter is not in time order
    lines = [f"{u}\t{m}\t{int(r)}\t{t}" for u, m, r, t in rows]
    write_lines(folder / f"{name}.inter", INTER_HEADER, lines)
    items = [
        f"{m}\tCaf\u00e9 Story {m}\t{1990 + m % 9}\t{' '.join(item_genres(m))}"
        for m in range(1, movies)
    ]
    write_lines(folder / f"{name}.item", ITEM_HEADER, items)
    occupations = ["technician", "writer", "other", "educator"]
    people = [
        f"{u}\t{20 + u}\t{'MF'[u % 2]}\t{occupations[u % 4]}\t{85700 + u:05d}"
        for u in range(1, users + 1)
    ]
    write_lines(folder / f"{name}.user", USER_HEADER, people)
    return rows


def write_lines(path: Path, header: str, lines: list[str]) -> Path:
    """An atomic file: ``header``, then ``lines`` (UTF-8, ``\\n``-terminated)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x}\n" for x in [header, *lines]), encoding="utf-8")
    return path


def write_ml100k_layout(folder: Path, rows: list[tuple], movies: int) -> None:
    """The same ratings and genres in GroupLens's ML-100K layout (``u.data``, ``u.item``), for
    comparing ``dataset=recbole`` with ``dataset=movielens``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in rows))
    with open(folder / "u.item", "w", encoding="latin-1") as f:
        for m in range(1, movies):
            flags = ["1" if g in item_genres(m) else "0" for g in GENRES]
            f.write(f"{m}|Story {m} (1995)|01-Jan-1995||http://x/{m}|" + "|".join(flags) + "\n")
