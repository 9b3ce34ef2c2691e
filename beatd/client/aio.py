"""AsyncClient: publish runs from an asyncio application over one lazily opened, self-healing
connection (a runtime Link) on the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from beatd.client import runs
from beatd.core.config import Config, MessageFormat, read_config
from beatd.core.errors import BeatdError, BrokerError
from beatd.core.messages import Outgoing
from beatd.core.ports import Channel, Clock, Outcome
from beatd.runtime.clock import system_clock
from beatd.runtime.rabbitmq import Link
from beatd.scheduler.scheduler import ensure_queue

DEFAULT_CONFIG = "/etc/beatd/beatd.yaml"
DEFAULT_TIMEOUT_S = 10.0
# A run whose channel dropped before the confirm goes out again under the same id (the worker
# drops a copy that did arrive); this many times at most, all within the timeout.
MAX_SENDS = 3
CLOSE_WAIT_S = 5.0


def load_config(
    config: str | Path | Config | None,
    env: Mapping[str, str] | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Config:
    """A Config as given, or read from a path (default: $BEATD_CONFIG, else /etc/beatd), for
    a client whose calls wait at most timeout_s."""
    if not timeout_s > 0:
        raise BeatdError(f"timeout_s must be positive, got {timeout_s!r}")
    if isinstance(config, Config):
        return config
    env = os.environ if env is None else env
    path = config if config is not None else env.get("BEATD_CONFIG", DEFAULT_CONFIG)
    return read_config(path, env)


class AsyncClient:
    """Publish runs for `beatd worker` (or a job's Celery workers) from asyncio code.

    The connection opens on first use, on that call's event loop, and reconnects by itself;
    every call waits at most timeout_s for the broker's confirm. Use one AsyncClient per
    event loop (beatd.client.Client is the thread-safe one for synchronous code).
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False
        # Exchanges and queues already made sure of, on this channel (a new one starts over:
        # the broker may have been reset in between).
        self._channel: Channel | None = None
        self._ready: set[str] = set()

    async def trigger(self, job: str) -> str:
        """Publish one run of a job in the file now, as `beatd trigger` does; return its id."""
        found = runs.job_named(self.config, job)
        return await self.send(runs.message(self.config, found, self._clock()))

    async def publish(
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
        return await self.send(runs.message(self.config, one_off, now))

    async def send(self, message: Outgoing) -> str:
        """Publish a built message and wait for the broker's confirm; return the run id.

        BrokerError if no connection comes up, or the broker does not confirm, within
        timeout_s, or if it returns the message as unroutable or refuses it.
        """
        link = self._started()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        run_id = message.run.id
        for _ in range(MAX_SENDS):
            try:
                channel = await link.channel(max(0.0, deadline - loop.time()))
            except BrokerError:
                urls = ", ".join(self.config.broker.redacted_urls())
                raise BrokerError(
                    f"no connection to {urls} within {self.timeout_s:g}s; run {run_id} was "
                    "not published"
                ) from None
            try:
                async with asyncio.timeout_at(deadline):
                    await self._prepare(link, channel, message)
                    [outcome] = await channel.publish([message])
            except TimeoutError:
                raise BrokerError(
                    f"run {run_id}: the broker did not confirm it within {self.timeout_s:g}s"
                ) from None
            except BrokerError as exc:  # a declaration refused (406: exists with other type)
                raise BrokerError(f"run {run_id}: {exc}") from exc
            if outcome is Outcome.CONFIRMED:
                return run_id
            if outcome is Outcome.UNROUTABLE:
                raise BrokerError(
                    f"run {run_id} was unroutable: no queue is bound to exchange "
                    f"{message.exchange!r} for key {message.routing_key!r}"
                )
            if outcome is Outcome.NACKED:
                raise BrokerError(f"run {run_id}: the broker refused it (nack); publish again")
        raise BrokerError(
            f"run {run_id}: the connection dropped before the broker confirmed it, "
            f"{MAX_SENDS} times"
        )

    async def _prepare(self, link: Link, channel: Channel, message: Outgoing) -> None:
        """Declare what `beatd trigger` declares before publishing, once per channel."""
        if channel is not self._channel:
            self._channel, self._ready = channel, set()
        if message.queue:
            needed = "queue:" + message.queue
        elif message.run.job.format is MessageFormat.BEATD and message.exchange:
            needed = "exchange:" + message.exchange
        else:
            return  # the default exchange: nothing to declare
        if needed in self._ready:
            return
        if message.queue:
            await ensure_queue(link, channel, message.queue)
        else:
            await channel.declare_exchange(message.exchange, self.config.broker.exchange_type)
        self._ready.add(needed)

    def _started(self) -> Link:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise BeatdError("this beatd client is closed")
        if self._loop is None or self._link is None:
            self._loop = loop
            self._link = Link(self.config.broker, name=self.name)
            self._supervisor = loop.create_task(self._link.run(), name="beatd-client-link")
        elif self._loop is not loop:
            raise BeatdError(
                "this AsyncClient was first used on another event loop; make one per loop, "
                "or use beatd.client.Client from synchronous code"
            )
        return self._link

    @property
    def connected(self) -> bool:
        """Whether a channel is open right now (never waits)."""
        return self._link is not None and self._link.channel_now() is not None

    async def close(self) -> None:
        """Close the connection; the client cannot be used afterwards."""
        self._closed = True
        link, supervisor = self._link, self._supervisor
        self._link = self._supervisor = None
        if link is not None:
            await link.close()
        if supervisor is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(supervisor, CLOSE_WAIT_S)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
