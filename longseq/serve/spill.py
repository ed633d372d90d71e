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
from collections.abc import Hashable
from pathlib import Path

import torch

from longseq.serve.cache import UserStateCache
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
        #: file name -> key, sized by the file: the LRU bookkeeping; its evictions delete files
        self._index = UserStateCache(self.max_bytes, on_evict=self._delete)
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: Hashable) -> bool:
        return self._index.peek(self._name(key)) == key

    @property
    def bytes(self) -> int:
        """The sum of the sizes of the tier's files."""
        return self._index.bytes

    @property
    def evictions(self) -> int:
        """Files deleted to make room."""
        return self._index.evictions

    @property
    def rejected(self) -> int:
        """States whose file alone exceeded the bound."""
        return self._index.rejected

    @staticmethod
    def _name(key: Hashable) -> str:
        return hashlib.sha1(repr(key).encode()).hexdigest() + ".pt"

    def _delete(self, name: Hashable, _key: object = None, _size: int = 0) -> None:
        """Forget ``name`` and delete its file (also `UserStateCache`'s ``on_evict``)."""
        self._index.pop(name)
        (self.directory / str(name)).unlink(missing_ok=True)

    def put(self, key: Hashable, user: IncrementalUser) -> bool:
        """Write ``user`` under ``key`` (replacing any state of the key), deleting least
        recently used files until the bound holds. False (nothing kept) when its file alone
        exceeds the bound."""
        name = self._name(key)
        self._index.pop(name)  # this key's older state (or a key of the same repr)
        path, tmp = self.directory / name, self.directory / f".{name}.tmp"
        try:
            torch.save(user_to_dict(user), tmp)
            os.replace(tmp, path)  # never a half-written file under the name
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not self._index.put(name, key, path.stat().st_size):  # alone over the bound
            path.unlink()
            return False
        return True

    def take(self, key: Hashable) -> IncrementalUser | None:
        """The state stored under ``key``, removed from the tier, or None (a miss). Its file is
        deleted at once; its tensors stay memory-mapped (readable, the disk blocks in use) until
        they are freed: a partial hit's copy, or the state's eviction."""
        name = self._name(key)
        if self._index.peek(name) != key:
            self.misses += 1
            return None
        state = torch.load(self.directory / name, weights_only=True, mmap=True)
        self._delete(name)
        self.hits += 1
        return user_from_dict(state)

    def clear(self) -> None:
        """Delete every file of the tier (the counters stay)."""
        for name in self._index.keys():
            self._delete(name)

    def stats(self) -> dict[str, int]:
        """Counters, entries and bytes held."""
        return {**self._index.stats(), "hits": self.hits, "misses": self.misses}
