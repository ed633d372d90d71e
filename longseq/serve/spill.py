"""`FileTier`: a second tier for the incremental user states that fall out of the first.

`UserHistoryCache(..., second_tier=FileTier(directory, max_bytes))` hands every state its
byte-bounded LRU evicts to the tier, which writes it to a file (`user_to_dict` of
`longseq.serve.incremental_state`: a plain dict of tensors, ints, tuples and lists, no pickled
class); a request that misses the first tier takes the state back (`torch.load(...,
weights_only=True, mmap=True)`: memory-mapped, its pages read as they are touched) and promotes
it into the first tier. The tier is an LRU of its own, bounded by the sum of its files' sizes;
an evicted state's file is deleted. Files are named by the sha1 of the key's ``repr``; those an
earlier process left in the directory are neither read nor deleted.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Hashable
from pathlib import Path

import torch

from longseq.serve.incremental_state import IncrementalUser, user_from_dict, user_to_dict


class FileTier:
    """An LRU of `IncrementalUser` states in files under ``directory``, bounded by bytes.

    Args:
        directory: where the files go (created if missing; a ``ValueError`` when it is a file
            or not writable).
        max_bytes: the bound on the sum of the files' sizes (``0``: keep nothing).

    Counters: ``hits``, ``misses`` (`take`), ``evictions`` (files deleted to make room) and
    ``rejected`` (states whose file alone exceeds the bound, not kept).
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"second tier max_bytes must be >= 0, got {max_bytes}")
        self.directory, self.max_bytes = Path(directory), int(max_bytes)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission, ...
            raise ValueError(f"second tier directory {self.directory}: {e}") from e
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ValueError(f"second tier directory {self.directory} is not writable")
        #: file name -> (key, size), least recently used first
        self._files: OrderedDict[str, tuple[Hashable, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.rejected = 0

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, key: Hashable) -> bool:
        entry = self._files.get(self._name(key))
        return entry is not None and entry[0] == key

    @staticmethod
    def _name(key: Hashable) -> str:
        return hashlib.sha1(repr(key).encode()).hexdigest() + ".pt"

    def _drop(self, name: str) -> None:
        _, size = self._files.pop(name)
        self.bytes -= size
        (self.directory / name).unlink(missing_ok=True)

    def put(self, key: Hashable, user: IncrementalUser) -> bool:
        """Write ``user`` under ``key`` (replacing any state of the key), deleting least
        recently used files until the bound holds. False (nothing kept) when its file alone
        exceeds the bound."""
        name = self._name(key)
        if name in self._files:  # this key's older state (or a key of the same repr)
            self._drop(name)
        path, tmp = self.directory / name, self.directory / f".{name}.tmp"
        try:
            torch.save(user_to_dict(user), tmp)
            os.replace(tmp, path)  # never a half-written file under the name
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        size = path.stat().st_size
        if size > self.max_bytes:
            path.unlink()
            self.rejected += 1
            return False
        while self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._files)))
            self.evictions += 1
        self._files[name] = (key, size)
        self.bytes += size
        return True

    def take(self, key: Hashable) -> IncrementalUser | None:
        """The state stored under ``key``, removed from the tier, or None (a miss). Its file is
        deleted at once; its tensors stay memory-mapped (readable, the disk blocks in use) until
        they are freed: a partial hit's copy, or the state's eviction."""
        name = self._name(key)
        entry = self._files.get(name)
        if entry is None or entry[0] != key:
            self.misses += 1
            return None
        state = torch.load(self.directory / name, weights_only=True, mmap=True)
        self._drop(name)
        self.hits += 1
        return user_from_dict(state)

    def clear(self) -> None:
        """Delete every file of the tier (the counters stay)."""
        for name in list(self._files):
            self._drop(name)

    def stats(self) -> dict[str, int]:
        """Counters, entries and bytes held."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "rejected": self.rejected,
            "entries": len(self._files),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
        }
