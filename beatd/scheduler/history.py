"""The scheduler's half of the run history: after each step, what it did (published,
unroutable, missed, with nominal and actual times) goes to the events exchange in batches,
fire and forget, from a task of its own, so it never delays a run. The stream queue that keeps
the events is declared here if it does not exist yet (never redeclared: a stream declared with
other arguments would make the broker close the scheduler's channel)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from beatd.core import history
from beatd.core.config import HistoryConfig
from beatd.core.errors import BrokerError
from beatd.core.messages import Properties, Run
from beatd.core.plan import JobPlan
from beatd.core.ports import Broker, Channel, Outcome

log = logging.getLogger("beatd.scheduler")

MAX_PENDING = 100  # batches waiting for the broker; beyond that the oldest are dropped


def stream_arguments(config: HistoryConfig) -> dict[str, Any]:
    return {"x-queue-type": "stream", "x-max-age": config.max_age}


async def ensure_stream(link: Broker, channel: Channel, config: HistoryConfig) -> None:
    """The events exchange, and the stream bound to it, as `beatd history` reads them."""
    await channel.declare_exchange(config.exchange, "topic")
    if not await link.queue_exists(config.stream):
        await channel.declare_queue(config.stream, arguments=stream_arguments(config))
    await channel.bind_queue(config.stream, config.exchange, "#")


class HistorySink:
    """A Report sink: turns each step into scheduler events and sends them."""

    def __init__(self, config: HistoryConfig, link: Callable[[], Broker]) -> None:
        self.config = config
        self.link = link  # the scheduler's current link (a reload may replace it)
        self.pending: deque[bytes] = deque()
        self.dropped = 0
        self._declared_on: Channel | None = None
        self._flusher: asyncio.Task[None] | None = None

    def step(
        self, plans: Sequence[JobPlan], outcomes: Sequence[Outcome | None], now: datetime
    ) -> None:
        events = list(self._events(plans, outcomes, now))
        if not events:
            return
        for body in history.batches(events):
            if len(self.pending) >= MAX_PENDING:
                self.pending.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("history: the broker is slow or away; dropping old events")
            self.pending.append(body)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _events(
        self, plans: Sequence[JobPlan], outcomes: Sequence[Outcome | None], now: datetime
    ) -> Any:
        position = 0
        for job_plan in plans:
            if job_plan.dropped is not None:
                dropped = job_plan.dropped
                yield history.scheduler_event(
                    "missed", Run(job_plan.job, dropped.last), now, count=dropped.count
                )
            for run in job_plan.runs:
                outcome = outcomes[position]
                position += 1
                if outcome is Outcome.CONFIRMED:
                    yield history.scheduler_event("published", run, now)
                elif outcome is Outcome.UNROUTABLE:
                    yield history.scheduler_event("unroutable", run, now)

    async def _flush(self) -> None:
        """Send what is pending on the current channel (declaring the stream once per
        channel); leave it for the next step while the broker is away."""
        link = self.link()
        channel = link.channel_now()
        if channel is None:
            return
        try:
            if channel is not self._declared_on:
                await ensure_stream(link, channel, self.config)
                self._declared_on = channel
        except BrokerError as exc:
            log.warning("history: cannot declare %r: %s", self.config.stream, exc)
            return
        properties = Properties(
            message_id="", type=history.SCHEDULER_TYPE, delivery_mode=1, headers={}
        )
        while self.pending and channel.is_open:
            channel.send_nowait(
                self.config.exchange, "scheduler", self.pending.popleft(), properties
            )
