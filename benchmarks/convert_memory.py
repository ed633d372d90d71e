"""Peak memory of the KuaiRand converter on a generated ~2 GB raw log.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/convert_memory.py \
        [--size-gb 2] [--workdir /tmp/convert_bench] [--keep]

Writes KuaiRand-27K-layout files (``log_standard_4_08_to_4_21_27k_part1.csv`` and
``log_standard_4_22_to_5_08_27k_part1.csv`` together ``--size-gb``, a random log of ~1% of that,
``video_features_basic_27k.csv``) with users of lognormal activity (median ~250 impressions in
sessions of ~12), then runs ``python -m longseq.datasets.convert dataset=kuairand`` with the
reference options under ``/usr/bin/time -v`` and prints wall time, peak RSS (the child's maximum
resident set), input size and the command. The inputs and outputs are deleted afterwards
unless ``--keep``; nothing is written inside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,"
    "is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,"
    "is_profile_enter,is_rand,tab"
)
START = 1649347200  # 2022-04-08 00:00 Beijing
SPLIT = 1650556800  # 2022-04-22 00:00 Beijing: first file / second file
BEIJING = 8 * 3600
NUM_VIDEOS = 2_000_000


def _dates(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yyyymmdd, HHMM) in Beijing time."""
    local = ts + BEIJING
    days = (local // 86400).astype("datetime64[D]")
    y = days.astype("datetime64[Y]").astype(np.int64) + 1970
    m = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    d = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    sec = local % 86400
    return y * 10000 + m * 100 + d, (sec // 3600) * 100 + (sec // 60) % 60


def _chunk(rng: np.random.Generator, u0: int, n_users: int, videos: np.ndarray) -> pa.Table:
    n = np.clip(np.rint(250 * np.exp(0.6 * rng.standard_normal(n_users))), 20, 3000).astype(
        np.int64
    )
    user = np.repeat(np.arange(u0, u0 + n_users), n)
    e = user.size
    off = np.concatenate(([0], np.cumsum(n)))
    new_session = rng.random(e) < 1 / 12
    mean_big = 30 * 86400 / (n / 12.0)
    big = rng.exponential(mean_big[user - u0])
    small = rng.integers(1, 40, e)
    gaps = np.where(new_session, big, small).astype(np.int64)
    csum = np.cumsum(gaps)
    first = off[:-1]
    start = START + rng.integers(0, 86400, n_users)
    ts = start[user - u0] + csum - csum[first][user - u0]
    ms = ts * 1000 + rng.integers(0, 1000, e)
    date, hm = _dates(ts)
    click = (rng.random(e) < 0.4).astype(np.int64)
    cols = {
        "user_id": user, "video_id": videos[np.floor(NUM_VIDEOS * rng.random(e) ** 3).astype(np.int64)],
        "date": date, "hourmin": hm, "time_ms": ms, "is_click": click,
        "is_like": click & (rng.random(e) < 0.05), "is_follow": click & (rng.random(e) < 0.01),
        "is_comment": click & (rng.random(e) < 0.01), "is_forward": click & (rng.random(e) < 0.01),
        "is_hate": (rng.random(e) < 0.002).astype(np.int64), "long_view": (rng.random(e) < 0.3).astype(np.int64),
        "play_time_ms": rng.integers(0, 60000, e), "duration_ms": rng.integers(5000, 90000, e),
        "profile_stay_time": np.zeros(e, np.int64), "comment_stay_time": np.zeros(e, np.int64),
        "is_profile_enter": (rng.random(e) < 0.02).astype(np.int64), "is_rand": np.zeros(e, np.int64),
        "tab": rng.integers(0, 15, e),
    }  # fmt: skip
    return pa.table(cols)


def generate(raw: Path, size_bytes: int, seed: int = 0) -> int:
    """Write the raw files; return the bytes of the standard logs."""
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    videos = np.sort(rng.choice(np.arange(10**6, 10**9), NUM_VIDEOS, replace=False))
    names = {
        "a": raw / "log_standard_4_08_to_4_21_27k_part1.csv",
        "b": raw / "log_standard_4_22_to_5_08_27k_part1.csv",
        "r": raw / "log_random_4_22_to_5_08_27k.csv",
    }
    sinks = {k: open(p, "wb") for k, p in names.items()}  # noqa: SIM115
    opts = pcsv.WriteOptions(include_header=False, quoting_style="needed")
    for f in sinks.values():
        f.write((HEADER + "\n").encode())
    u0 = 0
    while sinks["a"].tell() + sinks["b"].tell() < size_bytes:
        t = _chunk(rng, u0, 2000, videos)
        u0 += 2000
        ts = t.column("time_ms").to_numpy() // 1000
        rnd = (rng.random(t.num_rows) < 0.01) & (ts >= SPLIT)
        for key, mask in (("a", ~rnd & (ts < SPLIT)), ("b", ~rnd & (ts >= SPLIT)), ("r", rnd)):
            part = t.filter(pa.array(mask))
            if key == "r":
                part = part.set_column(17, "is_rand", pa.array(np.ones(part.num_rows, np.int64)))
            pcsv.write_csv(part, sinks[key], opts)
        print(
            f"\rgenerated {(sinks['a'].tell() + sinks['b'].tell()) / 1e9:.2f} GB, {u0} users",
            end="",
            file=sys.stderr,
        )
    total = sinks["a"].tell() + sinks["b"].tell()
    for f in sinks.values():
        f.close()
    with open(raw / "video_features_basic_27k.csv", "w") as f:
        f.write("video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
                "server_width,server_height,music_id,music_type,tag\n")  # fmt: skip
        tags = rng.integers(0, 70, NUM_VIDEOS)
        for i in range(0, NUM_VIDEOS, 200_000):
            f.writelines(f"{v},{v % 9973},NORMAL,2022-03-01,ShortImport,1,15000,720,1280,{v % 7919},4,{t}\n"
                         for v, t in zip(videos[i : i + 200_000].tolist(), tags[i : i + 200_000].tolist()))  # fmt: skip
    print(file=sys.stderr)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--workdir", default="/tmp/convert_bench")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.workdir)
    raw, out = work / "raw", work / "out"
    t0 = time.perf_counter()
    std_bytes = generate(raw, int(args.size_gb * 1e9), args.seed)
    gen_s = time.perf_counter() - t0
    input_bytes = sum(p.stat().st_size for p in raw.glob("*.csv"))
    cmd = [
        sys.executable,
        "-m",
        "longseq.datasets.convert",
        "dataset=kuairand",
        f"src={raw}",
        f"out={out}",
        "progress=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t1 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t1
    if proc.returncode != 0:
        sys.exit(f"converter failed:\n{proc.stdout}\n{proc.stderr[-5000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    stats = json.loads((out / "stats.json").read_text())
    out_bytes = sum(p.stat().st_size for p in out.rglob("*.parquet"))
    result = {
        "command": "OMP_NUM_THREADS=1 /usr/bin/time -v python " + " ".join(cmd[1:]),
        "standard_log_bytes": std_bytes, "input_bytes": input_bytes, "input_rows": stats["input"]["rows"],
        "users": sum(s["users"] for k, s in stats["splits"].items() if k == "train"),
        "buckets": stats["input"]["buckets"], "generate_s": round(gen_s, 1), "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1), "output_parquet_bytes": out_bytes,
        "requests": {k: s["requests"] for k, s in stats["splits"].items()},
        "history_events": {k: s["history_events"] for k, s in stats["splits"].items()},
    }  # fmt: skip
    print(proc.stdout)
    print(json.dumps(result, indent=2))
    (work / "result.json").write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(raw)
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
