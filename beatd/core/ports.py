"""The ports the daemons are written against: a broker link and its channel, a clock and the
stores. runtime/ implements them for real (pika, SQLite, the wall clock); tests/fakebroker.py
implements the broker in memory, so a test drives a daemon one step at a time.

Only protocols and records here, no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from beatd.core.config import BrokerConfig
from beatd.core.jobstate import JobState
from beatd.core.messages import Outgoing, Properties
from beatd.core.verdicts import Phase, Seen

Clock = Callable[[], datetime]


class Outcome(Enum):
    """What became of one published message."""

    CONFIRMED = "confirmed"  # the broker took responsibility for it
    UNROUTABLE = "unroutable"  # confirmed, but returned: no queue is bound for its key
    NACKED = "nacked"  # the broker refused it (internal error); publish again
    LOST = "lost"  # the channel or connection went away before a confirm; publish again
    REFUSED = "refused"  # the client could not encode it: never sent, and never will be


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


class Channel(Protocol):
    """One open channel in confirm mode."""

    @property
    def is_open(self) -> bool: ...

    async def declare_exchange(
        self,
        name: str,
        kind: str = "topic",
        *,
        passive: bool = False,
        durable: bool = True,
        auto_delete: bool = False,
    ) -> None: ...

    async def declare_queue(
        self,
        name: str,
        *,
        passive: bool = False,
        durable: bool = True,
        arguments: Mapping[str, Any] | None = None,
    ) -> int:
        """Declare a queue; return how many messages it holds."""
        ...

    async def declare_private_queue(self, arguments: Mapping[str, Any]) -> str:
        """Declare a server-named, exclusive, auto-delete queue; return the name it was given."""
        ...

    async def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...

    async def publish(self, messages: Iterable[Outgoing]) -> list[Outcome]:
        """Publish all (mandatory, pipelined), then wait for every outcome, in order."""
        ...

    async def send(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> Outcome:
        """Publish one message, mandatory, and wait for its outcome."""
        ...

    def send_nowait(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> None:
        """Publish one message, not mandatory, without waiting (telemetry)."""
        ...

    async def consume(
        self,
        queue: str,
        on_message: Callable[[Delivery], None],
        *,
        prefetch: int,
        arguments: Mapping[str, Any] | None = None,
        auto_ack: bool = False,
    ) -> str:
        """Start consuming; arguments: e.g. a stream's x-stream-offset; auto_ack: deliveries
        need no ack (direct reply-to)."""
        ...

    async def cancel(self, consumer_tag: str) -> None: ...

    def settle(
        self, delivery_tag: int, *, ack: bool, requeue: bool = False, multiple: bool = False
    ) -> bool:
        """Ack or reject a delivery (with multiple, every one up to it); False if the channel
        is gone (the broker redelivers)."""
        ...

    async def close(self) -> None: ...


Setup = Callable[[Channel], Awaitable[None]]


class Broker(Protocol):
    """A connection that keeps itself up, and its one channel: `run()` is its supervisor
    task, `setup` (given to the Connector) runs on every new channel."""

    state: str  # connecting, up, down, error, closed
    url: str  # the current broker, password redacted

    def channel_now(self) -> Channel | None:
        """The open channel, or None while the broker is away (never waits)."""
        ...

    async def channel(self, timeout: float | None = None) -> Channel:
        """Wait for an open channel; BrokerError after timeout seconds."""
        ...

    async def queue_exists(self, name: str) -> bool: ...

    async def open_channel(self) -> Channel:
        """Another channel on the current connection (BrokerError while there is none)."""
        ...

    async def try_lock(self, queue: str) -> bool:
        """Declare an exclusive queue on this connection (a lock the broker releases when the
        connection closes): True if this connection holds it, False if another one does."""
        ...

    async def read_last(self, queue: str, arguments: Mapping[str, Any]) -> bytes | None:
        """Declare a durable queue with these arguments and return the body of its newest
        message without taking any away, or None if it is empty."""
        ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


class Connector(Protocol):
    """Makes a Broker: runtime.rabbitmq.Link is one, tests.fakebroker.FakeBroker.connect another."""

    def __call__(
        self,
        config: BrokerConfig,
        *,
        name: str,
        setup: Setup | None = None,
        on_state: Callable[[str], None] | None = None,
    ) -> Broker: ...


class JobStore(Protocol):
    """Where the scheduler keeps each job's progress (runtime.state.State)."""

    def load(self) -> dict[str, JobState]: ...

    def save(self, states: Iterable[JobState]) -> None: ...

    def forget(self, names: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class RunStore(Protocol):
    """The worker's memory of run ids (runtime.seen.SeenStore)."""

    def get(self, run_id: str) -> Seen | None: ...

    def start(self, run_id: str, attempt: int) -> Seen: ...

    def finish(
        self, run_id: str, attempt: int, phase: Phase, reason: str = "", detail: str = ""
    ) -> None: ...

    def close(self) -> None: ...
