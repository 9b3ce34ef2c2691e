"""The pika channel's confirm bookkeeping against the real RabbitMQ (issue 9, item 2): a
message pika refuses to encode is REFUSED, and every later confirm still lands on its own
message."""

from __future__ import annotations

import asyncio

import pytest

from beatd.core.config import BrokerConfig
from beatd.core.errors import BrokerError
from beatd.core.messages import Outgoing, Properties, Run
from beatd.core.ports import Outcome
from beatd.runtime.rabbitmq import Link
from tests.rabbit import AMQP_URL, Rabbit


def outgoing(exchange: str, message_id: str, headers: dict[str, object] | None = None) -> Outgoing:
    run = Run.__new__(Run)  # only the wire fields matter to the channel
    props = Properties(message_id=message_id, headers=headers or {})
    return Outgoing(run, exchange, "k", message_id.encode()[:50], props)


def test_an_unencodable_message_is_refused_and_later_confirms_stay_in_step(
    rabbit: Rabbit,
) -> None:
    exchange = rabbit.name("x")
    rabbit.exchanges.append(exchange)
    queue = rabbit.queue(exchange, "k")

    async def body() -> tuple[list[Outcome], list[Outcome]]:
        link = Link(BrokerConfig(urls=(AMQP_URL,), exchange=exchange), name="test")
        task = asyncio.create_task(link.run())
        try:
            channel = await link.channel(20)
            await channel.declare_exchange(exchange, "topic")
            batch = [
                outgoing(exchange, "a"),
                outgoing(exchange, "x" * 300),  # a short string over 255 bytes
                outgoing(exchange, "b", {"float": 0.5}),  # pika cannot encode a float header
                outgoing(exchange, "c"),
            ]
            first = await channel.publish(batch)
            channel.send_nowait(exchange, "k", b"{}", Properties(message_id="y" * 300))
            second = [await channel.send(exchange, "k", b"{}", Properties(message_id="d"))]
            second += await channel.publish([outgoing(exchange, "e")])
            return first, second
        finally:
            await link.close()
            await task

    first, second = asyncio.run(asyncio.wait_for(body(), 30))
    assert first == [Outcome.CONFIRMED, Outcome.REFUSED, Outcome.REFUSED, Outcome.CONFIRMED]
    assert second == [Outcome.CONFIRMED, Outcome.CONFIRMED]
    got = [m.properties.message_id for m in rabbit.wait_for(queue, 4)]
    assert got == ["a", "c", "d", "e"]


def test_asking_about_queues_and_locks_adds_nothing_to_the_connection(rabbit: Rabbit) -> None:
    # Issue 9, item 5: each queue_exists added a close callback that lived as long as the
    # connection.
    queue = rabbit.queue(rabbit.name("x"), "k")
    rabbit.exchanges.append(rabbit.name("x"))

    async def body() -> tuple[list[bool], int]:
        link = Link(BrokerConfig(urls=(AMQP_URL,)), name="test")
        task = asyncio.create_task(link.run())
        try:
            await link.channel(20)
            connection = link._connection
            added = 0
            original = connection.add_on_close_callback

            def counting(callback: object) -> None:
                nonlocal added
                added += 1
                original(callback)

            connection.add_on_close_callback = counting
            answers = [await link.queue_exists(n) for n in (queue, "no-such-queue") * 5]
            lock = rabbit.name("lock")
            answers += [await link.try_lock(lock) for _ in range(3)]  # ha: asks every poll
            for _ in range(3):  # beatd history and list open one to read the stream
                await (await link.spare_channel()).close()
            return answers, added
        finally:
            await link.close()
            await task

    answers, added = asyncio.run(asyncio.wait_for(body(), 30))
    assert answers == [True, False] * 5 + [True] * 3
    assert added == 0


def test_a_one_shot_link_that_cannot_open_its_channel_closes_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from beatd.runtime import rabbitmq

    opened: list[object] = []
    real_open = rabbitmq._open_connection

    async def recording(*args: object, **kwargs: object) -> object:
        connection = await real_open(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(connection)
        return connection

    async def refusing(*_args: object, **_kwargs: object) -> object:
        raise BrokerError("channel refused")

    monkeypatch.setattr(rabbitmq, "_open_connection", recording)
    monkeypatch.setattr(rabbitmq, "_open_channel", refusing)

    async def body() -> None:
        with pytest.raises(BrokerError, match="channel refused"):
            await rabbitmq.one_shot(BrokerConfig(urls=(AMQP_URL,)), "trigger")

    asyncio.run(body())
    [connection] = opened
    assert connection.is_closed  # type: ignore[attr-defined]
