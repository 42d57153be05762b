"""A dictionary that keeps only its most recently used entries (per-process caches of per-case data)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["RecentCache"]


class RecentCache(OrderedDict):
    """At most ``size`` entries, the least recently used dropped first, so a loader worker's memory (or open file
    descriptors) stays flat in the number of cases it visits.

    ``cache.get_or_make(key, make)`` returns the entry, calling ``make()`` only for a key not kept.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"RecentCache size must be at least 1, got {size}")
        self.size = int(size)

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        while len(self) > self.size:
            self.popitem(last=False)
        return value
