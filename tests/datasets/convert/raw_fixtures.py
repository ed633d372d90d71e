"""Writers of small raw files in the exact published layouts (column names and order, header or
none, separators, quirks), so the converters are tested without the real downloads.

- KuaiRand: ``KuaiRand-<V>/data/log_standard_4_08_to_4_21_<v>.csv`` and ``..._4_22_to_5_08``,
  ``log_random_4_22_to_5_08_<v>.csv`` (19 columns incl. ``date`` yyyymmdd, ``hourmin`` HHMM and
  ``time_ms``), ``user_features_<v>.csv``, ``video_features_basic_<v>.csv`` (``tag`` may list
  several tags, quoted, or be empty), ``video_features_statistic_<v>.csv`` (a column subset);
- Taobao: ``UserBehavior.csv`` without header: ``user,item,category,behavior,timestamp``;
- MovieLens: ``ml-1m/ratings.dat`` + ``movies.dat`` (``::``, Latin-1), ``ml-100k/u.data`` (tab) +
  ``u.item`` (``|``, 19 genre flags), ``ml-20m/ratings.csv`` + ``movies.csv`` (header, quoted
  titles with commas, half-star ratings).

Every writer also returns the events it wrote, as plain Python rows, for reference checks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

BEIJING = dt.timezone(dt.timedelta(hours=8))
KUAI_LOG_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
    "is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,"
    "is_profile_enter,is_rand,tab"
)
KUAI_USER_HEADER = (
    "user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,"
    "follow_user_num,follow_user_num_range,fans_user_num,fans_user_num_range,friend_user_num,"
    "friend_user_num_range,register_days,register_days_range,"
    + ",".join(f"onehot_feat{i}" for i in range(18))
)
KUAI_BASIC_HEADER = (
    "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
    "server_width,server_height,music_id,music_type,tag"
)
KUAI_FLAGS = ("is_click", "is_like", "is_follow", "is_comment", "is_forward", "is_hate")


def _ms(day: dt.date, seconds: int) -> int:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    return int(start.timestamp()) * 1000 + seconds * 1000 + (seconds * 37) % 1000


def write_kuairand(
    root: Path, variant: str = "1k", users: int = 5, videos: int = 120, seed: int = 0
) -> dict[str, list[dict]]:
    """KuaiRand files under ``root/KuaiRand-<V>/data``; returns ``{"standard": rows, "random":
    rows}`` (each row a dict of the log's columns, ints)."""
    rng = np.random.default_rng(seed)
    data = root / f"KuaiRand-{ {'1k': '1K', '27k': '27K', 'pure': 'Pure'}[variant] }" / "data"
    data.mkdir(parents=True, exist_ok=True)
    user_ids = sorted(rng.choice(np.arange(10, 30000), users, replace=False).tolist())
    video_ids = sorted(rng.choice(np.arange(1000, 9_000_000), videos, replace=False).tolist())
    logs: dict[str, list[dict]] = {"standard": [], "random": []}
    day0 = dt.date(2022, 4, 8)
    for u in user_ids:
        for d in range(31):  # 2022-04-08 .. 2022-05-08
            day = day0 + dt.timedelta(days=d)
            for _ in range(int(rng.integers(0, 3))):  # sessions per day
                t = int(rng.integers(6 * 3600, 23 * 3600))
                for _ in range(int(rng.integers(1, 12))):
                    t += int(rng.integers(0, 40)) if rng.random() < 0.9 else 700
                    kind = (
                        "random"
                        if day >= dt.date(2022, 4, 22) and rng.random() < 0.1
                        else "standard"
                    )
                    logs[kind].append(_kuai_row(rng, u, int(rng.choice(video_ids)), day, t, kind))
    for rows in logs.values():  # the logs are not in time order within a file
        rng.shuffle(rows)
    split = [r for r in logs["standard"] if r["date"] <= 20220421]
    rest = [r for r in logs["standard"] if r["date"] > 20220421]
    _write_csv(data / f"log_standard_4_08_to_4_21_{variant}.csv", KUAI_LOG_HEADER, split)
    _write_csv(data / f"log_standard_4_22_to_5_08_{variant}.csv", KUAI_LOG_HEADER, rest)
    _write_csv(data / f"log_random_4_22_to_5_08_{variant}.csv", KUAI_LOG_HEADER, logs["random"])
    with open(data / f"user_features_{variant}.csv", "w") as f:
        f.write(KUAI_USER_HEADER + "\n")
        for u in user_ids:
            onehot = ",".join(str(int(x)) for x in rng.integers(0, 5, 18))
            f.write(f'{u},high_active,0,0,0,5,"(0,10]",3,"[1,10)",0,0,120,"61-90",{onehot}\n')
    with open(data / f"video_features_basic_{variant}.csv", "w") as f:
        f.write(KUAI_BASIC_HEADER + "\n")
        for i, v in enumerate(video_ids):
            tag = ["12", '"2,18"', "", "65", "7"][i % 5]
            f.write(f"{v},{i % 17},NORMAL,2022-03-{1 + i % 28:02d},ShortImport,1,{9000 + i},"
                    f"720,1280,{99 + i},4,{tag}\n")  # fmt: skip
    with open(data / f"video_features_statistic_{variant}.csv", "w") as f:
        f.write("video_id,counts,show_cnt,show_user_num,play_cnt\n")
        for v in video_ids:
            f.write(f"{v},10,20,15,12\n")
    return logs


def kuai_tag(video_ids: list[int], video: int) -> int | None:
    """The first tag the fixture gave ``video`` (None: empty tag)."""
    i = sorted(video_ids).index(video)
    return [12, 2, None, 65, 7][i % 5]


def _kuai_row(rng, u: int, v: int, day: dt.date, t: int, kind: str) -> dict:
    ms = _ms(day, t)
    local = dt.datetime.fromtimestamp(ms / 1000, BEIJING)
    click = int(rng.random() < 0.4)
    row = {"user_id": u, "video_id": v, "date": int(local.strftime("%Y%m%d")),
           "hourmin": local.hour * 100 + local.minute, "time_ms": ms}  # fmt: skip
    row |= {k: int(click and rng.random() < 0.15) for k in KUAI_FLAGS[1:]}
    row["is_click"] = click
    row["long_view"] = int(rng.random() < 0.3)
    row |= {
        "play_time_ms": int(rng.integers(0, 60000)),
        "duration_ms": int(rng.integers(5000, 90000)),
    }
    row |= {
        "profile_stay_time": 0,
        "comment_stay_time": 0,
        "is_profile_enter": int(rng.random() < 0.05),
    }
    row |= {"is_rand": int(kind == "random"), "tab": int(rng.integers(0, 15))}
    return row


def _write_csv(path: Path, header: str, rows: list[dict]) -> None:
    cols = header.split(",")
    with open(path, "w") as f:
        f.write(header + "\n")
        for r in rows:
            f.write(",".join(str(r[c]) for c in cols) + "\n")


def write_taobao(root: Path, users: int = 10, items: int = 80, seed: int = 0) -> list[tuple]:
    """``root/UserBehavior.csv`` (no header); returns the rows ``(user, item, cat, behavior,
    ts)`` including the few outside the published date range."""
    rng = np.random.default_rng(seed)
    item_ids = rng.choice(np.arange(1, 5_000_000), items, replace=False)
    cat_of = {int(i): int(c) for i, c in zip(item_ids, rng.choice([2520377, 4145813, 982926, 1320293, 2355072], items))}  # fmt: skip
    start = int(dt.datetime(2017, 11, 25, tzinfo=BEIJING).timestamp())
    rows = []
    for u in rng.choice(np.arange(1, 1_000_000), users, replace=False):
        t = start + int(rng.integers(0, 3600 * 5))
        for _ in range(int(rng.integers(20, 70))):
            t += int(rng.integers(10, 26000))
            item = (
                int(rng.choice(item_ids[: items // 2]))
                if rng.random() < 0.6
                else int(rng.choice(item_ids))
            )
            beh = rng.choice(["pv", "pv", "pv", "pv", "cart", "fav", "buy"])
            rows.append((int(u), item, cat_of[item], str(beh), t))
    rows.append((int(rows[0][0]), rows[0][1], rows[0][2], "pv", start - 86400 * 30))  # outlier
    rows.append((int(rows[1][0]), rows[1][1], rows[1][2], "pv", start + 86400 * 40))  # outlier
    rng.shuffle(rows)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "UserBehavior.csv", "w") as f:
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    return rows


ML_GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Thriller"]


def _ml_events(rng, users: int, movies: int, half: bool) -> list[tuple]:
    t0 = 978_300_000
    rows = []
    for u in range(1, users + 1):
        t = t0 + int(rng.integers(0, 10**7))
        for _ in range(int(rng.integers(20, 60))):
            t += (
                int(rng.integers(0, 120)) if rng.random() < 0.85 else int(rng.integers(4000, 10**6))
            )
            r = (int(rng.integers(1, 11)) / 2) if half else float(rng.integers(1, 6))
            rows.append((u, int(rng.integers(1, movies + 1)), r, t))
    return rows


def write_movielens(
    root: Path, layout: str, users: int = 6, movies: int = 40, seed: int = 0
) -> list[tuple]:
    """One MovieLens layout (``1m``, ``100k``, ``20m``) under ``root/ml-<layout>``; returns the
    ratings ``(user, movie, rating, ts)``."""
    rng = np.random.default_rng(seed)
    d = root / f"ml-{layout}"
    d.mkdir(parents=True, exist_ok=True)
    rows = _ml_events(rng, users, movies, half=layout == "20m")
    genres = {m: ML_GENRES[m % len(ML_GENRES)] for m in range(1, movies + 1)}
    rng.shuffle(rows)  # not in time order in the file
    if layout == "1m":
        with open(d / "ratings.dat", "w") as f:
            f.writelines(f"{u}::{m}::{int(r)}::{t}\n" for u, m, r, t in rows)
        with open(d / "movies.dat", "w", encoding="latin-1") as f:
            for m, g in genres.items():
                f.write(f"{m}::Caf\xe9 Story {m} (1999)::{g}|Romance\n")
    elif layout == "100k":
        with open(d / "u.data", "w") as f:
            f.writelines(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in rows)
        names = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip
        with open(d / "u.item", "w", encoding="latin-1") as f:
            for m, g in genres.items():
                flags = ["1" if n in (g, "War") else "0" for n in names]
                f.write(
                    f"{m}|M\xe9tro {m} (1995)|01-Jan-1995||http://us.imdb.com/x?{m}|"
                    + "|".join(flags)
                    + "\n"
                )
    else:
        with open(d / "ratings.csv", "w") as f:
            f.write("userId,movieId,rating,timestamp\n")
            f.writelines(f"{u},{m},{r},{t}\n" for u, m, r, t in rows)
        with open(d / "movies.csv", "w", encoding="utf-8") as f:
            f.write("movieId,title,genres\n")
            for m, g in genres.items():
                f.write(f'{m},"American President, The {m} (1995)",{g}|Romance\n')
    return rows


def write_ml_users(root: Path, layout: str, users: int = 6) -> dict[int, tuple[str, int, str]]:
    """``users.dat`` (1m: ``UserID::Gender::Age::Occupation::Zip``, age groups, occupation
    codes) or ``u.user`` (100k: ``id|age|gender|occupation|zip``, exact ages) for users
    ``1..users - 1`` (the last user has no row); returns ``{user: (gender, age, occupation)}``."""
    d = root / f"ml-{layout}"
    out = {}
    with open(d / ("users.dat" if layout == "1m" else "u.user"), "w", encoding="latin-1") as f:
        for u in range(1, users):
            g = "MF"[u % 2]
            if layout == "1m":
                age, occ = [1, 18, 25, 35, 45, 50, 56][u % 7], str(u % 3)
                f.write(f"{u}::{g}::{age}::{occ}::{48067 + u}\n")
            else:
                age, occ = 15 + 9 * u, ["writer", "technician", "other"][u % 3]
                f.write(f"{u}|{age}|{g}|{occ}|{85711 + u}\n")
            out[u] = (g, age, occ)
    return out
