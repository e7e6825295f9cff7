"""Bounded LRU set of envelope ids already handled (idempotent receive)."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["SeenIds"]


class SeenIds:
    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """Remember ``key``; ``False`` if it was already there (a duplicate)."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)
