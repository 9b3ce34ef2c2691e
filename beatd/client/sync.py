"""Client: the thread-safe, synchronous face of AsyncClient. One asyncio loop in a daemon
thread holds the connection; any thread submits to it and waits, bounded, for the confirm."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from beatd.client import runs
from beatd.client.aio import DEFAULT_TIMEOUT_S, AsyncClient, load_config
from beatd.core.config import Config
from beatd.core.errors import BeatdError, BrokerError
from beatd.core.ports import Clock
from beatd.runtime.clock import system_clock

T = TypeVar("T")
# Beyond the client's own timeout, how long a caller waits for the loop thread to answer at
# all (it always should: this only bounds the wait if something is badly wrong).
SLACK_S = 5.0


class Client:
    """Publish runs from synchronous code (Django, Flask, scripts); safe to share between
    threads and to use after a fork (the child opens its own connection).

    The connection opens on first use and reconnects by itself. Bad arguments raise BeatdError
    at once, in the caller's thread; broker trouble raises BrokerError within timeout_s.
    """

    def __init__(
        self,
        config: str | Path | Config | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        name: str = "client",
    ) -> None:
        self.config = load_config(config, env, timeout_s)
        self.timeout_s = timeout_s
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._loop: _LoopThread | None = None
        self._closed = False
        _live.add(self)

    def trigger(self, job: str) -> str:
        """Publish one run of a job in the file now, as `beatd trigger` does; return its id."""
        found = runs.job_named(self.config, job)
        message = runs.message(self.config, found, self._clock())
        return self._call(lambda aio: aio.send(message))

    def publish(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        routing_key: str | None = None,
        expires: runs.Expires = None,
        job: str | None = None,
    ) -> str:
        """Publish a beatd-format run of task (for `beatd worker`); return its id."""
        now = self._clock()
        one_off = runs.task_job(
            task, args, kwargs, routing_key=routing_key, expires=expires, job=job, now=now
        )
        message = runs.message(self.config, one_off, now)
        return self._call(lambda aio: aio.send(message))

    @property
    def connected(self) -> bool:
        loop = self._loop
        return loop is not None and loop.pid == os.getpid() and loop.aio.connected

    def _call(self, start: Callable[[AsyncClient], Coroutine[Any, Any, str]]) -> str:
        loop = self._running()
        return loop.call(start(loop.aio), self.timeout_s + SLACK_S)

    def _running(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise BeatdError("this beatd client is closed")
            loop = self._loop
            # After a fork the parent's loop thread does not exist here, and its socket is
            # the parent's: leave both alone and start afresh.
            if loop is None or loop.pid != os.getpid():
                loop = self._loop = _LoopThread(
                    AsyncClient(
                        self.config, timeout_s=self.timeout_s, clock=self._clock, name=self.name
                    )
                )
            return loop

    def close(self) -> None:
        """Close the connection and stop the loop thread (bounded); idempotent."""
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is not None and loop.pid == os.getpid():
            loop.stop(self.timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        # A lock another thread held at the fork would stay locked forever in the child.
        self._lock = threading.Lock()


class _LoopThread:
    """An event loop running in a daemon thread (a stuck publish must never keep the
    application from exiting), owning one AsyncClient."""

    def __init__(self, aio: AsyncClient) -> None:
        self.aio = aio
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="beatd-client", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T], wait_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerError(f"no answer from beatd's client thread within {wait_s:g}s") from None

    def stop(self, wait_s: float) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):  # closing: nothing left to report to
            self.call(self.aio.close(), wait_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(wait_s)
        if not self.thread.is_alive():
            self.loop.close()


_live: weakref.WeakSet[Client] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for client in list(_live):
        client._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
