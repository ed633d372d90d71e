"""Check a commit message: a subject of at most 72 characters, then a blank line and a body.

Used as the ``commit-msg`` hook in ``.pre-commit-config.yaml`` and by CONTRIBUTING.md's rule.
Usage: ``python tools/check_commit_msg.py <message-file>``; exits 1 with the reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_SUBJECT = 72


def problems(message: str) -> list[str]:
    """Return what is wrong with a commit message (empty when it follows the rule)."""
    lines = [ln for ln in message.splitlines() if not ln.startswith("#")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or not lines[0].strip():
        return ["the subject (first line) is empty"]
    found = []
    subject = lines[0]
    if len(subject) > MAX_SUBJECT:
        found.append(f"the subject is {len(subject)} characters; at most {MAX_SUBJECT}")
    if len(lines) < 3 or lines[1].strip() or not any(ln.strip() for ln in lines[2:]):
        found.append("no body: leave one blank line after the subject, then say what and why")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: check_commit_msg.py <message-file>", file=sys.stderr)
        return 2
    path = Path(argv[1])
    found = problems(path.read_text(encoding="utf-8"))
    for p in found:
        print(f"{path}: {p}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
