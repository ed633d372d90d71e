"""`UserStateCache`: user states kept between requests, LRU, bounded by bytes.

Keyed by ``(user_id, version)``: the version names the history a state was computed from (e.g.
the history's length and last event time, plus the request time when the time-delta features
must be exact; docs/serving.md). A new version is a miss; the old entry ages out by LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class UserStateCache:
    """Least-recently-used map of user states, holding at most ``max_bytes`` of tensors.

    Args:
        max_bytes: the bound on the sum of the entries' sizes (``0``: cache nothing).
        on_evict: called as ``on_evict(key, state, nbytes)`` for each entry evicted to make
            room (e.g. to move it to a second tier), once the new entry is stored; not for
            ``rejected`` states, replaced entries or `clear`.

    Counters: ``hits``, ``misses`` (`get`), ``evictions`` (entries dropped to make room) and
    ``rejected`` (states larger than the whole bound, never stored).
    """

    def __init__(
        self, max_bytes: int, on_evict: Callable[[Hashable, Any, int], object] | None = None
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.on_evict = on_evict
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = self.rejected = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Any | None:
        """The state stored under ``key`` (now the most recently used), or None (a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def peek(self, key: Hashable) -> Any | None:
        """The state stored under ``key`` or None, without counting a hit or miss and without
        making it the most recently used."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def pop(self, key: Hashable) -> Any | None:
        """Remove and return the state stored under ``key`` (None: none); no counter moves and
        ``on_evict`` is not called."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self.bytes -= entry[1]
        return entry[0]

    def keys(self) -> list[Hashable]:
        """The keys held, least recently used first."""
        return list(self._entries)

    def put(self, key: Hashable, state: Any, nbytes: int) -> bool:
        """Store ``state`` (``nbytes`` large) under ``key``, evicting least recently used
        entries until it fits. Returns False (and stores nothing) when it alone exceeds the
        bound."""
        self.pop(key)
        if nbytes > self.max_bytes:
            self.rejected += 1
            return False
        evicted = []
        while self.bytes + nbytes > self.max_bytes:
            old, (old_state, size) = self._entries.popitem(last=False)
            self.bytes -= size
            self.evictions += 1
            evicted.append((old, old_state, size))
        self._entries[key] = (state, int(nbytes))
        self.bytes += int(nbytes)
        if self.on_evict is not None:  # the cache is consistent while the callback runs
            for entry in evicted:
                self.on_evict(*entry)
        return True

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self._entries.clear()
        self.bytes = 0

    def stats(self) -> dict[str, int]:
        """Counters, entries and bytes held."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "rejected": self.rejected,
            "entries": len(self._entries),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
        }
