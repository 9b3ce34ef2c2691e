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
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils import io_services_utils

from beatd.core.config import BrokerConfig, TlsConfig
from beatd.core.errors import BrokerError
from beatd.core.ports import Setup
from beatd.core.values import redact
from beatd.runtime.channel import Channel, describe

log = logging.getLogger("beatd.broker")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
REMIND_S = 600.0
READ_LAST_MAX = 10  # messages read_last looks through (the queues it reads keep one)
# pika sends every frame with a send() of its own: a worker's run was seven system calls (its
# ack, and the three frames of each of its two events). What waits when the socket is writable
# goes out together instead, in chunks of at most this many bytes (a bigger chunk would be
# copied again after each partial send).
SEND_CHUNK_MAX = 128 * 1024
# pika has no hook for this; pika<2 is pinned and tests/test_transport_writes.py fails if a
# release renames what is patched (without it, frames would simply go out one send each)
_produce = io_services_utils._AsyncTransportBase._produce


def _produce_joined(self: Any) -> None:
    buffers = self._tx_buffers
    if len(buffers) > 1:
        chunks: list[bytes] = []
        chunk: list[bytes] = []
        size = 0
        for data in buffers:
            if size and size + len(data) > SEND_CHUNK_MAX:
                chunks.append(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        chunks.append(b"".join(chunk))
        buffers.clear()
        buffers.extend(chunks)
    _produce(self)


io_services_utils._AsyncTransportBase._produce = _produce_joined


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
        self._connection_closed: asyncio.Future[BaseException] | None = None

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
            down_since = reminded = time.monotonic()  # the next failure is this outage
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
        self._connection_closed = closed
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
                log.warning("broker closed the channel (%s); reopening", describe(reason))
                await asyncio.wait([closed], timeout=channel_delay)
                channel_delay = min(channel_delay * 2, BACKOFF_MAX_S)
        self._connection = self._connection_closed = None
        return describe(closed.result()) if closed.done() else "closed"

    async def queue_exists(self, name: str) -> bool:
        """Whether a queue exists, asked on a throwaway channel: a passive declare of a
        missing queue makes the broker close the channel it came on."""
        return await self._declared("404", name, passive=True)

    async def open_channel(self) -> Channel:
        """Another channel on the current connection, in confirm mode: what the broker does to
        it (a refused declare closes it) leaves the publishing channel alone."""
        connection, closed = self._current()
        return await _open_channel(connection, self, closed)

    async def try_lock(self, queue: str) -> bool:
        """Declare an exclusive queue on this connection: True if this connection holds it,
        False if another does (the broker answers 405 RESOURCE_LOCKED and closes the
        throwaway channel it came on)."""
        return await self._declared("405", queue, durable=False, exclusive=True)

    async def _declared(self, refused: str, queue: str, **options: Any) -> bool:
        """Declare on a throwaway channel: False if the broker refuses with that code."""
        probe = await self._probe()
        try:
            await probe.declare_queue(queue, **options)
        except BrokerError as exc:
            if str(exc).startswith(refused):
                return False
            raise
        finally:
            await probe.close()
        return True

    async def read_last(self, queue: str, arguments: Mapping[str, Any]) -> bytes | None:
        """Declare a durable queue and return its last message's body, leaving every message
        there: they are taken unacknowledged and go back when the throwaway channel closes.
        (A one-message queue can briefly hold two: a reader's returned copy and a newer one.)"""
        probe = await self._probe()
        last = None
        try:
            count = await probe.declare_queue(queue, arguments=arguments)
            for _ in range(min(count, READ_LAST_MAX)):
                body = await probe.get(queue)
                if body is None:
                    break
                last = body
        finally:
            await probe.close()
        return last

    async def spare_channel(self) -> Channel:
        """Another channel on this connection, without confirms, for a consumer of its own
        (closing it drops what it was sent)."""
        return await self._probe()

    async def _probe(self) -> Channel:
        connection, closed = self._current()
        return await _open_channel(connection, self, closed, confirms=False)

    def _current(self) -> tuple[Any, asyncio.Future[BaseException]]:
        """The open connection and its one close future, which every extra channel shares:
        a close callback per channel would pile up for as long as the connection lives."""
        connection, closed = self._connection, self._connection_closed
        if connection is None or connection.is_closed or closed is None:
            raise BrokerError("not connected")
        return connection, closed

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
            reason = _tls_failure(error) or _socket_failure(error) or describe(error)
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


def _causes(error: BaseException) -> list[object]:
    """The error and what pika wrapped inside it, outermost first (bounded): a workflow
    failure holds a list of attempts, each the error of one; some keep only their text."""
    seen: list[object] = []
    pending: list[object] = [error]
    while pending and len(seen) < 20:
        item = pending.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        if isinstance(item, BaseException):
            pending += [
                *item.args,
                *getattr(item, "exceptions", ()),
                getattr(item, "exception", None),
            ]
            pending.append(item.__cause__)
    return seen


def _tls_failure(error: BaseException) -> str | None:
    """The TLS reason inside a pika connection error ("certificate verify failed: ..."), or
    None if it was not a TLS failure (a lost stream keeps only the text of the broker's alert
    after the handshake, e.g. a client certificate it refused)."""
    for item in _causes(error):
        if isinstance(item, str) and (match := _SSL_TEXT.search(item)):
            return f"TLS: refused by the broker: {match.group(1).strip()}"
        if isinstance(item, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {item.verify_message}"
        if isinstance(item, ssl.SSLError):
            return f"TLS: {item.reason or item}".replace("_", " ").lower()
    return None


def _socket_failure(error: BaseException) -> str | None:
    """The operating system's reason inside a pika connection error, in its words ("connection
    refused", "name or service not known"), or None."""
    for item in _causes(error):
        if isinstance(item, socket.gaierror):
            return f"cannot resolve the host: {str(item.strerror or item).lower()}"
        if isinstance(item, TimeoutError):
            return "timed out"
        if isinstance(item, OSError) and not isinstance(item, ssl.SSLError) and item.strerror:
            return item.strerror.lower()
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
        raise BrokerError(describe(exc)) from None
    await asyncio.wait([opened, connection_closed], return_when=asyncio.FIRST_COMPLETED)
    if not opened.done():
        opened.cancel()
        raise BrokerError(f"connection closed: {describe(connection_closed.result())}")
    channel = Channel(link, opened.result())
    if confirms:
        await channel._enable_confirms()
    return channel


async def one_shot(config: BrokerConfig, name: str, timeout_s: float = 15.0) -> Link:
    """A link for a short-lived command (`beatd trigger`): connected, or BrokerError."""
    link = Link(config, name=name)
    try:
        connection = await asyncio.wait_for(link._connect(), timeout_s)
    except TimeoutError:
        raise BrokerError(f"no answer from {', '.join(config.redacted_urls())}") from None
    closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    connection.add_on_close_callback(lambda _c, why: _resolve(closed, why))
    link._connection, link._connection_closed = connection, closed
    try:
        link._channel = await _open_channel(connection, link, closed)
    except BaseException:
        await link.close()  # not left open behind a failed command
        raise
    return link


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
