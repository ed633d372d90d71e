"""Bad RecBole atomic files: every error names the file, the line and the field (or the
config key), and nothing is converted."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from convert_ref import convert
from recbole_fixtures import INTER_HEADER, ITEM_HEADER, write_atomic, write_lines

from longseq.datasets.convert.config import ConvertConfig

GOOD = "196\t242\t3\t881250949"


def _inter(d: Path, lines: list[str], header: str = INTER_HEADER) -> Path:
    return write_lines(d / "ml-100k.inter", header, lines)


def _edit(path: Path, line: int, fn: Callable[[str], str]) -> Path:
    """Replace 1-based ``line`` of ``path`` by ``fn(line)``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fails(src: Path, match: str, exc: type[Exception] = ValueError, **opts) -> None:
    with pytest.raises(exc, match=match):
        convert("recbole", src, src.parent / "out", opts=opts)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    write_atomic(tmp_path / "raw", movies=20)
    return tmp_path / "raw"


def test_missing_files(tmp_path: Path, raw: Path) -> None:
    _fails(tmp_path / "nowhere", "not a folder", FileNotFoundError)
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", r"no \*\.inter file", FileNotFoundError)
    _fails(raw, r"no ml-1m\.inter file", FileNotFoundError, name="ml-1m")
    write_atomic(raw / "again", movies=20, name="other")
    _fails(raw, r"2 \*\.inter file\(s\).*choose one with recbole\.name", FileNotFoundError)
    (raw / "again" / "other.inter").unlink()
    (raw / "ml-100k.item").unlink()
    item = re.escape(str(raw / "ml-100k.item"))
    _fails(raw, rf"{item}: file not found \(recbole\.category_field='class'", FileNotFoundError)
    stats = convert("recbole", raw, raw.parent / "ok", opts={"category_field": ""})
    assert stats["categories"] == 1  # no .item needed without a category field


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("user_id:token\titem_id\trating:float\ttimestamp:float",
         r"line 1 \(header\), field 2 'item_id': not name:type"),
        ("user_id:token\titem_id:token\trating:int\ttimestamp:float",
         r"line 1 \(header\), field 3 'rating:int': unknown type 'int', must be token\|"),
        ("user_id:token\titem_id:token\trating:float\tuser_id:token",
         r"line 1 \(header\), field 4 'user_id:token': field name 'user_id' repeated"),
        ("user_id:token\titem_id:token\ttimestamp:float\tx:float",
         r"line 1 \(header\): no field 'rating' \(recbole\.label_field\)"),
        ("user_id:token\titem_id:token\trating:token\ttimestamp:float",
         r"line 1 \(header\), field 'rating:token' \(recbole\.label_field\): type 'token', "
         r"must be float"),
    ],
)  # fmt: skip
def test_bad_header(tmp_path: Path, header: str, match: str) -> None:
    f = _inter(tmp_path / "raw", [GOOD], header)
    _fails(tmp_path / "raw", rf"{re.escape(str(f))}: {match}")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("7\t242\t3\t881250949\t1", r"line 3: 5 fields, expected 4"),
        ("7\t242\t3", r"line 3: 3 fields, expected 4"),
        ("7\t242\t3\t881250949.5",
         r"line 3, column 'timestamp:float': 881250949.5 is not a whole number of seconds"),
        ("7\t242\t3\tyesterday", r"line 3, column 'timestamp:float': cannot read 'yesterday'"),
        ("7\t242\t3\t", r"line 3, column 'timestamp:float': empty value \(recbole\.time_field\)"),
        ("\t242\t3\t881250949", r"line 3, column 'user_id:token': empty value \(recbole\.user_field\)"),
        ("7\t242\t\t881250949", r"line 3, column 'rating:float': empty value \(recbole\.label_field\)"),
        ("7\t242\t9\t881250949",
         r"line 3, column 'rating:float': 9.0 x recbole.action_scale=2.0 is not an action in "
         r"\[0, recbole.num_actions=11\)"),
    ],
)  # fmt: skip
def test_bad_interaction_row(tmp_path: Path, row: str, match: str) -> None:
    f = _inter(tmp_path / "raw", [GOOD, row, GOOD])
    _fails(tmp_path / "raw", rf"{re.escape(str(f))}: {match}", category_field="")


def test_bad_row_deep_in_a_large_file_names_its_line(raw: Path) -> None:
    """Past the first block: the line counts across blocks."""
    f = _edit(raw / "ml-100k.inter", 150, lambda s: s.rsplit("\t", 1)[0] + "\t1.5e9x")
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(f))}: line 150, column 'timestamp:float'"
    ):
        convert("recbole", raw, raw.parent / "out", block_mb=0.001)


def test_empty_files(tmp_path: Path, raw: Path) -> None:
    (raw / "ml-100k.user").write_text("")
    _fails(raw, rf"{re.escape(str(raw / 'ml-100k.user'))}: empty file \(an atomic file starts")
    write_lines(raw / "ml-100k.user", "user_id:token\tage:token", [])
    _fails(raw, rf"{re.escape(str(raw / 'ml-100k.user'))}: empty file \(a header and no rows\)")
    _inter(tmp_path / "hdr", [])
    _fails(tmp_path / "hdr", "no events read", category_field="")
    (tmp_path / "hdr" / "ml-100k.inter").write_text("")
    _fails(tmp_path / "hdr", r"ml-100k\.inter: empty file", category_field="")


def test_bad_side_tables(raw: Path) -> None:
    item = re.escape(str(raw / "ml-100k.item"))
    _edit(raw / "ml-100k.item", 4, lambda s: s + "\textra")
    _fails(raw, rf"{item}: line 4: 5 fields, expected 4")
    _edit(raw / "ml-100k.item", 4, lambda s: "2" + s[s.index("\t") : s.rindex("\t")])
    _fails(raw, rf"{item}: line 4, field 'item_id:token': '2' repeats line 3")
    _edit(raw / "ml-100k.item", 4, lambda s: "\t" + s.split("\t", 1)[1])
    _fails(raw, rf"{item}: line 4, field 'item_id:token': empty value \(recbole\.item_field\)")
    write_lines(raw / "ml-100k.item", ITEM_HEADER.replace("release_year:token", "year:float"),
                ["1\tA\t1995\tDrama", "2\tB\tnineteen\tDrama"])  # fmt: skip
    _fails(raw, rf"{item}: line 3, field 'year:float': 'nineteen' is not a number")
    _fails(raw, r"'year:float' \(recbole\.category_field\): type 'float', must be token\|token_seq",
           category_field="year")  # fmt: skip
    _fails(raw, rf"{item}: line 1 \(header\): no field 'genre' \(recbole\.category_field\)",
           category_field="genre")  # fmt: skip


def test_config_errors_name_the_key() -> None:
    cases = {"category_rule": ("all", "recbole.category_rule must be first|combination"),
             "item_field": ("user_id", "recbole.item_field must be distinct"),
             "time_field": ("", "recbole.time_field must be non-empty"),
             "seq_separator": ("\t", "recbole.seq_separator must be non-empty and not field_sep"),
             "field_separator": (", ", "recbole.field_separator must be one character"),
             "num_actions": (0, "recbole.num_actions must be >= 1")}  # fmt: skip
    for key, (value, match) in cases.items():
        cfg = ConvertConfig(dataset="recbole", src="x", out="y")
        setattr(cfg.recbole, key, value)
        with pytest.raises(ValueError, match=re.escape(f"convert config: {match}")):
            cfg.validate()
