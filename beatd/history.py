"""The run history read back from its stream queue on RabbitMQ: `beatd history`, and the last
outcome per job that `beatd list` and `beatd status` show.

A stream never says "that was the last message", so the reader attaches at its end ("next"),
then appends a marker (an empty message of type beatd.marker, ignored by every reader) and
reads up to it: the marker's offset is where the stream ended when the command started. Then it
reads the newest `limit` messages before that from their offset, or from --since if that starts
later, so the work is bounded by the limit however much the stream holds (each message holds at
least one event); events older than --since are dropped by their own times. `list` and
`status` write no marker: they take the offset the stream's last chunk begins at instead."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beatd.core import history
from beatd.core.config import Config, HistoryConfig
from beatd.core.errors import BrokerError
from beatd.core.messages import Properties
from beatd.core.ports import Outcome
from beatd.runtime.channel import STREAM_OFFSET, Channel
from beatd.runtime.rabbitmq import Link, one_shot

PREFETCH = 2000  # streams require a prefetch; this many in flight keeps the socket busy
ACK_EVERY = 500  # one ack (multiple) per this many: an ack per message was a third of the time
READ_TIMEOUT_S = 60.0
OUTCOME_WINDOW = 5_000  # messages read for the last outcomes: 0.3-0.45 s of CPU
OUTCOME_TIMEOUT_S = 5.0  # `beatd list` and `status` answer without them rather than hang
FIRST_WAIT_S = 1.0  # for the last chunk of a stream read without a marker: none is empty


@dataclass(frozen=True, slots=True, repr=False)
class Read:
    events: list[dict[str, Any]]  # oldest first
    messages: int  # messages decoded, the marker included

    def __repr__(self) -> str:
        # Short: Python 3.11's asyncio.run formats the main task, result included, into an
        # exception message it then drops (signal.getsignal on its SIGINT handler); the
        # generated repr of 10,000 events cost 0.2-0.5 s at every `beatd history`.
        return f"Read({len(self.events)} events, {self.messages} messages)"


async def read_events(
    config: Config,
    since: datetime | None,
    *,
    limit: int,
    job: str | None = None,
    exact: bool = True,
    timeout_s: float = READ_TIMEOUT_S,
) -> Read:
    """The newest `limit` events published since `since` (None: any time), oldest first.
    With job, the worker's events of other jobs are skipped undecoded (fold still filters the
    scheduler's batches, which hold every job).

    exact: up to a marker the reader appends (it needs the right to publish to the stream).
    Otherwise (`list`, `status`, which may run every few seconds: a marker each would crowd
    the events out of the window) nothing is written, and the read ends with the stream's last
    chunk, which the broker sends at attach."""
    stream = (config.history or HistoryConfig()).stream
    link = await one_shot(config.broker, name="history", timeout_s=min(15.0, timeout_s))
    reader = _Reader(link, stream, since, limit, job, exact)
    try:
        return await asyncio.wait_for(reader.read(), timeout_s)
    except TimeoutError:
        raise BrokerError(
            f"reading {stream!r} took over {timeout_s:g}s ({reader.messages} messages read)"
        ) from None
    finally:
        await link.close()


@dataclass(frozen=True, slots=True)
class Outcomes:
    by_job: dict[str, str] | None  # job -> outcome of its newest run read; None: unknown
    note: str  # one line: where they came from, or why there are none


def last_outcomes(
    config: Config, *, window: int = OUTCOME_WINDOW, timeout_s: float = OUTCOME_TIMEOUT_S
) -> Outcomes | None:
    """Each job's last outcome from the newest `window` messages of the run history; None
    without a `history:` section. An absent stream or an unreachable broker is no error here:
    the note says why the outcomes are unknown."""
    if config.history is None:
        return None
    stream = config.history.stream
    try:
        read = asyncio.run(
            read_events(config, None, limit=window, exact=False, timeout_s=timeout_s)
        )
    except BrokerError as exc:
        return Outcomes(None, f"history: last outcomes unknown: {exc}")
    outcomes = history.last_outcomes(history.fold(read.events))
    events = len(read.events)
    return Outcomes(
        outcomes, f"history: last outcomes from the newest {events:,} events on {stream!r}"
    )


class _Reader:
    """One read: the tail (up to the marker, or the last chunk), then the window before it."""

    def __init__(
        self,
        link: Link,
        stream: str,
        since: datetime | None,
        limit: int,
        job: str | None,
        exact: bool,
    ) -> None:
        self.exact = exact
        self.link = link
        self.stream = stream
        self.since = since
        self.limit = limit
        self.job = job
        self.since_text = None if since is None else history.since_text(since)
        self.messages = 0

    async def read(self) -> Read:
        link, stream = self.link, self.stream
        if not await link.queue_exists(stream):
            raise BrokerError(
                f"no run history: the stream {stream!r} does not exist on the broker "
                "(add `history: {}` to the schedule file and restart `beatd run`)"
            )
        if self.exact:
            tail = _Span(self, until_marker=f"marker-{uuid.uuid4()}")
            await self._consume(tail, "next")  # attached before the marker: it reads up to it
            await self._mark(tail.marker or "")
            first, end = await tail.finished()
        else:
            tail = _Span(self)
            await self._consume(tail, "last")  # the last chunk, and whatever comes after it
            try:
                first = end = await asyncio.wait_for(asyncio.shield(tail.started), FIRST_WAIT_S)
            except TimeoutError:  # a chunk comes at once: nothing in the stream yet
                tail.stop()
                await tail.finished()
                return Read([], 0)
        # The newest `limit` messages end at `end`; the tail holds those from `first` on.
        start = max(0, end - self.limit)
        if start < first and self.since is not None:
            start = max(start, await self._offset_at(self.since))
        events: deque[dict[str, Any]] = deque(maxlen=self.limit)
        if start < first:
            window = _Span(self, before=first)
            await self._consume(window, start)
            await window.finished()
            events.extend(window.events)
        if not self.exact:
            tail.stop()  # what came by now: the broker sent the last chunk at attach
            await tail.finished()
        events.extend(tail.events)
        return Read(list(events), self.messages)

    async def _mark(self, marker: str) -> None:
        confirmed = await self.link.channel(0)
        outcome = await confirmed.send(
            "", self.stream, b"", Properties(message_id=marker, type=history.MARKER_TYPE)
        )
        if outcome is not Outcome.CONFIRMED:
            raise BrokerError(f"could not mark the end of {self.stream!r} ({outcome.value})")

    async def _consume(self, span: _Span, offset: int | str) -> None:
        span.channel = await self.link.spare_channel()
        await span.channel.consume_lean(
            self.stream, span.on_message, prefetch=PREFETCH, arguments={STREAM_OFFSET: offset}
        )

    async def _offset_at(self, moment: datetime) -> int:
        """The offset of the first message published at or after moment (RabbitMQ finds the
        chunk it is in, so perhaps a few earlier ones: is_since drops those)."""
        channel = await self.link.spare_channel()
        found: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_message(_tag: int, properties: Any, _body: bytes) -> None:
            if not found.done():
                found.set_result(_offset(properties))

        try:
            await channel.consume_lean(
                self.stream, on_message, prefetch=1, arguments={STREAM_OFFSET: moment}
            )
            return await found  # the marker, at the latest
        finally:
            await channel.close()


class _Span:
    """One consumer's part of the read: up to the marker (the tail), or up to the offset the
    tail began at (the window before it). Events are decoded as they come, at most `limit`
    kept."""

    def __init__(
        self, reader: _Reader, *, until_marker: str | None = None, before: int | None = None
    ) -> None:
        self.reader = reader
        self.marker = until_marker
        self.before = before
        self.channel: Channel | None = None
        self.events: deque[dict[str, Any]] = deque(maxlen=reader.limit)
        self.first: int | None = None
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[int] = loop.create_future()  # the first offset read
        self.done: asyncio.Future[int] = loop.create_future()

    def on_message(self, tag: int, properties: Any, body: bytes) -> None:
        if self.done.done():
            return  # sent before the consumer stopped: closing the channel drops the rest
        try:
            offset = _offset(properties)
        except BrokerError as exc:
            self.done.set_exception(exc)
            return
        if self.before is not None and offset >= self.before:
            self.done.set_result(offset)
            return
        reader = self.reader
        reader.messages += 1
        if self.first is None:
            self.first = offset
            self.started.set_result(offset)
        if tag % ACK_EVERY == 0 and self.channel is not None:  # credit for the next ones
            self.channel.settle(tag, ack=True, multiple=True)
        kind = properties.type or ""
        if kind == history.MARKER_TYPE:
            if properties.message_id == self.marker:
                self.done.set_result(offset)
            return
        headers = properties.headers
        job = headers.get("beatd-job") if reader.job is not None else None
        if job is None or job == reader.job:  # another job's worker event: not even decoded
            events = history.decode(kind, body)
            since = reader.since_text
            self.events.extend(
                events if since is None else (e for e in events if history.is_since(e, since))
            )
        if self.before is not None and offset + 1 >= self.before:
            self.done.set_result(offset)

    def stop(self) -> None:
        """End an open-ended span (no marker, no offset to stop before) here."""
        if not self.done.done():
            self.done.set_result(-1 if self.first is None else self.first)

    async def finished(self) -> tuple[int, int]:
        """The first offset read and the last (the marker's, for the tail)."""
        try:
            last = await self.done
        finally:
            if self.channel is not None:
                await self.channel.close()
        return (last if self.first is None else self.first), last


def _offset(properties: Any) -> int:
    offset = (properties.headers or {}).get(STREAM_OFFSET)
    if not isinstance(offset, int):
        raise BrokerError("the broker sent no stream offsets (RabbitMQ 3.9 or later needed)")
    return offset
