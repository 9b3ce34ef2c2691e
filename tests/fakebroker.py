"""An in-memory RabbitMQ for driving the daemons step by step, and an in-memory job store.

It models what the daemons rely on: exchanges (direct, topic, fanout, and the default exchange
''), durable queues with dead-letter arguments, bindings, mandatory returns (UNROUTABLE),
publisher confirms with scripted nacks and connection losses, a channel closed by a 404 or a
406, server-named exclusive queues (gone with their channel), auto-delete exchanges, direct
reply-to, consumers with prefetch, ack/reject/requeue with redelivery when a channel goes away, and
the broker going down and coming back. Everything happens on the test's event loop, at once:
a link reconnects as soon as the broker is up, a publish settles before `publish` returns.

The pika adapter (runtime.rabbitmq) is proven separately against the real RabbitMQ; this fake
implements core.ports with the same observable behaviour, so no test here needs a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pika
import pika.exceptions
import pika.spec

from beatd.core.config import BrokerConfig
from beatd.core.errors import BrokerError
from beatd.core.jobstate import JobState
from beatd.core.messages import Outgoing, Properties
from beatd.core.ports import Delivery, Outcome, Setup
from beatd.runtime.channel import _pika_properties

NACK, LOSE = "nack", "lose"
REPLY_TO = "amq.rabbitmq.reply-to"


@dataclass
class Message:
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    redelivered: bool = False


@dataclass
class Queue:
    name: str
    arguments: Mapping[str, Any]
    ready: deque[Message] = field(default_factory=deque)

    def dead_letter(self, broker: FakeBroker, message: Message) -> None:
        exchange = self.arguments.get("x-dead-letter-exchange")
        if exchange is None:
            return
        key = self.arguments.get("x-dead-letter-routing-key", message.routing_key)
        broker.enqueue(replace(message, redelivered=False), str(exchange), str(key))


class FakeBroker:
    def __init__(self) -> None:
        self.up = True
        self.exchanges: dict[str, str] = {"": "direct", "amq.topic": "topic"}
        self.queues: dict[str, Queue] = {}
        self.bindings: set[tuple[str, str, str]] = set()  # (exchange, queue, key)
        self.links: list[FakeLink] = []
        self.faults: deque[str] = deque()  # consumed one per published message: NACK or LOSE
        self.accepted: list[Message] = []  # every message the broker confirmed, in order
        self.entered: Counter[str] = Counter()  # per queue: messages put into it
        self.settled: Counter[tuple[str, str]] = Counter()  # (queue, ack|reject|requeue)
        # Publishes for which this returns True fail as pika fails to encode a frame (see
        # _encode_as_pika): a test picks the messages that cannot be sent.
        self.unencodable: Callable[[str, Properties], bool] = lambda _exchange, _props: False
        self.locks: dict[str, FakeChannel] = {}  # exclusive queues: held by a connection
        self.lines: dict[str, list[tuple[FakeChannel, str]]] = {}  # single-active-consumer
        self.private: dict[str, FakeChannel] = {}  # server-named exclusive queues: their owner
        self.auto_delete: set[str] = set()  # exchanges that go with their last binding
        self.reply_to: dict[str, tuple[FakeChannel, Callable[[Delivery], None]]] = {}
        self._changed = asyncio.Event()

    # The test's controls

    def connect(
        self,
        config: BrokerConfig,
        *,
        name: str,
        setup: Setup | None = None,
        on_state: Callable[[str], None] | None = None,
    ) -> FakeLink:
        """A core.ports.Connector."""
        link = FakeLink(self, name, setup, on_state or (lambda _state: None))
        self.links.append(link)
        return link

    def stop(self) -> None:
        """The broker goes away: every connection drops and none is accepted until start()."""
        self.up = False
        self.drop_connections()

    def start(self) -> None:
        self.up = True
        self._notify()

    def drop_connections(self) -> None:
        """Every connection drops (links reconnect at once if the broker is up)."""
        for link in self.links:
            link.drop("connection reset")
        self._notify()

    def delete_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        self.private.pop(name, None)
        self.bindings = {b for b in self.bindings if b[1] != name}
        for exchange in [x for x in self.auto_delete if not any(b[0] == x for b in self.bindings)]:
            self.auto_delete.discard(exchange)
            self.exchanges.pop(exchange, None)

    def delete_exchange(self, name: str) -> None:
        """Delete an exchange as `rabbitmqctl`/the management UI does: its bindings go too."""
        self.exchanges.pop(name, None)
        self.bindings = {b for b in self.bindings if b[0] != name}

    def _notify(self) -> None:
        for link in self.links:
            link.changed.set()

    # Routing

    def route(self, exchange: str, key: str) -> list[str]:
        if exchange == "":
            return [key] if key in self.queues else []
        kind = self.exchanges[exchange]
        return sorted(
            {
                queue
                for (x, queue, pattern) in self.bindings
                if x == exchange and _matches(kind, pattern, key)
            }
        )

    def enqueue(self, message: Message, exchange: str, key: str) -> bool:
        """Put a message into every queue it routes to; False if it routes nowhere."""
        if exchange not in self.exchanges:
            return False
        targets = self.route(exchange, key)
        for name in targets:
            self.entered[name] += 1
            queue = self.queues[name]
            queue.ready.append(replace(message, exchange=exchange, routing_key=key))
            limit = queue.arguments.get("x-max-length")
            while limit is not None and len(queue.ready) > int(limit):  # overflow: drop-head
                queue.ready.popleft()
        for link in self.links:
            link.deliver()
        return bool(targets)

    def deliver_all(self) -> None:
        for link in self.links:
            link.deliver()

    def active(self, queue: str) -> tuple[FakeChannel, str] | None:
        """The consumer a single-active-consumer queue delivers to: the first still there."""
        line = self.lines.get(queue, [])
        line[:] = [(ch, tag) for ch, tag in line if ch.open and not ch.severed]
        return line[0] if line else None

    def messages(self, queue: str) -> list[Message]:
        return list(self.queues[queue].ready)

    def take(self, queue: str) -> list[Message]:
        """Remove and return what waits in a queue (what a consumer of the test would get)."""
        ready = self.queues[queue].ready
        taken = list(ready)
        ready.clear()
        return taken


def _matches(kind: str, pattern: str, key: str) -> bool:
    if kind == "fanout":
        return True
    if kind == "direct":
        return pattern == key
    return _topic(tuple(pattern.split(".")), tuple(key.split(".")))


def _topic(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _topic(rest, words[1:])


class FakeLink:
    """A core.ports.Broker over the FakeBroker."""

    def __init__(
        self,
        broker: FakeBroker,
        name: str,
        setup: Setup | None,
        on_state: Callable[[str], None],
    ) -> None:
        self.broker = broker
        self.name = name
        self.setup = setup
        self.on_state = on_state
        self.state = "connecting"
        self.url = "amqp://guest:***@fake/%2F"
        self.changed = asyncio.Event()
        self._channel: FakeChannel | None = None
        self._others: list[FakeChannel] = []  # open_channel's, closed with the connection
        self._up = asyncio.Event()
        self._closed = False

    def channel_now(self) -> FakeChannel | None:
        channel = self._channel
        return channel if channel is not None and channel.is_open else None

    async def channel(self, timeout: float | None = None) -> FakeChannel:
        while (channel := self.channel_now()) is None:
            try:
                await asyncio.wait_for(self._up.wait(), timeout)
            except TimeoutError:
                raise BrokerError(f"no connection within {timeout}s") from None
        return channel

    async def queue_exists(self, name: str) -> bool:
        if self.channel_now() is None:
            raise BrokerError("not connected")
        return name in self.broker.queues

    async def try_lock(self, queue: str) -> bool:
        """An exclusive queue: one connection (here: its channel) holds it until it closes."""
        channel = self.channel_now()
        if channel is None:
            raise BrokerError("not connected")
        holder = self.broker.locks.get(queue)
        if holder is not None and holder.open and not holder.severed:
            return holder is channel
        self.broker.locks[queue] = channel
        return True

    async def open_channel(self) -> FakeChannel:
        if self.channel_now() is None:
            raise BrokerError("not connected")
        channel = FakeChannel(self)
        self._others = [c for c in self._others if c.open] + [channel]
        return channel

    async def read_last(self, queue: str, arguments: Mapping[str, Any]) -> bytes | None:
        channel = self.channel_now()
        if channel is None:
            raise BrokerError("not connected")
        await channel.declare_queue(queue, arguments=arguments)
        ready = self.broker.queues[queue].ready
        return ready[-1].body if ready else None

    def sever(self) -> None:
        """The broker closed this connection (a missed heartbeat) but the process has not
        noticed yet (it was paused): its lock is gone, publishes on it are LOST."""
        if self._channel is not None:
            self._channel.severed = True
            self._channel.release()
        self.broker._notify()
        asyncio.get_running_loop().call_soon(self.broker.deliver_all)

    async def run(self) -> None:
        while not self._closed:
            self.changed.clear()
            if self.broker.up and self.channel_now() is None:
                await self._open()
            if not self._closed:
                await self.changed.wait()
        self._set_state("closed")

    async def _open(self) -> None:
        channel = FakeChannel(self)
        try:
            if self.setup is not None:
                await self.setup(channel)
        except BrokerError:
            self._set_state("error")
            return
        if not channel.is_open or not self.broker.up or self._closed:
            return
        self._channel = channel
        self._up.set()
        self._set_state("up")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.on_state(state)

    def drop(self, reason: str) -> None:
        channel, self._channel = self._channel, None
        self._up.clear()
        others, self._others = self._others, []
        for other in others:
            other.close_now(reason)
        if channel is not None:
            channel.close_now(reason)
            if not self._closed:
                self._set_state("down")

    def deliver(self) -> None:
        if self._channel is not None:
            self._channel.deliver()
        for other in self._others:
            other.deliver()

    async def close(self) -> None:
        self._closed = True
        self.drop("closed")
        self.changed.set()


class FakeChannel:
    """A core.ports.Channel."""

    _tags = itertools.count(1)

    def __init__(self, link: FakeLink) -> None:
        self.link = link
        self.broker = link.broker
        self.open = True
        self.severed = False  # see FakeLink.sever
        self.closed_because = ""
        self._consumers: dict[str, tuple[str, Callable[[Delivery], None], int]] = {}
        self._unacked: dict[int, tuple[str, Message]] = {}
        self._reply_to: str | None = None  # its direct reply-to address, once it consumes it

    @property
    def is_open(self) -> bool:
        return self.open

    def _check(self) -> None:
        if not self.open:
            raise BrokerError(f"the channel is closed ({self.closed_because})")

    def _fail(self, reason: str) -> BrokerError:
        """The broker closes the channel, as it does on a 404 or 406."""
        self.close_now(reason)
        self.link.drop(reason)
        self.broker._notify()
        return BrokerError(reason)

    async def declare_exchange(
        self,
        name: str,
        kind: str = "topic",
        *,
        passive: bool = False,
        durable: bool = True,
        auto_delete: bool = False,
    ) -> None:
        self._check()
        existing = self.broker.exchanges.get(name)
        if name.startswith("amq.") and existing is None:
            raise self._fail(
                f"403 ACCESS_REFUSED - exchange name '{name}' contains reserved prefix"
            )
        if existing is not None and existing != kind and not passive:
            raise self._fail(f"406 PRECONDITION_FAILED - inequivalent arg 'type' for '{name}'")
        if existing is None and passive:
            raise self._fail(f"404 NOT_FOUND - no exchange '{name}'")
        if auto_delete:
            self.broker.auto_delete.add(name)
        self.broker.exchanges.setdefault(name, kind)

    async def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = True,
        arguments: Mapping[str, Any] | None = None,
    ) -> int:
        self._check()
        existing = self.broker.queues.get(name)
        if existing is None:
            if passive:
                raise self._fail(f"404 NOT_FOUND - no queue '{name}'")
            existing = self.broker.queues[name] = Queue(name, dict(arguments or {}))
        elif not passive and dict(arguments or {}) != dict(existing.arguments):
            raise self._fail(f"406 PRECONDITION_FAILED - inequivalent args for queue '{name}'")
        return len(existing.ready)

    async def declare_private_queue(self, arguments: Mapping[str, Any]) -> str:
        self._check()
        name = f"amq.gen-{next(self._tags)}"
        self.broker.queues[name] = Queue(name, dict(arguments))
        self.broker.private[name] = self
        return name

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        self._check()
        if exchange not in self.broker.exchanges or queue not in self.broker.queues:
            raise self._fail(f"404 NOT_FOUND - no exchange '{exchange}' or queue '{queue}'")
        self.broker.bindings.add((exchange, queue, routing_key))

    async def publish(self, messages: Iterable[Outgoing]) -> list[Outcome]:
        outcomes = [
            self._publish_one(m.exchange, m.routing_key, m.body, m.properties, True)
            for m in messages
        ]
        await asyncio.sleep(0)
        return outcomes

    async def send(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> Outcome:
        outcome = self._publish_one(exchange, routing_key, body, properties, True)
        await asyncio.sleep(0)
        return outcome

    def send_nowait(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        self._publish_one(exchange, routing_key, body, properties, False)

    def _publish_one(
        self, exchange: str, key: str, body: bytes, properties: Properties, mandatory: bool
    ) -> Outcome:
        if not self.open or self.severed:
            return Outcome.LOST
        try:
            if self.broker.unencodable(exchange, properties):
                raise pika.exceptions.ShortStringTooLong(properties.message_id)
            _encode_as_pika(exchange, key, body, properties)
        except (pika.exceptions.AMQPError, ValueError, TypeError, OverflowError):
            # What runtime.channel does when pika cannot encode a message: it never left, the
            # channel stays open, and sending it again cannot succeed.
            return Outcome.REFUSED
        fault = self.broker.faults.popleft() if self.broker.faults else None
        if fault == NACK:
            return Outcome.NACKED
        if fault == LOSE:
            self.link.drop("connection lost mid-publish")
            self.broker._notify()
            return Outcome.LOST
        if properties.reply_to == REPLY_TO:
            if self._reply_to is None:
                self._fail("406 PRECONDITION_FAILED - fast reply consumer does not exist")
                return Outcome.LOST
            properties = replace(properties, reply_to=self._reply_to)
        if exchange == "" and key.startswith(REPLY_TO + "."):
            return self._reply(key, body, properties)
        if exchange not in self.broker.exchanges:
            self._fail(f"404 NOT_FOUND - no exchange '{exchange}'")
            return Outcome.LOST
        message = Message(exchange, key, body, properties)
        routed = self.broker.enqueue(message, exchange, key)
        self.broker.accepted.append(message)
        return Outcome.CONFIRMED if routed or not mandatory else Outcome.UNROUTABLE

    def _reply(self, key: str, body: bytes, properties: Properties) -> Outcome:
        """Direct reply-to: straight to the asking channel's consumer, or nowhere (as RabbitMQ
        drops an answer whose asker went away)."""
        self.broker.accepted.append(Message("", key, body, properties))
        target = self.broker.reply_to.get(key)
        if target is not None and target[0].open:
            channel, on_message = target
            delivery = Delivery(channel, 0, False, "", key, properties, body)  # type: ignore[arg-type]
            asyncio.get_running_loop().call_soon(on_message, delivery)
        return Outcome.CONFIRMED

    # Consuming

    async def consume(
        self,
        queue: str,
        on_message: Callable[[Delivery], None],
        *,
        prefetch: int,
        arguments: Mapping[str, Any] | None = None,  # a stream offset: not modelled
        auto_ack: bool = False,
    ) -> str:
        self._check()
        if queue == REPLY_TO:
            if not auto_ack:
                raise self._fail("406 PRECONDITION_FAILED - reply consumer cannot acknowledge")
            self._reply_to = f"{REPLY_TO}.{id(self)}"
            self.broker.reply_to[self._reply_to] = (self, on_message)
            return f"ctag-{next(self._tags)}"
        if queue not in self.broker.queues:
            raise self._fail(f"404 NOT_FOUND - no queue '{queue}'")
        tag = f"ctag-{next(self._tags)}"
        self._consumers[tag] = (queue, on_message, prefetch)
        if self.broker.queues[queue].arguments.get("x-single-active-consumer"):
            self.broker.lines.setdefault(queue, []).append((self, tag))
        asyncio.get_running_loop().call_soon(self.deliver)
        return tag

    async def cancel(self, consumer_tag: str) -> None:
        self._consumers.pop(consumer_tag, None)
        for line in self.broker.lines.values():
            line[:] = [(ch, tag) for ch, tag in line if (ch, tag) != (self, consumer_tag)]
        asyncio.get_running_loop().call_soon(self.broker.deliver_all)

    def deliver(self) -> None:
        """Hand waiting messages to this channel's consumers, within their prefetch."""
        for tag, (queue, on_message, prefetch) in list(self._consumers.items()):
            if queue in self.broker.lines and self.broker.active(queue) != (self, tag):
                continue
            if queue not in self.broker.queues:
                continue  # deleted under its consumer
            ready = self.broker.queues[queue].ready
            while self.open and tag in self._consumers and ready:
                if sum(1 for q, _ in self._unacked.values() if q == queue) >= prefetch:
                    break
                message = ready.popleft()
                delivery_tag = next(self._tags)
                self._unacked[delivery_tag] = (queue, message)
                on_message(
                    Delivery(
                        self,  # type: ignore[arg-type]
                        delivery_tag,
                        message.redelivered,
                        message.exchange,
                        message.routing_key,
                        message.properties,
                        message.body,
                    )
                )

    def settle(
        self, delivery_tag: int, *, ack: bool, requeue: bool = False, multiple: bool = False
    ) -> bool:
        if not self.open or delivery_tag not in self._unacked:
            return False
        if multiple:
            for tag in [t for t in self._unacked if t < delivery_tag]:
                self.settle(tag, ack=ack, requeue=requeue)
        queue_name, message = self._unacked.pop(delivery_tag)
        queue = self.broker.queues[queue_name]
        how = "ack" if ack else "requeue" if requeue else "reject"
        self.broker.settled[(queue_name, how)] += 1
        if not ack and requeue:
            queue.ready.appendleft(replace(message, redelivered=True))
        elif not ack:
            queue.dead_letter(self.broker, message)
        asyncio.get_running_loop().call_soon(self.broker.deliver_all)
        return True

    def close_now(self, reason: str) -> None:
        """The channel goes away: unacked deliveries go back to their queues, redelivered."""
        if not self.open:
            return
        self.open = False
        self.closed_because = reason
        self.release()
        for name in [q for q, owner in self.broker.private.items() if owner is self]:
            self.broker.delete_queue(name)  # exclusive, auto-delete: gone with its channel
        if self._reply_to is not None:
            self.broker.reply_to.pop(self._reply_to, None)

    async def close(self) -> None:
        self.close_now("closed by the client")

    def release(self) -> None:
        """The broker's side of a closed channel: its consumers go, its unacked messages go
        back to their queues, redelivered (to another single active consumer, if any)."""
        self._consumers.clear()
        for queue_name, message in reversed(list(self._unacked.values())):
            if queue_name in self.broker.queues:
                self.broker.queues[queue_name].ready.appendleft(replace(message, redelivered=True))
        self._unacked.clear()
        with contextlib.suppress(RuntimeError):  # no loop: nobody to deliver to
            asyncio.get_running_loop().call_soon(self.broker.deliver_all)


def _encode_as_pika(exchange: str, key: str, body: bytes, p: Properties) -> None:
    """Encode the frames as pika would, raising what pika raises for what it cannot send (a
    short string over 255 bytes: ShortStringTooLong; a float header:
    UnsupportedAMQPFieldException)."""
    pika.spec.Basic.Publish(exchange=exchange, routing_key=key).encode()
    _pika_properties(p).encode()  # the adapter's own mapping, as it sends


class MemoryStore:
    """A core.ports.JobStore in a dict: survives a 'crash' of the Scheduler that used it."""

    def __init__(self) -> None:
        self.rows: dict[str, JobState] = {}

    def load(self) -> dict[str, JobState]:
        return dict(self.rows)

    def save(self, states: Iterable[JobState]) -> None:
        for state in states:
            self.rows[state.name] = state

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            self.rows.pop(name, None)

    def close(self) -> None:
        pass
