"""A thread-safe store of the most recently used entries, bounded by count and by bytes.

The service keeps what clients uploaded (encoded character sheets, portraits, ANR
models) here by content id; when a new entry would pass either bound, the least
recently used ones go first. Reading an entry counts as using it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class LruStore(Generic[Value]):
    def __init__(
        self,
        max_entries: int,
        max_bytes: int | None = None,
        size_of: Callable[[Value], int] | None = None,
    ):
        self.max_entries = max(1, int(max_entries))
        self.max_bytes = max_bytes
        self._size_of = size_of or (lambda value: 0)
        self._entries: OrderedDict[str, tuple[Value, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Value | None:
        """The entry (now the most recently used), or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: str, value: Value) -> list[str]:
        """Store ``value`` under ``key``; returns the keys evicted to make room."""
        size = int(self._size_of(value))
        evicted = []
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries
                or (self.max_bytes is not None and self._bytes > self.max_bytes)
            ):
                gone, (_, gone_size) = self._entries.popitem(last=False)
                self._bytes -= gone_size
                evicted.append(gone)
        return evicted

    def pop(self, key: str) -> Value | None:
        with self._lock:
            found = self._entries.pop(key, None)
            if found is None:
                return None
            self._bytes -= found[1]
            return found[0]

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def values(self) -> list[Value]:
        with self._lock:
            return [value for value, _ in self._entries.values()]

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes


def nbytes_of(value) -> int:
    """Memory held by the arrays and tensors in ``value`` (nested lists, tuples, dicts
    and dataclass-like objects), without importing torch: numpy arrays by ``nbytes``,
    tensors by ``element_size() * nelement()``."""
    seen: set[int] = set()

    def walk(item) -> int:
        if id(item) in seen:
            return 0
        seen.add(id(item))
        if hasattr(item, "element_size") and hasattr(item, "nelement"):
            return int(item.element_size()) * int(item.nelement())
        if hasattr(item, "nbytes") and hasattr(item, "dtype"):
            return int(item.nbytes)
        if isinstance(item, dict):
            return sum(walk(v) for v in item.values())
        if isinstance(item, list | tuple):
            return sum(walk(v) for v in item)
        if hasattr(item, "__dict__"):
            return sum(walk(v) for v in vars(item).values())
        return 0

    return walk(value)
