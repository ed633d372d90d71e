"""Where the Hydra configs live, and small helpers shared by the entry points.

Hydra is used only at entry points (``__main__`` modules). Components take their own typed
dataclass config, never the whole tree.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository's ``configs/`` folder. ``LONGSEQ_CONFIG_DIR`` overrides it (e.g. in an image
#: where the package is installed away from the source tree).
CONFIG_DIR: str = os.environ.get(
    "LONGSEQ_CONFIG_DIR", str(Path(__file__).resolve().parent.parent / "configs")
)
