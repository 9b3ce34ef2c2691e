"""Group commit of the run-id store: what the runs write during one pass of the event loop is
committed together at the end of that pass, and each writer goes on only once its write is
durable (a run's start before its call, its end before its ack)."""

from __future__ import annotations

import asyncio

from beatd.core.errors import BeatdError
from beatd.core.ports import RunStore


class GroupCommit:
    def __init__(self, store: RunStore, *, group: bool = True) -> None:
        """group=False commits at once: with one run at a time nobody can share a commit, and
        waiting for the next pass of the loop would only add two passes to every run."""
        self.store = store
        self.group = group
        # One future per writer, not one shared: cancelling a waiting run (a forced stop)
        # must not cancel the commit the others wait for.
        self._waiting: list[asyncio.Future[None]] = []

    def durable(self) -> asyncio.Future[None]:
        """A future done once everything written to the store so far is committed; its
        exception is the store's StateError if it could not be."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        if not self.group:
            self._commit()  # done before it is awaited: the writer goes on in the same pass
        elif len(self._waiting) == 1:
            # call_soon runs after every callback already ready in this pass: the other runs
            # woken with this one write first, and share the commit.
            loop.call_soon(self._commit)
        return future

    def _commit(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            self.store.commit()
        except BeatdError as exc:
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for future in waiting:
            if not future.done():
                future.set_result(None)
