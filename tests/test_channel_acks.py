"""Acks sent together at the end of a pass of the loop: one basic.ack with multiple covers the
oldest run of them, and never a delivery that is still being worked on."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from beatd.core.config import BrokerConfig
from beatd.core.ports import Delivery
from beatd.runtime.channel import ack_frames
from beatd.runtime.rabbitmq import Link
from tests.rabbit import AMQP_URL, Rabbit


@given(st.lists(st.booleans(), max_size=40))
def test_a_multiple_ack_covers_only_tags_being_acked_and_every_ack_is_sent_once(
    acked: list[bool],
) -> None:
    unsettled = list(range(3, 3 + 2 * len(acked), 2))  # increasing, with gaps
    acks = {tag for tag, ack in zip(unsettled, acked, strict=True) if ack}
    upto, singles = ack_frames(unsettled, acks)
    covered = [t for t in unsettled if upto is not None and t <= upto]
    assert set(covered) <= acks
    assert sorted(covered + singles) == sorted(acks)
    assert all(upto is None or t > upto for t in singles)
    leading = next((i for i, ack in enumerate(acked) if not ack), len(acked))
    assert len(covered) == leading  # the whole oldest run, not a part of it


def test_acks_of_one_pass_go_out_together_and_a_delivery_left_unacked_comes_back(
    rabbit: Rabbit,
) -> None:
    exchange = rabbit.name("x")
    rabbit.exchanges.append(exchange)
    queue = rabbit.queue(exchange, "k")
    with rabbit.channel() as ch:
        for n in range(5):
            ch.basic_publish(exchange, "k", str(n).encode())

    async def body() -> list[tuple[int, bool]]:
        link = Link(BrokerConfig(urls=(AMQP_URL,), exchange=exchange), name="test")
        task = asyncio.create_task(link.run())
        try:
            channel = await link.channel(20)
            sent: list[tuple[int, bool]] = []
            ack = channel._ch.basic_ack

            def spy(delivery_tag: int, multiple: bool) -> Any:
                sent.append((delivery_tag, multiple))
                return ack(delivery_tag=delivery_tag, multiple=multiple)

            channel._ch.basic_ack = spy
            got: list[Delivery] = []
            await channel.consume(queue, got.append, prefetch=5)
            for _ in range(200):
                if len(got) == 5:
                    break
                await asyncio.sleep(0.05)
            assert [d.body for d in got] == [b"0", b"1", b"2", b"3", b"4"]
            for delivery in (got[4], got[0], got[3], got[1]):  # "2" still runs
                assert delivery.ack()
            assert not sent  # not yet: at the end of this pass
            await asyncio.sleep(0)
            await asyncio.sleep(0.2)  # on the wire before the channel goes
            tags = [d.delivery_tag for d in got]
            assert sent == [(tags[1], True), (tags[3], False), (tags[4], False)]
            return sent
        finally:
            await link.close()
            await task

    asyncio.run(asyncio.wait_for(body(), 30))
    [back] = rabbit.wait_for(queue, 1)
    assert back.body == b"2"
    assert rabbit.depth(queue) == 0


def test_an_ack_on_a_channel_that_has_gone_is_not_sent(rabbit: Rabbit) -> None:
    exchange = rabbit.name("x")
    rabbit.exchanges.append(exchange)
    queue = rabbit.queue(exchange, "k")
    with rabbit.channel() as ch:
        ch.basic_publish(exchange, "k", b"0")

    async def body() -> None:
        link = Link(BrokerConfig(urls=(AMQP_URL,), exchange=exchange), name="test")
        task = asyncio.create_task(link.run())
        try:
            channel = await link.channel(20)
            got: list[Delivery] = []
            await channel.consume(queue, got.append, prefetch=1)
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.05)
            await channel.close()
            assert not got[0].ack()
        finally:
            await link.close()
            await task

    asyncio.run(asyncio.wait_for(body(), 30))
    assert [m.body for m in rabbit.wait_for(queue, 1)] == [b"0"]
