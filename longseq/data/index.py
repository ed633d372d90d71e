"""Write the manifest of data written elsewhere, so that readers start without every footer.

    python -m longseq.data.index path=<data set or split folder> [progress=true]

A folder with ``meta.json``, or with a ``train`` / ``valid`` / ``test`` sub-folder, is a data set:
each sub-folder holding Parquet files gets its ``_manifest.json`` (`longseq.data.manifest`); any
other folder is one split. The generator and the converters write manifests themselves
(`longseq.data.writer.SplitWriter`); run this after adding, removing or rewriting files, or for
data from another tool. Exit status 0 with one line per manifest written; 2 with a message
naming the path or file otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from longseq.data.manifest import write_manifest
from longseq.data.meta import META_NAME

#: Sub-folder names that make a folder a data set root (besides ``meta.json``).
SPLIT_NAMES = ("train", "valid", "test", "test_random")


@dataclass
class IndexConfig:
    """Config of ``python -m longseq.data.index`` (registered as ``index_schema``).

    Attributes:
        path: a data set folder (every split gets a manifest) or one split folder.
        progress: tqdm bar over the files of each split on stderr.
    """

    path: str = MISSING
    progress: bool = True


def split_folders(path: str | Path) -> list[Path]:
    """The split folders of ``path``: its sub-folders holding Parquet files if it is a data set
    root (``meta.json`` or a standard split sub-folder), else ``path`` itself."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"path={p}: not a folder (give a data set or a split folder)")
    is_root = (p / META_NAME).is_file() or any((p / s).is_dir() for s in SPLIT_NAMES)
    if is_root and not any(p.glob("*.parquet")):
        subs = [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(("_", "."))]
        found = [d for d in subs if any(d.rglob("*.parquet"))]
        if not found:
            raise FileNotFoundError(f"{p}: no split folder with .parquet files")
        return found
    return [p]


def index_path(path: str | Path, progress: bool = False) -> list[Path]:
    """Write the manifest of every split of ``path``; return the manifest files."""
    return [write_manifest(d, progress=progress) for d in split_folders(path)]


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="index_schema", node=IndexConfig)


def _main() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR

    _register()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="index")
    def run(cfg: DictConfig) -> None:
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, IndexConfig)
        try:
            written = index_path(conf.path, conf.progress)
        except (ValueError, FileNotFoundError, OSError) as e:
            print(f"index: {e}", file=sys.stderr)
            sys.exit(2)
        for m in written:
            print(f"wrote {m}", flush=True)

    run()


if __name__ == "__main__":
    _main()
