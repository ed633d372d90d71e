"""Benchmark plumbing: the real CLI on tiny shapes, the JSON structure, the report, the
torch-only import path and the argument errors. No timing value is asserted anywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from longseq.bench.common import BenchError
from longseq.bench.config import parse_args
from longseq.bench.suites import SUITES, run_order, suite_function
from tests.bench.bench_cli import ENV, REPO, REPS, load
from tests.bench.bench_cli import cli as _cli


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_writes_json_and_a_plot(tiny_run, suite):
    p = load(tiny_run, suite)
    assert p["suite"] == suite and p["schema"] == 1
    assert p["command"].startswith(f"python -m longseq.bench suite={suite} ")
    env = p["environment"]
    for key in ("torch", "cpu_model", "torch_threads", "device", "device_name", "dtype", "malloc"):
        assert key in env, key
    assert env["torch_threads"] == 1 and env["device"] == "cpu" and env["mode"] == "tiny"
    assert p["config"]["reps"] == REPS
    assert p["results"] and isinstance(p["summary"], dict) and p["notes"]
    for r in p["results"]:  # every timed row keeps its raw repetitions
        for key in [k for k in r if k.endswith("reps_s")]:
            assert len(r[key]) == REPS
    assert (tiny_run / f"{suite}.png").stat().st_size > 1000


def test_scaling_structure(tiny_run):
    p = load(tiny_run, "scaling")
    towers = {"stca", "transformer", "din"}
    assert {r["tower"] for r in p["results"]} == towers
    assert {r["length"] for r in p["results"]} == set(p["config"]["lengths"])
    for r in p["results"]:
        assert r["saved_activation_bytes_per_target"] > 0
        assert r["cuda_peak_bytes_per_target"] is None  # CPU: reported as absent, not zero
    assert set(p["summary"]["exponent"]) == towers
    assert "saved_activation_bytes" in p["memory_method"]


def test_kernel_structure(tiny_run):
    p = load(tiny_run, "kernel")
    variants = {r["variant"] for r in p["results"]}
    assert {"step_kv", "step_kv_sdpa", "step_absorbed", "module_kv", "module_absorbed"} <= variants
    jagged = [r for r in p["results"] if r["variant"] == "module_jagged"]
    assert jagged and all(r["median_s"] > 0 for r in jagged)
    for key in ("copy", "clone", "matmul"):
        assert p["ceilings"][key]["median_s"] > 0
    row = next(r for r in p["results"] if r["variant"] == "step_kv")
    b, t, L = row["batch"], row["targets"], row["length"]
    d, eb = p["config"]["d_model"], p["config"]["element_bytes"]
    assert row["bytes"] == 2 * b * L * d * eb and row["flops"] == 4 * b * t * L * d


def test_serve_structure(tiny_run):
    p = load(tiny_run, "serve")
    assert set(p["summary"]) == {"absorbed", "kv", "sdpa", "flex"}
    ks = p["config"]["candidates"]
    for form in ("absorbed", "kv"):
        got = sorted(
            r["candidates"] for r in p["results"] if r["form"] == form and "candidates" in r
        )
        assert got == ks
        assert p["summary"][form]["max_candidates"] == ks[-1]


def test_packed_structure(tiny_run):
    """Every path on every (tower, candidate set), each path's output equal to padded's."""
    p = load(tiny_run, "packed")
    got = {(r["variant"], r["candidates"], r["path"]) for r in p["results"]}
    sets = p["config"]["candidate_sets"]
    assert got == {
        (v, c, path) for v in ("paper", "recipe") for c in sets for path in p["config"]["paths"]
    }
    assert all(r["max_abs_diff"] <= 1e-5 for r in p["results"])
    assert all(r["events"] < r["padded_events"] for r in p["results"])  # ragged: padding exists
    lat = p["summary"]["latency_recipe_T=16"]
    assert set(lat) == {"padded sdpa", "packed flex"}
    assert all(0 < v["p50_s"] <= v["p99_s"] for v in lat.values())
    train = p["summary"]["train_recipe_T=16"]  # tiny runs the training path's plumbing on CPU
    assert set(train) == set(p["config"]["paths"])
    assert all(
        v["max_abs_diff_z"] <= 1e-5 and v["max_rel_diff_grad"] <= 1e-4 for v in train.values()
    )


def test_rlb_counts_bytes_exactly(tiny_run):
    p = load(tiny_run, "rlb")
    assert p["skipped"] == {}
    parts = {r["part"] for r in p["results"]}
    assert parts == {"stored", "h2d", "throughput", "a2a"}
    length, t = p["config"]["count"]["lengths"][0], 4
    a2a = next(r for r in p["results"] if r["part"] == "a2a" and r["targets"] == t)
    # one request per rank: 4 history keys of L ids + 2 target keys of T ids, vs T rows of L+1
    assert a2a["rlb_ids_per_target"] == (4 * length + 2 * t) / t
    assert a2a["pointwise_ids_per_target"] == 4 * length + 2
    assert a2a["ids_ratio"] == pytest.approx((4 * length + 2 * t) / (t * (4 * length + 2)))
    assert a2a["rlb_fwd_int_per_target"] >= a2a["rlb_kjt_per_target"]  # ids + lengths + splits
    one = next(r for r in p["results"] if r["part"] == "a2a" and r["targets"] == 1)
    assert one["ids_ratio"] == one["fwd_float_ratio"] == one["bwd_float_ratio"] == 1.0
    stored = [r for r in p["results"] if r["part"] == "stored" and r["targets"] == 1]
    assert all(r["plain_ratio"] == 1.0 for r in stored)
    tp = [r for r in p["results"] if r["part"] == "throughput"]
    assert {r["targets"] for r in tp} == set(p["config"]["time"]["targets"])
    assert all(r["world"] == 2 for r in tp)


def test_report_from_the_results(tiny_run, tmp_path):
    from longseq.bench.report import write_report

    doc = write_report(
        tiny_run.parent, tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "img"
    )
    text = doc.read_text()
    assert "No GPU run has been made yet" in text and "benchmarks/gpu.sh" in text
    assert "Targets of issues 5 and 7" in text
    for suite in SUITES:
        assert f"`cpu` / {suite}:" in text
        assert f"(img/cpu_{suite}.png)" in text
        assert (tmp_path / "docs" / "img" / f"cpu_{suite}.png").is_file()
    assert "Command: `python -m longseq.bench suite=rlb" in text
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "empty", tmp_path / "x.md")


def test_rlb_without_torchrec_records_what_it_skipped(monkeypatch, tmp_path):
    import importlib.util

    from longseq.bench import rlb

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchrec" else real(name, *a)
    )
    p = rlb.run(parse_args(["suite=rlb", "tiny=true", f"out={tmp_path}", "reps=1"]))
    assert set(p["skipped"]) == {"h2d", "throughput", "a2a"}
    assert all("torchrec not installed" in v for v in p["skipped"].values())
    assert {r["part"] for r in p["results"] if "skipped" not in r} == {"stored"}


def test_torch_only_suites_do_not_import_torchrec():
    """kernel, scaling, serve, the baselines, the report and the CLI (and the rlb module itself,
    before it runs) load no torchrec/fbgemm: they must run on a torch-only GPU machine."""
    code = (
        "import sys\n"
        "import longseq.bench.__main__, longseq.bench.common, longseq.bench.report\n"
        "import longseq.bench.kernel, longseq.bench.scaling, longseq.bench.serve\n"
        "import longseq.bench.rlb, longseq.model.baselines\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torchrec', 'fbgemm_gpu'))\n"
        "assert not bad, bad\n"
        "assert 'torch' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=ENV, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "argv, key",
    [
        (["suit=all"], "suit"),
        (["suite=nope"], "suite"),
        (["quick=maybe"], "quick"),
        (["reps=x"], "reps"),
        (["dtype=fp16"], "dtype"),
        (["device"], "device"),
    ],
)
def test_argument_errors_name_the_key(argv, key):
    with pytest.raises(BenchError, match=key):
        parse_args(argv)


def test_cli_rejects_bad_arguments():
    proc = _cli("suite=all", "colour=blue", timeout=120)  # Hydra: an unknown key
    assert proc.returncode != 0
    assert "'colour'" in proc.stderr
    proc = _cli("suite=nope", timeout=120)  # a value outside the choices: exit 2, names the key
    assert proc.returncode == 2
    assert "suite='nope': choose one of" in proc.stderr and "scaling" in proc.stderr


def test_suite_table():
    """One table: the CLI's choices, the run order of ``all`` and the report read it."""
    assert run_order() == (
        "scaling",
        "kernel",
        "serve",
        "packed",
        "eval_scale",
        "reader",
        "feat_bytes",
        "rlb",
        "feat_step",
        "replay",
        "trainer",
    )
    assert set(run_order()) == set(SUITES)
    for suite in ("scaling", "kernel", "serve", "packed"):  # the torch-only ones: cheap to import
        for part in ("run", "render", "plot"):
            assert callable(suite_function(suite, part))


def test_report_cli_config(tmp_path, capsys):
    """The report's Hydra config (writing the page itself: `test_report_from_the_results`)."""
    from longseq.bench.config import ReportConfig, compose_config
    from longseq.bench.report import main

    assert compose_config("bench_report", []) == ReportConfig()
    doc = tmp_path / "bench.md"
    cfg = compose_config("bench_report", [f"results={tmp_path / 'none'}", f"doc={doc}"])
    assert main(cfg) == 2 and "results=" in capsys.readouterr().err
    with pytest.raises(BenchError, match="colour"):
        compose_config("bench_report", ["colour=blue"])


def test_defaults_and_dtype_resolution():
    args = parse_args([])
    assert (args.suite, args.quick, args.device, args.reps) == ("all", True, "cpu", 5)
    assert args.resolved_dtype == "fp32" and args.mode == "quick"
    assert parse_args(["dtype=bf16", "quick=false"]).mode == "full"


def test_replay_serves_every_request_alike_on_both_paths(tiny_run):
    """The incremental cache and the full re-encode score every request of the stream alike;
    a returning user is a partial hit, a first request a miss."""
    p = load(tiny_run, "replay")
    cfg = p["config"]
    for k in cfg["candidates"]:
        e = p["summary"][f"K={k}"]
        assert e["hits"] + e["partial_hits"] + e["misses"] == cfg["requests"]
        assert 0 < e["misses"] <= cfg["users"] and e["partial_hits"] > 0
        assert e["max_abs_diff"] < 1e-5 and e["bytes_per_user"] > 0
        assert 0 < e["partial_user_fraction_of_full"]
    assert {r["kind"] for r in p["results"]} <= {"hit", "partial", "miss"}


def test_trainer_suite_measures_both_layouts_and_renders(tiny_run):
    """The trainer suite (two real 2-process trainer runs, RLB and pointwise), numbers read
    back from their metrics.jsonl."""
    from longseq.bench.trainer import IDS_RATIO_TARGET, render

    payload = load(tiny_run, "trainer")
    (row,) = payload["results"]
    assert "skipped" not in row, row.get("skipped")
    assert row["length"] == 64 and row["targets"] == 16 and row["world"] == 2
    assert row["rlb_targets_per_s"] > 0 and row["pointwise_targets_per_s"] > 0
    # ids per target from the trainer's own log: 4 history features once per request (RLB)
    # or once per target (pointwise), plus 2 target features per target
    assert row["rlb_input_ids_per_target"] == pytest.approx(4 * 64 / 16 + 2)
    assert row["pointwise_input_ids_per_target"] == pytest.approx(4 * 64 + 2)
    assert row["ids_ratio"] <= IDS_RATIO_TARGET
    assert payload["summary"]["ids_ratio_met"] == {"L=64": True}
    md = render(payload)
    assert md.splitlines()[0].startswith("| L | T | RLB targets/s")
    assert "| 64 | 16 |" in md and "(yes)" in md
