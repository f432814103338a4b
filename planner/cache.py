"""Plan cache for templated goals: the same normalised request shape reuses a plan that
finished without hitting a cap. Plans are re-validated on use and dropped when one of
their tasks fails."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class PlanCache:
    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, plan = entry
        if expires < self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return plan

    def put(self, key: str, plan: dict[str, Any]) -> None:
        self._entries[key] = (self._clock() + self._ttl, plan)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
