"""RabbitMQ through pika's asyncio adapter. The only module that imports pika.

A Link is one logical connection that keeps itself up: it tries each broker URL in order,
backs off exponentially (capped, jittered) while the broker is away, reopens a channel the
broker closed (a missing exchange, a 406) with publisher confirms re-enabled, and runs the
owner's setup (declarations, consumers) on every new channel. pika's exceptions never leave
this module: they become BrokerError, with passwords redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

from beatd.core.config import BrokerConfig, TlsConfig
from beatd.core.errors import BrokerError
from beatd.core.messages import Outgoing, Properties
from beatd.core.values import redact

log = logging.getLogger("beatd.broker")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
REMIND_S = 600.0


class Outcome(Enum):
    """What became of one published message."""

    CONFIRMED = "confirmed"  # the broker took responsibility for it
    UNROUTABLE = "unroutable"  # confirmed, but returned: no queue is bound for its key
    NACKED = "nacked"  # the broker refused it (internal error); publish again
    LOST = "lost"  # the channel or connection went away before a confirm; publish again


@dataclass(frozen=True, slots=True)
class Delivery:
    """A consumed message. ack/reject are no-ops once its channel is gone: the broker then
    redelivers it, which is the at-least-once contract."""

    channel: Channel
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes

    def ack(self) -> bool:
        return self.channel.settle(self.delivery_tag, ack=True)

    def reject(self, *, requeue: bool = False) -> bool:
        return self.channel.settle(self.delivery_tag, ack=False, requeue=requeue)


class Channel:
    """One open AMQP channel in confirm mode, with awaitable operations."""

    def __init__(self, link: Link, pika_channel: Any) -> None:
        self.link = link
        self._ch = pika_channel
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Future[Any]] = set()
        self._unconfirmed: dict[int, tuple[_Batch, int, str]] = {}
        self._returned: set[str] = set()
        self._next_tag = 1
        self.closed = self._loop.create_future()
        pika_channel.add_on_close_callback(self._on_close)
        pika_channel.add_on_return_callback(self._on_return)

    @property
    def is_open(self) -> bool:
        return bool(self._ch.is_open) and not self.closed.done()

    async def _enable_confirms(self) -> None:
        await self._rpc(self._ch.confirm_delivery, ack_nack_callback=self._on_confirm)

    def _rpc(self, method: Callable[..., Any], **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self.is_open:
            future.set_exception(BrokerError("the channel is closed"))
            return future
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

        def done(frame: Any) -> None:
            if not future.done():
                future.set_result(frame)

        try:
            method(callback=done, **kwargs)
        except pika.exceptions.AMQPError as exc:
            future.set_exception(BrokerError(_describe(exc)))
        return future

    async def declare_exchange(
        self, name: str, kind: str = "topic", *, passive: bool = False, durable: bool = True
    ) -> None:
        await self._rpc(
            self._ch.exchange_declare,
            exchange=name,
            exchange_type=kind,
            passive=passive,
            durable=durable,
        )

    async def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = True,
        arguments: Mapping[str, Any] | None = None,
    ) -> int:
        """Declare a queue; return how many messages it holds."""
        frame = await self._rpc(
            self._ch.queue_declare,
            queue=name,
            passive=passive,
            durable=durable,
            arguments=dict(arguments or {}),
        )
        return int(frame.method.message_count)

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._rpc(
            self._ch.queue_bind, queue=queue, exchange=exchange, routing_key=routing_key
        )

    async def publish(self, messages: Iterable[Outgoing]) -> list[Outcome]:
        """Publish all messages back to back, then wait for the broker's confirms.

        Confirms are pipelined: a burst of 10,000 costs one round trip, not 10,000. messages
        may be a generator, so each can be stamped with its real send time.
        """
        batch = _Batch(self._loop)
        for message in messages:
            index = batch.add()
            if not self.is_open:
                batch.settle(index, Outcome.LOST)
                continue
            tag, self._next_tag = self._next_tag, self._next_tag + 1
            self._unconfirmed[tag] = (batch, index, message.properties.message_id)
            try:
                self._ch.basic_publish(
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    body=message.body,
                    properties=_pika_properties(message.properties),
                    mandatory=True,
                )
            except pika.exceptions.AMQPError:
                del self._unconfirmed[tag]
                batch.settle(index, Outcome.LOST)
            if index % 500 == 499:
                await asyncio.sleep(0)  # let heartbeats and early confirms through
        return await batch.sealed()

    async def send(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> Outcome:
        """Publish one message as given, mandatory, and wait for the broker's confirm (the
        worker's dead letters and retries)."""
        [outcome] = await self._send_one(exchange, routing_key, body, properties, True).sealed()
        return outcome

    def send_nowait(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        """Publish one message, not mandatory, without waiting for a confirm (the worker's
        events: telemetry must never hold anything up)."""
        self._send_one(exchange, routing_key, body, properties, False)

    def _send_one(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool,
    ) -> _Batch:
        batch = _Batch(self._loop)
        index = batch.add()
        if not self.is_open:
            batch.settle(index, Outcome.LOST)
            return batch
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        # "" never matches a return: only a mandatory message can come back unroutable
        self._unconfirmed[tag] = (batch, index, properties.message_id if mandatory else "")
        try:
            self._ch.basic_publish(
                exchange=exchange,
                routing_key=routing_key,
                body=body,
                properties=_pika_properties(properties),
                mandatory=mandatory,
            )
        except pika.exceptions.AMQPError:
            del self._unconfirmed[tag]
            batch.settle(index, Outcome.LOST)
        return batch

    def _on_return(self, _ch: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # basic.return arrives before the basic.ack for the same message
        if properties.message_id:
            self._returned.add(properties.message_id)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:  # tags are increasing and dicts keep insertion order
            tags = []
            for tag in self._unconfirmed:
                if tag > method.delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [method.delivery_tag]
        for tag in tags:
            entry = self._unconfirmed.pop(tag, None)
            if entry is None:
                continue
            batch, index, message_id = entry
            if not acked:
                outcome = Outcome.NACKED
            elif message_id in self._returned:
                self._returned.discard(message_id)
                outcome = Outcome.UNROUTABLE
            else:
                outcome = Outcome.CONFIRMED
            batch.settle(index, outcome)

    def _on_close(self, _ch: Any, reason: BaseException) -> None:
        for batch, index, _ in self._unconfirmed.values():
            batch.settle(index, Outcome.LOST)
        self._unconfirmed.clear()
        for pending in list(self._pending):
            if not pending.done():
                pending.set_exception(BrokerError(_describe(reason)))
        if not self.closed.done():
            self.closed.set_result(reason)

    # Consuming

    async def consume(
        self, queue: str, on_message: Callable[[Delivery], None], *, prefetch: int
    ) -> str:
        """Start consuming queue with at most `prefetch` unacked messages; return the tag."""
        await self._rpc(self._ch.basic_qos, prefetch_count=prefetch)

        def deliver(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            on_message(
                Delivery(
                    channel=self,
                    delivery_tag=method.delivery_tag,
                    redelivered=bool(method.redelivered),
                    exchange=method.exchange,
                    routing_key=method.routing_key,
                    properties=_our_properties(properties),
                    body=body,
                )
            )

        future: asyncio.Future[Any] = self._rpc(
            self._ch.basic_consume, queue=queue, on_message_callback=deliver
        )
        frame = await future
        return str(frame.method.consumer_tag)

    async def cancel(self, consumer_tag: str) -> None:
        if self.is_open:
            await self._rpc(self._ch.basic_cancel, consumer_tag=consumer_tag)

    def settle(self, delivery_tag: int, *, ack: bool, requeue: bool = False) -> bool:
        if not self.is_open:
            return False
        try:
            if ack:
                self._ch.basic_ack(delivery_tag=delivery_tag)
            else:
                self._ch.basic_reject(delivery_tag=delivery_tag, requeue=requeue)
        except pika.exceptions.AMQPError:
            return False
        return True

    async def close(self) -> None:
        if self.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._ch.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 5)


class _Batch:
    """The outcomes of one publish call, settled by confirms; one future for the whole batch
    (a future per message would cost more than publishing it)."""

    __slots__ = ("_done", "_pending", "_sealed", "outcomes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.outcomes: list[Outcome | None] = []
        self._pending = 0
        self._sealed = False
        self._done: asyncio.Future[None] = loop.create_future()

    def add(self) -> int:
        self.outcomes.append(None)
        self._pending += 1
        return len(self.outcomes) - 1

    def settle(self, index: int, outcome: Outcome) -> None:
        if self.outcomes[index] is None:
            self.outcomes[index] = outcome
            self._pending -= 1
            if self._sealed and not self._pending and not self._done.done():
                self._done.set_result(None)

    async def sealed(self) -> list[Outcome]:
        """Wait until every message has an outcome."""
        self._sealed = True
        if self._pending:
            await self._done
        return [outcome or Outcome.LOST for outcome in self.outcomes]


Setup = Callable[[Channel], Awaitable[None]]


class Link:
    """A connection that keeps itself up, and its one confirm-mode channel.

    `run()` is the supervisor task; `channel()` waits for an open channel. `setup` runs on
    every new channel (declarations, consumers); if it raises, the link backs off and retries.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        name: str,
        setup: Setup | None = None,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.setup = setup
        self.on_state = on_state or (lambda _state: None)
        self.state = "connecting"
        self.url = ""  # redacted URL of the current connection
        self._channel: Channel | None = None
        self._up = asyncio.Event()
        self._stop = asyncio.Event()
        self._connection: Any = None

    def channel_now(self) -> Channel | None:
        """The open channel, or None while the broker is away (never waits)."""
        channel = self._channel
        return channel if channel is not None and channel.is_open else None

    async def channel(self, timeout: float | None = None) -> Channel:
        """Wait until a channel is open; raise BrokerError after timeout seconds."""
        while True:
            channel = self.channel_now()
            if channel is not None:
                return channel
            try:
                await asyncio.wait_for(self._up.wait(), timeout)
            except TimeoutError:
                raise BrokerError(
                    f"no connection to {', '.join(self.config.redacted_urls())} within {timeout:g}s"
                ) from None

    def _set_state(self, state: str) -> None:
        self.state = state
        self.on_state(state)

    async def run(self) -> None:
        """Keep connected until cancelled or close() is called."""
        delay = BACKOFF_FIRST_S
        down_since: float | None = None
        reminded = 0.0
        while not self._stop.is_set():
            try:
                connection = await self._connect()
            except BrokerError as exc:
                # Once per outage, then a reminder every few minutes: a log line per retry
                # (or per due slot) would bury everything else in the journal.
                now = time.monotonic()
                if down_since is None:
                    down_since = reminded = now
                    log.warning("broker unreachable, retrying with backoff: %s", exc)
                elif now - reminded >= REMIND_S:
                    reminded = now
                    log.warning(
                        "broker still unreachable after %.0f min: %s", (now - down_since) / 60, exc
                    )
                else:
                    log.debug("broker still unreachable: %s", exc)
                self._set_state("down")
                await self._pause(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            if down_since is not None:
                log.info(
                    "connected to %s after %.1fs without the broker",
                    self.url,
                    time.monotonic() - down_since,
                )
            else:
                log.info("connected to %s", self.url)
            down_since, delay = None, BACKOFF_FIRST_S
            reason = await self._serve(connection)
            self._up.clear()
            self._channel = None
            if self._stop.is_set():
                break
            down_since = time.monotonic()
            log.warning("lost the broker connection (%s); reconnecting", reason)
            self._set_state("down")
            await self._pause(BACKOFF_FIRST_S)
        self._set_state("closed")

    async def _pause(self, delay_s: float) -> None:
        """Sleep about delay_s (jittered: a fleet must not reconnect in step) or until close()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay_s * random.uniform(0.8, 1.2))

    async def _connect(self) -> Any:
        errors = []
        for url in self.config.urls:
            try:
                connection = await _open_connection(url, self.config, self.name)
            except BrokerError as exc:
                errors.append(str(exc))
                continue
            self.url = redact(url)
            return connection
        raise BrokerError("; ".join(errors))

    async def _serve(self, connection: Any) -> str:
        """Hold channels open on this connection until it closes; return why it closed."""
        self._connection = connection
        closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        connection.add_on_close_callback(lambda _c, reason: _resolve(closed, reason))
        channel_delay = BACKOFF_FIRST_S
        while not closed.done():
            try:
                channel = await _open_channel(connection, self, closed)
                if self.setup is not None:
                    await self.setup(channel)
            except BrokerError as exc:
                if closed.done() or self._stop.is_set():
                    break
                log.error("broker refused setup: %s; retrying in %.0fs", exc, channel_delay)
                self._set_state("error")
                await asyncio.wait([closed], timeout=channel_delay)
                channel_delay = min(channel_delay * 2, BACKOFF_MAX_S)
                continue
            self._channel = channel
            self._up.set()
            self._set_state("up")
            opened_at = time.monotonic()
            await asyncio.wait([closed, channel.closed], return_when=asyncio.FIRST_COMPLETED)
            self._up.clear()
            if time.monotonic() - opened_at > BACKOFF_MAX_S:
                channel_delay = BACKOFF_FIRST_S  # it was healthy for a while: not a loop
            if self._stop.is_set():
                break
            if not closed.done():
                reason = channel.closed.result()
                log.warning("broker closed the channel (%s); reopening", _describe(reason))
                await asyncio.wait([closed], timeout=channel_delay)
                channel_delay = min(channel_delay * 2, BACKOFF_MAX_S)
        self._connection = None
        return _describe(closed.result()) if closed.done() else "closed"

    async def queue_exists(self, name: str) -> bool:
        """Whether a queue exists, asked on a throwaway channel: a passive declare of a
        missing queue makes the broker close the channel it came on."""
        connection = self._connection
        if connection is None or connection.is_closed:
            raise BrokerError("not connected")
        closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        connection.add_on_close_callback(lambda _c, why: _resolve(closed, why))
        probe = await _open_channel(connection, self, closed, confirms=False)
        try:
            await probe.declare_queue(name, passive=True)
        except BrokerError as exc:
            if str(exc).startswith("404"):
                return False
            raise
        finally:
            await probe.close()
        return True

    async def close(self) -> None:
        """Close the connection gracefully; run() then returns."""
        self._stop.set()
        self._up.clear()
        channel, connection, self._channel = self._channel, self._connection, None
        if channel is not None:
            await channel.close()
        if connection is not None and not connection.is_closed:
            closed = asyncio.get_running_loop().create_future()
            connection.add_on_close_callback(lambda *_: _resolve(closed, None))
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(closed, 5)


async def _open_connection(url: str, config: BrokerConfig, name: str) -> Any:
    loop = asyncio.get_running_loop()
    try:
        parameters = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise BrokerError(f"{redact(url)}: bad URL: {exc}") from None
    if config.password is not None:
        parameters.credentials = pika.PlainCredentials(
            parameters.credentials.username, config.password
        )
    if urlsplit(url).scheme == "amqps":
        parameters.ssl_options = _ssl_options(url, config.tls)
    parameters.heartbeat = max(1, round(config.heartbeat.total_seconds()))
    parameters.connection_attempts = 1
    parameters.socket_timeout = 10
    parameters.stack_timeout = 15
    # A broker under a memory alarm blocks publishers; give up on the connection after a
    # minute so the link reconnects (perhaps to another node) instead of hanging silently.
    parameters.blocked_connection_timeout = 60
    parameters.client_properties = {
        "connection_name": f"beatd {name} (pid {os.getpid()}) on {socket.gethostname()}",
        "product": "beatd",
    }
    opened: asyncio.Future[Any] = loop.create_future()

    def on_open(connection: Any) -> None:
        if not opened.done():
            opened.set_result(connection)

    def on_error(_connection: Any, error: BaseException) -> None:
        if not opened.done():
            reason = _tls_failure(error) or _describe(error)
            opened.set_exception(BrokerError(f"{redact(url)}: {reason}"))

    connection = AsyncioConnection(
        parameters,
        on_open_callback=on_open,
        on_open_error_callback=on_error,
        custom_ioloop=loop,
    )
    try:
        return await opened
    except BaseException:
        with contextlib.suppress(Exception):
            connection.close()
        raise


_warned_unverified: set[str] = set()


def _ssl_options(url: str, tls: TlsConfig) -> Any:
    """pika's TLS settings for an amqps:// URL: the server's certificate is checked against
    ca_file (else the system's CAs) and must name the URL's host, unless verify is off."""
    host = urlsplit(url).hostname
    return pika.SSLOptions(_ssl_context(url, tls), host)


def _ssl_context(url: str, tls: TlsConfig) -> ssl.SSLContext:
    shown = redact(url)
    what = f"ca_file {tls.ca_file}"
    try:
        context = ssl.create_default_context(
            cafile=None if tls.ca_file is None else str(tls.ca_file)
        )
        if tls.cert_file is not None:
            what = f"cert_file {tls.cert_file}" + (f"/key_file {tls.key_file}" * bool(tls.key_file))
            context.load_cert_chain(
                str(tls.cert_file), None if tls.key_file is None else str(tls.key_file)
            )
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BrokerError(f"{shown}: TLS: cannot load {what}: {reason}") from None
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if url not in _warned_unverified:  # once per URL, not once per reconnect
            _warned_unverified.add(url)
            log.warning(
                "TLS VERIFICATION IS OFF for %s (broker.tls.verify: false): the connection is "
                "encrypted but anyone on the network path can impersonate the broker and read "
                "the password and every run",
                shown,
            )
    return context


def _tls_failure(error: BaseException) -> str | None:
    """The TLS reason inside a pika connection error ("certificate verify failed: ..."), or
    None if it was not a TLS failure. pika wraps the ssl error in layers (a workflow failure
    holds a list of attempts, each the error of one), or keeps only its text (a lost stream:
    the broker's alert after the handshake, e.g. a client certificate it refused)."""
    seen: list[BaseException] = []
    pending: list[object] = [error]
    while pending and len(seen) < 20:
        item = pending.pop(0)
        if isinstance(item, str) and (match := _SSL_TEXT.search(item)):
            return f"TLS: refused by the broker: {match.group(1).strip()}"
        if not isinstance(item, BaseException) or item in seen:
            continue
        seen.append(item)
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {item.verify_message}"
        if isinstance(item, ssl.SSLError):
            return f"TLS: {item.reason or item}".replace("_", " ").lower()
        pending += [*item.args, *getattr(item, "exceptions", ()), getattr(item, "exception", None)]
        pending.append(item.__cause__)
    return None


_SSL_TEXT = re.compile(r"\[SSL: \w+\] ([^(]+)")


async def _open_channel(
    connection: Any,
    link: Link,
    connection_closed: asyncio.Future[BaseException],
    *,
    confirms: bool = True,
) -> Channel:
    opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    try:
        connection.channel(on_open_callback=lambda ch: _resolve(opened, ch))
    except pika.exceptions.AMQPError as exc:
        raise BrokerError(_describe(exc)) from None
    await asyncio.wait([opened, connection_closed], return_when=asyncio.FIRST_COMPLETED)
    if not opened.done():
        opened.cancel()
        raise BrokerError(f"connection closed: {_describe(connection_closed.result())}")
    channel = Channel(link, opened.result())
    if confirms:
        await channel._enable_confirms()
    return channel


def _pika_properties(p: Properties) -> Any:
    return pika.BasicProperties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        delivery_mode=p.delivery_mode,
        message_id=p.message_id,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        type=p.type,
        app_id=p.app_id,
        timestamp=p.timestamp,
        priority=p.priority,
        expiration=p.expiration,
        headers=dict(p.headers) if p.headers else None,
    )


def _our_properties(p: Any) -> Properties:
    return Properties(
        message_id=p.message_id or "",
        content_type=p.content_type or "",
        content_encoding=p.content_encoding,
        delivery_mode=p.delivery_mode or 1,
        type=p.type,
        app_id=p.app_id or "",
        timestamp=p.timestamp,
        priority=p.priority,
        expiration=p.expiration,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        headers=dict(p.headers or {}),
    )


def _describe(error: BaseException) -> str:
    """A one-line reason for a pika error, without credentials."""
    if isinstance(error, pika.exceptions.ChannelClosed | pika.exceptions.ConnectionClosed):
        return f"{error.reply_code} {error.reply_text}".strip()
    text = str(error)
    if not isinstance(error, pika.exceptions.AMQPError) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return _scrub(text)


def _scrub(text: str) -> str:
    for word in text.split():
        if "://" in word and urlsplit(word.strip("'\"(),")).password:
            text = text.replace(word, redact(word.strip("'\"(),")))
    return text


async def one_shot(config: BrokerConfig, name: str, timeout_s: float = 15.0) -> Link:
    """A link for a short-lived command (`beatd trigger`): connected, or BrokerError."""
    link = Link(config, name=name)
    try:
        connection = await asyncio.wait_for(link._connect(), timeout_s)
    except TimeoutError:
        raise BrokerError(f"no answer from {', '.join(config.redacted_urls())}") from None
    closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    connection.add_on_close_callback(lambda _c, why: _resolve(closed, why))
    link._connection = connection
    link._channel = await _open_channel(connection, link, closed)
    return link


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
