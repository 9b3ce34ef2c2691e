"""`beatd history`: read the run history back from its stream queue on RabbitMQ.

A stream never says "that was the last message", so the reader first appends a marker (an
empty message of type beatd.marker, ignored by every reader) and reads from --since until it
sees its own marker: exactly everything published before the command started. Memory is
bounded: only the newest `limit` events are kept."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from datetime import datetime
from typing import Any

from beatd.core import history
from beatd.core.config import Config, HistoryConfig
from beatd.core.errors import BrokerError
from beatd.core.messages import Properties
from beatd.core.ports import Delivery, Outcome
from beatd.runtime.rabbitmq import one_shot

PREFETCH = 2000  # streams require a prefetch; this many in flight keeps the socket busy
ACK_EVERY = 500  # one ack (multiple) per this many: an ack per message was a third of the time
READ_TIMEOUT_S = 60.0


async def read_events(
    config: Config, since: datetime, *, limit: int, timeout_s: float = READ_TIMEOUT_S
) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` events published since `since`, oldest first, and how many
    messages were read in all."""
    settings = config.history or HistoryConfig()
    link = await one_shot(config.broker, name="history")
    try:
        if not await link.queue_exists(settings.stream):
            raise BrokerError(
                f"no run history: the stream {settings.stream!r} does not exist on the broker "
                "(add `history: {}` to the schedule file and restart `beatd run`)"
            )
        channel = await link.channel(0)
        marker = f"marker-{uuid.uuid4()}"
        outcome = await channel.send(
            "", settings.stream, b"", Properties(message_id=marker, type=history.MARKER_TYPE)
        )
        if outcome is not Outcome.CONFIRMED:
            raise BrokerError(f"could not mark the end of {settings.stream!r} ({outcome.value})")
        kept: deque[dict[str, Any]] = deque(maxlen=limit)
        done = asyncio.get_running_loop().create_future()
        read = 0

        def on_message(delivery: Delivery) -> None:
            nonlocal read
            read += 1
            props = delivery.properties
            ours = props.type == history.MARKER_TYPE and props.message_id == marker
            if ours or read % ACK_EVERY == 0:
                delivery.channel.settle(delivery.delivery_tag, ack=True, multiple=True)
            if ours:
                if not done.done():
                    done.set_result(None)
                return
            kept.extend(history.decode(props.type or "", delivery.body))

        await channel.consume(
            settings.stream,
            on_message,
            prefetch=PREFETCH,
            arguments={"x-stream-offset": since},
        )
        try:
            await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            raise BrokerError(
                f"reading {settings.stream!r} took over {timeout_s:g}s ({read} messages read)"
            ) from None
        return list(kept), read
    finally:
        await link.close()
