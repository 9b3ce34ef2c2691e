"""One AMQP channel through pika, in confirm mode, with awaitable operations: pipelined
publishing with per-message outcomes, consuming, settling. Implements core.ports.Channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pika
import pika.compat
import pika.exceptions
import pika.spec

from beatd.core.errors import BrokerError
from beatd.core.inbound import UNDECODABLE_HEADER
from beatd.core.messages import Outgoing, Properties
from beatd.core.ports import Delivery, Outcome
from beatd.core.values import redact

log = logging.getLogger("beatd.broker")

if TYPE_CHECKING:
    from beatd.runtime.rabbitmq import Link

_decode_properties = pika.spec.BasicProperties.decode
AMQPError = pika.exceptions.AMQPError
STREAM_OFFSET = "x-stream-offset"  # where a stream consumer starts; each delivery's offset
# What pika raises for a message it cannot encode (and so never sends).
_UNSENDABLE = (
    pika.exceptions.UnsupportedAMQPFieldException,
    pika.exceptions.ShortStringTooLong,
    ValueError,
    TypeError,
    OverflowError,
    RecursionError,
    struct.error,
)


def _decode_or_mark(self: Any, encoded: bytes, offset: int = 0) -> Any:
    """pika decodes a delivery's properties inside its frame reader, where an exception drops
    the connection and the broker redelivers the same message for ever (headers nested 700
    deep: RecursionError; a header timestamp past 9999: OverflowError). Keep the delivery and
    mark it instead, so the worker dead-letters it as malformed and goes on."""
    try:
        return _decode_properties(self, encoded, offset)
    except (
        RecursionError,
        OverflowError,
        ValueError,
        struct.error,
        pika.exceptions.AMQPError,
    ) as exc:
        self.headers = {UNDECODABLE_HEADER: f"{type(exc).__name__}: {str(exc)[:200]}"}
        return self


pika.spec.BasicProperties.decode = _decode_or_mark  # pika has no hook for this


# A burst yields to the loop after every this many messages, so what is encoded goes out while
# the rest is (the broker works on the other core meanwhile), and heartbeats and confirms come
# in. burst_bench, last arrival against raw pika (1k / 10k runs), on a slow shared machine:
# every 500: 1.35 / 0.90; every 200: 1.13 / 1.06; every 100: 0.96 / 1.12. On a quiet one
# about twice as fast: every 200: 1.20-1.25 / 0.82-0.91; every 100: 0.94-0.98 / 0.96-0.98.
YIELD_EVERY = 100


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
        # Deliveries the broker counts as unacked here, in tag order (tags only increase), and
        # the acks to send at the end of this pass of the loop: one basic.ack with multiple
        # covers the oldest run of them, where one frame (one socket write) each cost more.
        self._unsettled: dict[int, None] = {}
        self._acks: set[int] = set()
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
            future.set_exception(BrokerError(describe(exc)))
        return future

    async def declare_exchange(
        self,
        name: str,
        kind: str = "topic",
        *,
        passive: bool = False,
        durable: bool = True,
        auto_delete: bool = False,
    ) -> None:
        await self._rpc(
            self._ch.exchange_declare,
            exchange=name,
            exchange_type=kind,
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
        )

    async def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = True,
        arguments: Mapping[str, Any] | None = None,
        exclusive: bool = False,
    ) -> int:
        """Declare a queue; return how many messages it holds."""
        frame = await self._rpc(
            self._ch.queue_declare,
            queue=name,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            arguments=dict(arguments or {}),
        )
        return int(frame.method.message_count)

    async def declare_private_queue(self, arguments: Mapping[str, Any]) -> str:
        """Declare a server-named, exclusive, auto-delete queue; return the name it was given."""
        frame = await self._rpc(
            self._ch.queue_declare,
            queue="",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments=dict(arguments),
        )
        return str(frame.method.queue)

    async def get(self, queue: str) -> bytes | None:
        """basic.get one message unacknowledged (it goes back when this channel closes);
        None if the queue was empty."""
        got: asyncio.Future[bytes | None] = self._loop.create_future()
        if not self.is_open:
            raise BrokerError("the channel is closed")
        self._pending.add(got)
        got.add_done_callback(self._pending.discard)

        def on_empty(_frame: Any) -> None:
            if not got.done():
                got.set_result(None)

        self._ch.add_callback(on_empty, [pika.spec.Basic.GetEmpty], one_shot=True)

        def on_message(_ch: Any, method: Any, _properties: Any, body: bytes) -> None:
            self._unsettled[method.delivery_tag] = None  # never acked: no multiple covers it
            if not got.done():
                got.set_result(body)

        try:
            self._ch.basic_get(queue, on_message)
        except pika.exceptions.AMQPError as exc:
            raise BrokerError(describe(exc)) from None
        return await got

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
        for count, message in enumerate(messages, 1):
            self._publish_one(
                batch,
                message.exchange,
                message.routing_key,
                message.body,
                message.properties,
                mandatory=True,
            )
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return await batch.sealed()

    async def send(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> Outcome:
        """Publish one message as given, mandatory, and wait for the broker's confirm (the
        worker's dead letters and retries)."""
        batch = _Batch(self._loop)
        self._publish_one(batch, exchange, routing_key, body, properties, mandatory=True)
        [outcome] = await batch.sealed()
        return outcome

    def send_nowait(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        """Publish one message, not mandatory, without waiting for a confirm (the worker's
        events: telemetry must never hold anything up)."""
        self._publish_one(_Batch(self._loop), exchange, routing_key, body, properties, False)

    def _publish_one(
        self,
        batch: _Batch,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool,
    ) -> None:
        index = batch.add()
        if not self.is_open:
            batch.settle(index, Outcome.LOST)
            return
        try:
            self._ch.basic_publish(
                exchange=exchange,
                routing_key=routing_key,
                body=body,
                properties=_pika_properties(properties),
                mandatory=mandatory,
            )
        except _UNSENDABLE as exc:
            # pika marshals every frame before writing any: nothing went out, and sending the
            # same message again cannot succeed (a field over 255 bytes, a float header).
            log.warning("message %r cannot be sent: %s", properties.message_id[:300], exc)
            batch.settle(index, Outcome.REFUSED)
            return
        except pika.exceptions.AMQPError:
            batch.settle(index, Outcome.LOST)
            return
        # The broker numbers confirms by what it received: a tag only for what was sent, or
        # every later confirm on this channel would be credited to the wrong message.
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        # "" never matches a return: only a mandatory message can come back unroutable
        self._unconfirmed[tag] = (batch, index, properties.message_id if mandatory else "")

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
        self._unsettled.clear()  # the broker requeues them all
        self._acks.clear()
        for batch, index, _ in self._unconfirmed.values():
            batch.settle(index, Outcome.LOST)
        self._unconfirmed.clear()
        for pending in list(self._pending):
            if not pending.done():
                pending.set_exception(BrokerError(describe(reason)))
        if not self.closed.done():
            self.closed.set_result(reason)

    # Consuming

    async def consume(
        self,
        queue: str,
        on_message: Callable[[Delivery], None],
        *,
        prefetch: int,
        arguments: Mapping[str, Any] | None = None,
        auto_ack: bool = False,
    ) -> str:
        """Start consuming queue with at most `prefetch` unacked messages; return the tag.
        auto_ack: deliveries need no ack (RabbitMQ's direct reply-to requires it)."""
        if not auto_ack:
            await self._rpc(self._ch.basic_qos, prefetch_count=prefetch)

        def deliver(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            self._unsettled[method.delivery_tag] = None
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

        return await self._consume(queue, deliver, arguments, auto_ack)

    async def consume_lean(
        self,
        queue: str,
        on_message: Callable[[int, Any, bytes], None],
        *,
        prefetch: int,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """consume() for a reader of many small messages (`beatd history`): on_message gets
        the delivery tag, the properties as pika decoded them (attributes type, message_id,
        headers) and the body, without a Delivery and Properties built for each message."""
        await self._rpc(self._ch.basic_qos, prefetch_count=prefetch)

        def deliver(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
            on_message(method.delivery_tag, properties, body)

        return await self._consume(queue, deliver, arguments)

    async def _consume(
        self,
        queue: str,
        deliver: Callable[..., None],
        arguments: Mapping[str, Any] | None,
        auto_ack: bool = False,
    ) -> str:
        args = dict(arguments) if arguments else None
        if args and type(args.get(STREAM_OFFSET)) is int:
            # RabbitMQ takes a numeric stream offset only as an AMQP long; pika sends a small
            # int as a signed int, which the broker ignores, attaching at "next" instead.
            args[STREAM_OFFSET] = pika.compat.long(args[STREAM_OFFSET])
        future: asyncio.Future[Any] = self._rpc(
            self._ch.basic_consume,
            queue=queue,
            on_message_callback=deliver,
            auto_ack=auto_ack,
            arguments=args,
        )
        frame = await future
        return str(frame.method.consumer_tag)

    async def cancel(self, consumer_tag: str) -> None:
        if self.is_open:
            await self._rpc(self._ch.basic_cancel, consumer_tag=consumer_tag)

    def settle(
        self, delivery_tag: int, *, ack: bool, requeue: bool = False, multiple: bool = False
    ) -> bool:
        """Ack (at the end of this pass of the loop, with the others) or reject a delivery;
        False if the channel has gone (the broker redelivers it)."""
        if not self.is_open:
            return False
        if ack and not multiple:
            if not self._acks:
                self._loop.call_soon(self._send_acks)
            self._acks.add(delivery_tag)
            return True
        try:
            if ack:  # with multiple: every delivery up to it, now
                self._ch.basic_ack(delivery_tag=delivery_tag, multiple=True)
            else:
                self._ch.basic_reject(delivery_tag=delivery_tag, requeue=requeue)
        except pika.exceptions.AMQPError:
            return False
        if ack:
            for tag in [t for t in self._unsettled if t <= delivery_tag]:
                del self._unsettled[tag]
                self._acks.discard(tag)
        else:
            self._unsettled.pop(delivery_tag, None)
        return True

    def _send_acks(self) -> None:
        acks, self._acks = self._acks, set()
        if not acks or not self.is_open:
            return  # gone: the broker requeues them, and the run-id store knows them
        upto, singles = ack_frames(self._unsettled, acks)
        try:
            if upto is not None:
                self._ch.basic_ack(delivery_tag=upto, multiple=True)
            for tag in singles:
                self._ch.basic_ack(delivery_tag=tag, multiple=False)
        except pika.exceptions.AMQPError:
            return  # closing: as above
        for tag in acks:
            self._unsettled.pop(tag, None)

    async def close(self) -> None:
        if self.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._ch.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), 5)


def ack_frames(unsettled: Iterable[int], acks: set[int]) -> tuple[int | None, list[int]]:
    """The basic.ack frames for acks: a tag to ack with multiple (every unsettled tag up to it
    is in acks), or None, and the tags to ack one by one. unsettled is in increasing order."""
    upto = None
    for tag in unsettled:
        if tag not in acks:
            break
        upto = tag
    singles = sorted(t for t in acks if upto is None or t > upto)
    return upto, singles


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


def describe(error: BaseException) -> str:
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
