"""Suite ``serve``: one request with a long history and K candidates, timed on the serving path.

The STCA tower of the ``default`` experiment (d=128, 4 heads, 3 layers, FFN depth 2) in each
attention form (``flex``: the packed layout's FlexAttention kernel, a batch of one request), as the paper's tower (``kv``, ...) and with the model's recipe (``kv+recipe``,
...: id-match bias and count channel, the default of a `LongSeqModel`), through the tower
protocol as `longseq.serve.Scorer` calls it: ``encode_user`` once (the user side: history FFNs + LN and the
keys/values projections of every layer), then ``score(state, K candidates)``. Per K:

* **miss**: ``encode_user`` + ``score`` (the user state not cached; the whole request);
* **hit**: ``score`` against a cached state (what `longseq.serve.UserStateCache` saves).

Reported: user-side time, miss and hit time per K, the marginal cost per candidate (least-squares
slope of the hit time against K), candidates/s, cost(K_max) / cost(1), and the hit speed-up.
When TorchRec is importable, the whole `Scorer` path (embedding lookup, tokens, tower, heads) of
the recipe variants is timed too at K = 1 and K_max (``summary[variant]["model"]``). The tower part is plain torch (this
module imports no TorchRec: it runs on a torch-only machine).
"""

from __future__ import annotations

from typing import Any

import torch

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.timing import measure_interleaved
from longseq.model.stca import STCAConfig, STCATower
from longseq.model.stca_tables import with_tables

FORMS = ("absorbed", "kv", "sdpa", "flex")
#: the forms whose state can be indexed by id (`longseq.model.stca_tables`): keys and values
TABLE_FORMS = ("kv", "sdpa")
#: the ids' vocabulary: items drawn uniformly, each item's category fixed (``item % CATEGORIES``)
ITEMS, CATEGORIES = 20_000, 200
#: the model's STCA recipe (`longseq.model.model.RECIPE`, not imported: it loads TorchRec)
RECIPE = {"match_bias": True, "count_channel": True}
VOCAB = {"items": 100_000, "categories": 1_000}


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes of this mode."""
    if args.tiny:
        return dict(length=64, candidates=[1, 4, 16], d_model=16, num_heads=2, num_layers=2,
                    ffn_depth=1)  # fmt: skip
    return dict(length=10240, candidates=[1, 16, 128, 512],
                d_model=128, num_heads=4, num_layers=3, ffn_depth=2)  # fmt: skip


def flop_bound(g: dict[str, Any], ffn_ratio: float = 2.0) -> float:
    """The least cost(K_max) / cost(1) of the ``kv``/``sdpa`` forms if every multiply-add ran at
    the same speed: ``1 + (K_max - 1) * A / U``, with ``A = 2 L d M`` the attention multiply-adds
    of one candidate (scores and values over ``L`` events, ``M`` layers) and ``U = L M d^2
    (3 r D + 2)`` the user side's (each layer's ``D`` SwiGLU blocks of width ``r d``, and its
    keys/values). The candidates' own FFNs are left out, so the true bound is higher."""
    length, d, m, depth = g["length"], g["d_model"], g["num_layers"], g["ffn_depth"]
    per_candidate = 2 * length * d * m
    user = length * m * d * d * (3 * ffn_ratio * depth + 2)
    return 1 + (g["candidates"][-1] - 1) * per_candidate / user


def _slope(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ``ys`` against ``xs``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def _model_fns(cfg: STCAConfig, g: dict[str, Any], args: BenchArgs, tables: bool) -> dict[str, Any]:
    """The `Scorer` path (lookup + tokens + tower + heads) at K = 1 and K_max; {} without
    TorchRec."""
    try:
        from longseq.model.embeddings import TableSizes
        from longseq.model.model import LongSeqModel, ModelConfig
        from longseq.serve import Scorer, make_request
    except ImportError:
        return {}
    torch.manual_seed(0)
    mcfg = ModelConfig(tower="stca", stca=cfg)
    sizes = TableSizes(VOCAB["items"], VOCAB["categories"], 8)
    model = LongSeqModel(mcfg, sizes, ["click"]).to(args.torch_device, args.torch_dtype)
    scorer = Scorer(model, cache_bytes=0, match_tables=tables)
    n, k_max = g["length"], g["candidates"][-1]
    gen = torch.Generator().manual_seed(1)
    ints = lambda hi, m: torch.randint(0, hi, (m,), generator=gen).tolist()  # noqa: E731
    ts = sorted(ints(10**6, n))
    req = make_request(ints(sizes.num_items, n), ints(sizes.num_categories, n), ints(8, n), ts,
                       10**6 + 60)  # fmt: skip
    items, cats = ints(sizes.num_items, k_max), ints(sizes.num_categories, k_max)
    with torch.inference_mode():
        state = scorer.encode(req)
    fns: dict[str, Any] = {"model encode": lambda: scorer.encode(req)}
    for k in (1, k_max):
        fns[f"model miss K={k}"] = lambda k=k: scorer.score(scorer.encode(req), items[:k], cats[:k])
        fns[f"model hit K={k}"] = lambda k=k: scorer.score(state, items[:k], cats[:k])
    return fns


def _ids(n: int, dev) -> torch.Tensor:  # noqa: ANN001
    """``[1, n, 2]`` (item, category) ids: `ITEMS` items, each of one of `CATEGORIES` categories
    (a 10k history holds about 50 events of a category, one of an item)."""
    item = torch.randint(0, ITEMS, (1, n), device=dev)
    return torch.stack([item, item % CATEGORIES], -1)


def _protocol(tower: STCATower, hist, mask, hist_ids, tables: bool = False):
    """``(encode(), score(state, cands, cand_ids))`` of one request: the padded tower protocol
    (``tables``: the state indexed by id, as `longseq.serve.Scorer` serves it), or for the
    ``flex`` kernel the packed one (a batch of one request, one FlexAttention call)."""
    if tables:
        return (lambda: with_tables(tower, tower.encode_user(hist, mask, hist_ids))), tower.score
    if tower.layout == "padded":
        return (lambda: tower.encode_user(hist, mask, hist_ids)), tower.score
    lengths = mask.sum(1)

    def score(state, c, ci):
        nt = torch.tensor([c.shape[1]], device=c.device)
        return tower.score_packed(state, c[0], nt, ci[0])[None]

    return (lambda: tower.encode_user_packed(hist[0], lengths, hist_ids[0])), score


def _recipe_notes(summary: dict[str, Any], k: int) -> list[str]:
    """One line per form: the recipe variant's numbers (the table shows the paper's tower)."""
    out = []
    for form, s in summary.items():
        for part in ("recipe", "tables"):
            r = s.get(part)
            if not r:
                continue
            line = (
                f"{form}+{part}: user side {r['user_side_s'] * 1e3:.1f} ms, K={k} / K=1 "
                f"{r['cost_ratio_max_vs_1']:.2f}x, marginal {r['marginal_s_per_candidate'] * 1e3:.3f} "
                f"ms/candidate, cache hit at K=1 {r['hit_speedup_at_1']:.1f}x faster than a miss"
            )
            if m := r.get("model"):
                line += (
                    f"; Scorer end to end: encode {m['encode'] * 1e3:.1f} ms, K=1 miss "
                    f"{m['miss_K=1'] * 1e3:.1f} / hit {m['hit_K=1'] * 1e3:.1f} ms, K={k} miss "
                    f"{m[f'miss_K={k}'] * 1e3:.1f} / hit {m[f'hit_K={k}'] * 1e3:.1f} ms"
                )
            out.append(line)
    return out


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    dev, dtype = args.torch_device, args.torch_dtype
    d, length, ks = g["d_model"], g["length"], g["candidates"]
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    torch.manual_seed(0)
    hist = torch.randn(1, length, d, device=dev, dtype=dtype)
    mask = torch.ones(1, length, dtype=torch.bool, device=dev)
    cands = torch.randn(1, max(ks), d, device=dev, dtype=dtype)
    hist_ids, tgt_ids = _ids(length, dev), _ids(max(ks), dev)
    variants = {
        **{f: (f, {}, False) for f in FORMS},
        **{f"{f}+recipe": (f, RECIPE, False) for f in FORMS},
        **{f"{f}+tables": (f, RECIPE, True) for f in TABLE_FORMS},
    }
    for form, (kernel, recipe, tables) in variants.items():
        layout = "packed" if kernel == "flex" else "padded"
        cfg = STCAConfig(d_model=d, num_heads=g["num_heads"], num_layers=g["num_layers"],
                         ffn_depth=g["ffn_depth"], kernel=kernel, layout=layout, **recipe)  # fmt: skip
        torch.manual_seed(0)
        tower = STCATower(cfg).to(dev, dtype).eval()
        encode, score = _protocol(tower, hist, mask, hist_ids, tables)
        with torch.inference_mode():
            state = encode()
        fns: dict[str, Any] = {"user_side": encode}
        for k in ks:
            c, ci = cands[:, :k], tgt_ids[:, :k]
            fns[f"miss K={k}"] = lambda c=c, ci=ci, sc=score, en=encode: sc(en(), c, ci)
            fns[f"hit K={k}"] = lambda s=state, c=c, ci=ci, sc=score: sc(s, c, ci)
        model_fns = {} if args.tiny or not recipe else _model_fns(cfg, g, args, tables)
        with torch.inference_mode():
            timings = measure_interleaved({**fns, **model_fns}, args.reps, args.warmup, dev)
        user = timings.pop("user_side")
        results.append({"form": form, "part": "user_side", "length": length,
                        "median_s": user.median_s, "reps_s": user.reps_s})  # fmt: skip
        miss, hit = [], []
        for k in ks:
            m, h = timings[f"miss K={k}"], timings[f"hit K={k}"]
            miss.append(m.median_s)
            hit.append(h.median_s)
            results.append({"form": form, "part": "request", "length": length, "candidates": k,
                            "median_s": m.median_s, "reps_s": m.reps_s,
                            "candidates_per_s": k / m.median_s,
                            "hit_median_s": h.median_s, "hit_reps_s": h.reps_s,
                            "hit_candidates_per_s": k / h.median_s})  # fmt: skip
        slope, intercept = _slope(ks, hit)
        entry = {
            "user_side_s": user.median_s,
            "marginal_s_per_candidate": slope,
            "intercept_s": intercept,
            "cost_ratio_max_vs_1": miss[-1] / miss[0],
            "max_candidates": ks[-1],
            "user_side_fraction_at_1": user.median_s / miss[0],
            "candidates_per_s_at_max": ks[-1] / miss[-1],
            "hit_speedup_at_1": miss[0] / hit[0],
            "hit_speedup_at_max": miss[-1] / hit[-1],
            "hit_candidates_per_s_at_max": ks[-1] / hit[-1],
        }
        if model_fns:
            entry["model"] = {
                name.removeprefix("model ").replace(" ", "_"): t.median_s
                for name, t in timings.items()
                if name.startswith("model ")
            }
        if recipe:  # nested: the report's table and target read the paper's tower per form
            summary[kernel]["tables" if tables else "recipe"] = entry
        else:
            summary[form] = entry
    return result_payload(
        args,
        "serve",
        config={
            **g,
            "forms": list(FORMS),
            "dtype": args.resolved_dtype,
            "recipe": RECIPE,
            "flop_bound_ratio": flop_bound(g),
        },  # fmt: skip
        results=results,
        summary=summary,
        notes=[
            "inference mode, one request (batch 1), every history slot valid",
            "form = the paper's tower in that attention form; form+recipe = with the model's "
            "default id-match bias and count channel (an additive score bias: the sdpa form "
            "then passes it as an attention mask); form+tables = the same model with its state's "
            "events indexed by id (longseq.model.stca_tables, what Scorer serves by default): "
            "the count channel by lookups, the match bias as a correction over each candidate's "
            "matched events",
            f"ids: {ITEMS} items, each in one of {CATEGORIES} categories (item % {CATEGORIES}), "
            "drawn uniformly for the history and the candidates",
            "user_side = STCATower.encode_user: every layer's history FFN + LN and its "
            "TargetAttention.project (keys/values; X̃ itself in the absorbed form)",
            "request (miss) = encode_user + score(K); hit = score(K) against a cached state",
            "marginal_s_per_candidate = least-squares slope of the hit time against K",
            f"flop_bound_ratio = {flop_bound(g):.2f}: the least K_max / K=1 cost ratio of the kv/"
            "sdpa forms at equal speed per multiply-add (attention of K_max - 1 extra candidates "
            "against the user side's FFNs and projections; candidate FFNs left out)",
            *_recipe_notes(summary, ks[-1]),
            "summary[form].recipe.model (when TorchRec is importable): longseq.serve.Scorer end to end "
            "(embedding lookup, tokens, tower, heads; vocab "
            f"{VOCAB['items']} items): encode, miss and hit at K=1 and K_max",
        ],
    )
