"""The per-customer deadline index behind the inactivity timer.

A min-heap of (deadline, customer) with lazy deletion: setting a new deadline
pushes an entry and records it as current; stale entries are skipped when they
surface. A tick with nothing due costs one peek, so its cost grows with the
customers due, not with all customers.
"""
from __future__ import annotations

import heapq


class DeadlineIndex:
    def __init__(self) -> None:
        self._current: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._current)

    def set(self, key: bytes, deadline: float | None) -> None:
        if deadline is None:
            self._current.pop(key, None)
            return
        if self._current.get(key) == deadline:
            return
        self._current[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 4 * len(self._current) + 1024:
            self._compact()

    def pop_due(self, now: float, limit: int) -> list[tuple[bytes, float]]:
        """Remove and return up to `limit` current entries with deadline <= now."""
        due: list[tuple[bytes, float]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(due) < limit:
            deadline, key = heapq.heappop(heap)
            if self._current.get(key) == deadline:
                del self._current[key]
                due.append((key, deadline))
        return due

    def earliest(self) -> float | None:
        """The earliest current deadline (None when there is none); drops stale entries on top."""
        heap = self._heap
        while heap and self._current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def clear(self) -> None:
        self._current.clear()
        self._heap.clear()

    def _compact(self) -> None:
        self._heap = [(d, k) for k, d in self._current.items()]
        heapq.heapify(self._heap)
