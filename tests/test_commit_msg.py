"""tools/check_commit_msg.py: the commit-message rule of CONTRIBUTING.md."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from check_commit_msg import MAX_SUBJECT, problems  # noqa: E402


def test_subject_and_body_pass():
    assert problems("data: cap targets per request\n\nWhy: one request took 8 GB.\n") == []


def test_comment_lines_are_ignored():
    msg = "model: one kernel enum\n\nBody line.\n# Please enter the commit message\n"
    assert problems(msg) == []


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("x" * (MAX_SUBJECT + 1) + "\n\nbody\n", "characters; at most 72"),
        ("subject only\n", "no body"),
        ("subject\nbody without a blank line\n", "no body"),
        ("\n\nbody\n", "subject (first line) is empty"),
    ],
)
def test_bad_messages_are_named(message, expected):
    found = problems(message)
    assert found and any(expected in p for p in found), found


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good"
    good.write_text("a subject\n\na body\n")
    bad = tmp_path / "bad"
    bad.write_text("y" * 80 + "\n")
    script = ROOT / "tools" / "check_commit_msg.py"
    assert subprocess.run([sys.executable, script, good]).returncode == 0
    res = subprocess.run([sys.executable, script, bad], capture_output=True, text=True)
    assert res.returncode == 1 and "80 characters" in res.stderr
