"""Answering `beatd status`, `pause` and `resume` that come through the broker, so they work
from any host that reaches it and reach every instance of an HA group (core.control holds the
format and the bounds).

The requests come on a channel of their own on the scheduler's connection: the exclusive queue
lives as long as the connection (a new one is declared after each reconnect), and a control
channel the broker closes (a refused declare, a missing permission) costs only this feature,
never the publishing channel. Requests are taken off the channel into an inbox and handled by
a task of their own, one at a time, so a flood waits in a bounded queue on the broker (prefetch
here, TTL and max-length there) while the scheduler's steps go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from beatd.core import control
from beatd.core.errors import BrokerError
from beatd.core.messages import Properties
from beatd.core.ports import Broker, Channel, Clock, Delivery
from beatd.scheduler.scheduler import Scheduler

log = logging.getLogger("beatd.scheduler")

PREFETCH = 4  # requests on their way to this process at a time; the rest wait on the broker
RATE_PER_S, BURST = 10.0, 20  # requests handled; beyond that they wait on the broker
RECHECK_S = 30.0  # how often the control channel is checked when nothing wakes this up
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
COMPLAIN_EVERY_S = 10.0  # one log line per kind of refusal this often, with a count

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]


class Complaints:
    """Log one line per kind of refused request at most every COMPLAIN_EVERY_S, saying how many
    more there were: a flood of bad requests must not flood the journal."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self._last: dict[str, float] = {}
        self._since: Counter[str] = Counter()

    def __call__(self, kind: str, message: str) -> None:
        now = self.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < COMPLAIN_EVERY_S:
            self._since[kind] += 1
            return
        more = self._since.pop(kind, 0)
        self._last[kind] = now
        log.warning("%s%s", message, f" ({more} more like it before this)" if more else "")


class RemoteControl:
    """Keeps a control queue bound on the scheduler's current connection and answers what
    arrives there with `handle` (the daemon's, as for the local socket)."""

    def __init__(
        self,
        scheduler: Scheduler,
        handle: Handler,
        *,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = scheduler
        self.handle = handle
        self.clock = clock
        self.monotonic = monotonic
        self.limit = control.RateLimit(RATE_PER_S, BURST)
        self.replays = control.Replays()
        self.complain = Complaints(monotonic)
        self.counts: Counter[str] = Counter()  # answered, refused, held (for tests)
        self.queue: str | None = None  # the current control queue's name
        self._channel: Channel | None = None
        self._link: Broker | None = None
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep()), asyncio.create_task(self._serve())]

    def wake(self) -> None:
        """The broker link changed state: (re)declare the queue if the connection is new."""
        self._wake.set()

    async def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self) -> None:
        """Declare the control queue on each new connection; retry with backoff when the broker
        refuses (logged once per cause), check again every RECHECK_S."""
        delay = RETRY_FIRST_S
        failed = ""
        while not self._stop.is_set():
            wait = RECHECK_S
            try:
                await self._ensure()
                delay, failed = RETRY_FIRST_S, ""
            except BrokerError as exc:
                if str(exc) != failed:
                    failed = str(exc)
                    log.error(
                        "cannot answer beatd status through the broker: %s (retrying; the local "
                        "socket still answers)",
                        exc,
                    )
                wait, delay = delay, min(delay * 2, RETRY_MAX_S)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _ensure(self) -> None:
        link = self.scheduler.link
        if link.channel_now() is None:
            return  # the broker is away; the link wakes this up when it is back
        current = self._channel
        if current is not None and current.is_open and self._link is link:
            return
        config = self.scheduler.config
        exchange, key = config.broker.control_exchange, control.routing_key(config)
        channel = await link.open_channel()
        try:
            # Auto-delete: it goes with the last scheduler's queue, so nothing is left on the
            # broker when none runs (and a request then finds no exchange: nobody answers).
            await channel.declare_exchange(exchange, "topic", durable=False, auto_delete=True)
            queue = await channel.declare_private_queue(control.queue_arguments())
            await channel.bind_queue(queue, exchange, key)
            await channel.consume(queue, self._inbox.put_nowait, prefetch=PREFETCH)
        except BrokerError:
            await channel.close()
            raise
        if current is not None and current.is_open:
            await current.close()  # a new link after a reload: the old one is closing anyway
        self._channel, self._link, self.queue = channel, link, queue
        log.debug("answering beatd status on exchange %r, key %r (queue %s)", exchange, key, queue)

    async def _serve(self) -> None:
        """Handle requests one at a time, at most RATE_PER_S: over it, wait before the next,
        so the rest wait on the broker (prefetch), where the queue drops the oldest beyond
        MAX_WAITING. Dropping here instead would still cost a delivery and an ack each: at
        1,700 requests a second that took a fifth of a core and doubled the runs' lateness
        (bench/control_bench.py)."""
        while True:
            delivery = await self._inbox.get()
            wait_s = self.limit.reserve(self.monotonic())
            if wait_s > 0:
                self.counts["held"] += 1
                self.complain(
                    "rate",
                    f"control requests arrive faster than {RATE_PER_S:g}/s: taking them at that "
                    f"rate; the broker drops the oldest beyond {control.MAX_WAITING}",
                )
                await asyncio.sleep(wait_s)
            try:
                self._take(delivery)
            except Exception:  # a bug here must cost one request, never the scheduler
                log.exception("control request %r failed", delivery.properties.message_id[:100])
            delivery.ack()
            await asyncio.sleep(0)  # a due step goes before the next request

    def _take(self, delivery: Delivery) -> None:
        """Handle one request: well-formed, signed if it is a write, answered to a direct
        reply-to address only."""
        props = delivery.properties
        request_id = props.correlation_id or props.message_id
        reply_to = props.reply_to or ""
        if reply_to and not reply_to.startswith(control.REPLY_TO + "."):
            # Answers go only to the asker's direct reply-to address, never into a named queue
            # (a worker's, say) that a crafted request would pick.
            self._refuse("reply_to", f"reply_to {reply_to[:100]!r} is not a direct reply-to", "")
            return
        try:
            request = control.decode(delivery.body)
        except ValueError as exc:
            self._refuse("malformed", f"malformed ({exc})", reply_to, request_id, delivery)
            return
        signing = self.scheduler.config.signing
        if request.command in control.WRITES and signing is not None:
            check = control.verify(
                signing,
                props.headers,
                request_id,
                delivery.routing_key,
                delivery.body,
                self.clock(),
            )
            if not check.ok:
                self._refuse("signature", check.detail, reply_to, request_id, delivery)
                return
            if not self.replays.first_time(request_id, self.clock()):
                self._refuse("replay", "already taken (a replay)", reply_to, request_id, delivery)
                return
        answer = self.handle(request.as_dict())
        if request.command == "status":
            answer = control.trimmed(answer)
        self.counts["answered"] += 1
        self._reply(delivery, reply_to, request_id, {**answer, "via": "broker"})

    def _refuse(
        self,
        kind: str,
        why: str,
        reply_to: str,
        request_id: str = "",
        delivery: Delivery | None = None,
    ) -> None:
        self.counts["refused"] += 1
        self.complain(kind, f"control request {request_id[:64]!r} refused: {why}")
        if delivery is not None:
            who = {"host": socket.gethostname(), "pid": os.getpid()}
            self._reply(delivery, reply_to, request_id, {**who, "error": f"refused: {why}"})

    def _reply(
        self, delivery: Delivery, reply_to: str, request_id: str, answer: dict[str, Any]
    ) -> None:
        if not reply_to:
            return
        properties = Properties(
            message_id=f"{request_id[:200]}@answer",
            correlation_id=request_id,
            type="beatd.control.answer",
            delivery_mode=1,
        )
        body = json.dumps(answer).encode()
        delivery.channel.send_nowait("", reply_to, body, properties)
