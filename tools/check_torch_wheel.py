"""Fail loudly if pip would install a CUDA build of torch on this CPU machine.

`make setup` runs this before installing the lock file. An unpinned torch, or a machine without
the local CPU wheel, makes pip fetch a multi-GB CUDA build from PyPI; we refuse instead.
Usage: python tools/check_torch_wheel.py <pip> <torch requirement>
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile


def main() -> int:
    pip, req = sys.argv[1], sys.argv[2]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [
            pip,
            "install",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--quiet",
            "--report",
            f.name,
            req,
        ]
        subprocess.run(cmd, check=True)
        report = json.load(open(f.name))
    items = report.get("install", [])
    if not items:
        print(f"check_torch_wheel: pip resolved nothing for {req}", file=sys.stderr)
        return 1
    version = items[0]["metadata"]["version"]
    url = items[0].get("download_info", {}).get("url", "")
    if "+cpu" not in version and "cpu" not in url:
        print(
            f"\nERROR: pip would install torch {version} from\n  {url}\n"
            "which is a CUDA build (several GB). On a CPU machine install the CPU wheel instead:\n"
            "  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make setup\n"
            "or make a local torch-2.13.0+cpu wheel visible to pip (find-links).\n",
            file=sys.stderr,
        )
        return 1
    print(f"check_torch_wheel: torch {version} ({url.split('/')[-1] or 'local'}) is a CPU build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
