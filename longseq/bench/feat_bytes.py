"""Suite ``feat_bytes``: bytes per target with and without side features, RLB against pointwise.

For each history length ``L``, targets per request ``T`` and feature set of
`longseq.bench.feat_data.FEATURE_SETS` (``none``; ``user``: 10 user/context features;
``user+cand``: those and 5 candidate features), the same synthetic requests
(`longseq.bench.rlb_data.request_table` + `longseq.bench.feat_data.with_features`) are measured
in the request-level layout (one row per request) and the pointwise one (one row per target,
the history and the user/context features repeated in each):

* ``stored_plain`` / ``stored_zstd`` / ``stored_zstd_dispersed``: Parquet bytes (no compression,
  no dictionary / dictionary + zstd with a request's pointwise copies adjacent in one row group /
  with them in different row groups, as in a shuffled pointwise data set), split by column: ``sequence`` (ids, history,
  targets, labels), ``user`` (``feat_*``), ``candidate`` (``tgt_feat_*``); the file's footer and
  headers are in ``total`` only;
* ``kjt``: bytes of the collated batch's KeyedJaggedTensor (int64 values + lengths), by key: what
  a rank puts into the input all-to-all of the sharded embedding lookup (each id and length is
  sent to the rank that owns its table); ``sequence``, ``user`` (``feat_*``), ``candidate``
  (``tgt_feat_*``);
* ``dense``: the batch's dense tensors (``dense [rows, n]`` float32: ``user``; ``tgt_dense`` and
  ``tgt_bags``: ``candidate``). They stay on the rank (data parallel): host-to-device bytes, not
  all-to-all bytes.

Every figure is bytes per target (``N = requests x T`` targets in both layouts). Counted, not
timed: the numbers are exact for these synthetic rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from longseq.bench.common import BenchArgs, result_payload

LAYOUTS = ("rlb", "pointwise")
GROUPS = ("sequence", "user", "candidate")


def grid(args: BenchArgs) -> dict[str, Any]:
    """Lengths, targets per request and requests of this mode."""
    if args.tiny:
        return dict(lengths=[32], targets=[1, 4], requests=2)
    if args.quick:
        return dict(lengths=[1024], targets=[1, 4, 16, 64], requests=16)
    return dict(lengths=[512, 1024, 4096], targets=[1, 4, 16, 64], requests=16)


def group_of(name: str) -> str:
    """``user`` (``feat_*``), ``candidate`` (``tgt_feat_*``) or ``sequence`` (the rest)."""
    if name.startswith("tgt_feat_"):
        return "candidate"
    return "user" if name.startswith("feat_") else "sequence"


def parquet_columns(
    table: Any, compression: str | None, row_group_size: int = 256
) -> dict[str, int]:
    """File bytes of ``table`` written as one Parquet file (``total``) and its column chunks'
    bytes summed by `group_of`."""
    import pyarrow.parquet as pq

    out = {"total": 0, **dict.fromkeys(GROUPS, 0)}
    with tempfile.TemporaryDirectory(prefix="longseq-bench-") as tmp:
        path = Path(tmp) / "t.parquet"
        pq.write_table(table, path, compression=compression or "none",
                       use_dictionary=compression is not None, row_group_size=row_group_size)  # fmt: skip
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                out[group_of(col.path_in_schema.split(".")[0])] += col.total_compressed_size
        out["total"] = path.stat().st_size
    return out


def batch_groups(batch: Any) -> dict[str, dict[str, int]]:
    """KJT bytes (values + lengths) and dense-tensor bytes of a `RequestBatch`, by group."""
    kjt = {"total": 0, **dict.fromkeys(GROUPS, 0)}
    for key in batch.sparse.keys():
        jt = batch.sparse[key]
        n = jt.values().nbytes + jt.lengths().nbytes
        kjt[group_of(key)] += n
        kjt["total"] += n
    user = batch.dense.nbytes
    cand = batch.tgt_dense.nbytes + batch.tgt_bags.nbytes
    return {"kjt": kjt, "dense": {"total": user + cand, "user": user, "candidate": cand}}


def measure(requests: int, targets: int, length: int, features: str) -> dict[str, Any]:
    """One row: every count of both layouts, per target."""
    from longseq.bench.feat_data import FEATURE_SETS, with_features
    from longseq.bench.rlb_data import pointwise_table, request_table
    from longseq.data.collate import collate

    specs = FEATURE_SETS[features]
    table = with_features(request_table(requests, targets, length, seed=length + targets), specs)
    n = requests * targets
    row: dict[str, Any] = {"part": "bytes", "length": length, "targets": targets,
                           "requests": requests, "features": features, "n_targets": n}  # fmt: skip
    for layout in LAYOUTS:
        pw = layout == "pointwise"
        stored = pointwise_table(table) if pw else table
        batch = collate(table, ["click"], pointwise=pw, features=specs)
        counts = {f"stored_{c or 'plain'}": parquet_columns(stored, c) for c in (None, "zstd")}
        # a shuffled pointwise data set: each row group of `requests` rows holds one copy of each
        counts["stored_zstd_dispersed"] = parquet_columns(
            pointwise_table(table, target_major=True) if pw else table, "zstd", requests
        )
        counts.update(batch_groups(batch))
        row[layout] = {k: {g: b / n for g, b in v.items()} for k, v in counts.items()}
        row[layout]["input"] = counts["kjt"]["total"] / n + counts["dense"]["total"] / n
        row[f"{layout}_rows"] = batch.batch_size
    return row


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    from longseq.bench.feat_data import BAG, FEATURE_SETS

    g = grid(args)
    results = [
        measure(g["requests"], t, length, fs)
        for length in g["lengths"]
        for t in g["targets"]
        for fs in FEATURE_SETS
    ]
    sets = {k: [f.to_dict() for f in v] for k, v in FEATURE_SETS.items()}
    notes = [
        "bytes per target = bytes / (requests x T), the same targets in both layouts; "
        "user = the 10 user/context features (feat_*), candidate = the 5 candidate features "
        "(tgt_feat_*), sequence = everything else",
        "kjt = int64 values + lengths of the batch's KeyedJaggedTensor: what enters the input "
        "all-to-all of the sharded embedding lookup; dense = the dense/tgt_dense/tgt_bags "
        "tensors, which stay on their rank (host-to-device only)",
        "stored_zstd keeps a request's pointwise copies adjacent in one row group (the best case "
        "for the pointwise file: dictionary + zstd deduplicate most copies; in the JSON); "
        "stored_zstd_dispersed puts them in different row groups of `requests` rows (a shuffled "
        "pointwise data set); small row groups carry per-column-chunk overhead in both layouts; "
        "synthetic ids are uniform, so real logs compress better in both layouts",
        f"multi_hot lists have fixed lengths {BAG}; dense values are float64 in Parquet, float32 "
        "in the batch",
    ]
    return result_payload(args, "feat_bytes", config={**g, "feature_sets": sets},
                          results=results, summary=summarize(results), notes=notes)  # fmt: skip


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per ``L=<length>,T=<targets>`` of the ``user+cand`` rows: the user features' bytes per
    request and per target in both layouts, and RLB / pointwise input bytes per target."""
    out: dict[str, dict[str, Any]] = {"user_kjt_per_request": {}, "user_input_per_target": {},
                                      "input_ratio": {}, "stored_plain_ratio": {}}  # fmt: skip
    for r in results:
        if r.get("features") != "user+cand":
            continue
        key = f"L={r['length']},T={r['targets']}"
        rl, pw, t = r["rlb"], r["pointwise"], r["targets"]
        out["user_kjt_per_request"][key] = {
            "rlb": rl["kjt"]["user"] * t,
            "pointwise": pw["kjt"]["user"] * t,
        }
        out["user_input_per_target"][key] = {
            lay: r[lay]["kjt"]["user"] + r[lay]["dense"]["user"] for lay in LAYOUTS
        }
        out["input_ratio"][key] = rl["input"] / pw["input"]
        out["stored_plain_ratio"][key] = rl["stored_plain"]["total"] / pw["stored_plain"]["total"]
    return out


def _n(x: float) -> str:
    return "0" if x == 0 else (f"{x:,.0f}" if x >= 10 else f"{x:.2f}")


def render(payload: dict[str, Any]) -> str:
    """Two Markdown tables: input bytes (all-to-all KJT + dense) and stored bytes per target."""
    rows = [r for r in payload["results"] if r.get("part") == "bytes"]
    head = ["L", "T", "features", "RLB total", "pointwise total", "RLB / pointwise",
            "RLB user", "pointwise user", "RLB candidate", "pointwise candidate"]  # fmt: skip
    sep = "|" + "---|" * len(head)

    def table(measure: str, extra: str | None) -> list[str]:
        lines = ["| " + " | ".join(head) + " |", sep]
        for r in rows:
            rl, pw = r["rlb"], r["pointwise"]

            def cell(d: dict[str, Any], g: str) -> float:
                return d[measure][g] + (d[extra][g] if extra else 0)

            tot = (
                (rl["input"], pw["input"])
                if extra
                else (rl[measure]["total"], pw[measure]["total"])
            )
            lines.append("| " + " | ".join([
                str(r["length"]), str(r["targets"]), r["features"], _n(tot[0]), _n(tot[1]),
                f"**{tot[0] / tot[1]:.3f}**", _n(cell(rl, "user")), _n(cell(pw, "user")),
                _n(cell(rl, "candidate")), _n(cell(pw, "candidate")),
            ]) + " |")  # fmt: skip
        return lines

    out = ["Input bytes per target a rank sends (KJT values + lengths into the all-to-all, plus "
           "the dense tensors beside it); user = the 10 user/context features, candidate = the 5 "
           "candidate features:", "", *table("kjt", "dense"), "",
           "Stored Parquet bytes per target (plain: no compression, no dictionary):", "",
           *table("stored_plain", None), "",
           "Stored Parquet bytes per target (dictionary + zstd, pointwise copies in different "
           "row groups, as in a shuffled pointwise data set):", "",
           *table("stored_zstd_dispersed", None)]  # fmt: skip
    s = payload["summary"]["user_kjt_per_request"]
    if s:
        per_req = ", ".join(f"{k}: RLB {v['rlb']:,.0f} / pointwise {v['pointwise']:,.0f}"
                            for k, v in s.items())  # fmt: skip
        out += ["", f"User-feature KJT bytes per request (RLB: constant in T; pointwise: T times "
                f"it): {per_req}."]  # fmt: skip
    return "\n".join(out)


def plot(payload: dict[str, Any], axes: Any) -> None:
    """Left: user-feature input bytes per target against T; right: total input bytes."""
    ax_u, ax_t = axes
    rows = [r for r in payload["results"] if r.get("part") == "bytes"]
    length = max((r["length"] for r in rows), default=0)
    for fs, style in (("none", ":"), ("user", "--"), ("user+cand", "-")):
        sel = sorted((r for r in rows if r["features"] == fs and r["length"] == length),
                     key=lambda r: r["targets"])  # fmt: skip
        ts = [r["targets"] for r in sel]
        for lay, mark in (("rlb", "o"), ("pointwise", "s")):
            if fs != "none":
                user = [r[lay]["kjt"]["user"] + r[lay]["dense"]["user"] for r in sel]
                ax_u.plot(ts, user, mark + style, label=f"{lay}, {fs}")
            ax_t.plot(ts, [r[lay]["input"] for r in sel], mark + style, label=f"{lay}, {fs}")
    for ax, title in ((ax_u, f"user-feature input bytes per target (L={length})"),
                      (ax_t, f"all input bytes per target (L={length})")):  # fmt: skip
        if rows:
            ax.set(xscale="log", yscale="log")
        ax.set_xlabel("targets per request T")
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
