"""Each enabled job's next due time, in a heap: a pass touches only the due jobs, never all."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime


class Timetable:
    def __init__(self) -> None:
        self._due: dict[str, datetime] = {}  # each scheduled job's next due time
        self._heap: list[tuple[datetime, str]] = []  # may hold stale entries; _due decides
        self._count: dict[datetime, int] = {}  # how many jobs are due at each time

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, name: str) -> bool:
        return name in self._due

    def clear(self) -> None:
        self._due, self._heap, self._count = {}, [], {}

    def schedule(self, name: str, at: datetime) -> None:
        self.discard(name)
        self._due[name] = at
        self._count[at] = self._count.get(at, 0) + 1
        heapq.heappush(self._heap, (at, name))
        if len(self._heap) > 2 * len(self._due) + 64:
            # Jobs rescheduled (reloads, retries) leave their old entries behind: rebuild
            # the heap from the live ones before the stale ones outnumber them.
            self._heap = [(when, job) for job, when in self._due.items()]
            heapq.heapify(self._heap)

    def schedule_all(self, due: Iterable[tuple[datetime, str]]) -> None:
        """schedule() each (at, name); many at once (a start: 100k) in one heapify, not a
        push each."""
        due = list(due)
        if len(due) < len(self._due) // 4 + 64:
            for at, name in due:
                self.schedule(name, at)
            return
        count, scheduled = self._count, self._due
        for at, name in due:
            before = scheduled.get(name)
            if before is not None:
                self._uncount(before)
            scheduled[name] = at
            count[at] = count.get(at, 0) + 1
        self._heap = [(when, job) for job, when in self._due.items()]
        heapq.heapify(self._heap)

    def discard(self, name: str) -> None:
        """Take a job out (removed, disabled, paused); its heap entry goes when it surfaces."""
        at = self._due.pop(name, None)
        if at is not None:
            self._uncount(at)

    def _uncount(self, at: datetime) -> None:
        left = self._count[at] - 1
        if left:
            self._count[at] = left
        else:
            del self._count[at]

    def due_at(self, name: str) -> datetime | None:
        return self._due.get(name)

    def count_at(self, at: datetime) -> int:
        """How many jobs are due at exactly this time (the size of a burst)."""
        return self._count.get(at, 0)

    def counts(self) -> Iterable[tuple[datetime, int]]:
        """Each due time with how many jobs are due then."""
        return self._count.items()

    def peek(self) -> tuple[datetime, str] | None:
        """The earliest live entry (stale ones, of removed or rescheduled jobs, go)."""
        heap, due = self._heap, self._due
        while heap and due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def pop_due(self, now: datetime) -> list[str]:
        """Take out every job due at or before now, earliest first."""
        names = []
        while (top := self.peek()) is not None and top[0] <= now:
            heapq.heappop(self._heap)
            del self._due[top[1]]
            self._uncount(top[0])
            names.append(top[1])
        return names
