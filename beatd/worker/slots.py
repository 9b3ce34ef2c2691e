"""How many runs the worker runs at once."""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """At most `size` runs at once; close() turns away whoever still waits (at stop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._closed = False

    @property
    def busy(self) -> int:
        return self.size - self.free

    async def acquire(self) -> bool:
        if self._closed:
            return False
        if self.free and not self._waiters:
            self.free -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes straight to the next in line
                return
        self.free += 1

    def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)
