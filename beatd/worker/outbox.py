"""What the worker declares on the broker, and what it publishes besides acks: dead letters,
retries (through per-delay holding queues) and events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import Enum

from beatd.core.config import BrokerConfig, WorkerConfig
from beatd.core.errors import BrokerError
from beatd.core.messages import Properties
from beatd.core.ports import Broker, Channel, Delivery, Outcome
from beatd.core.signing import Signing, sign
from beatd.core.verdicts import (
    ATTEMPT_HEADER,
    DETAIL_HEADER,
    REASON_HEADER,
    Event,
    Reason,
    RunFacts,
    dead_letter_headers,
    event_body,
    event_properties,
    event_routing_key,
    onward,
    retry_queue,
    retry_queue_arguments,
    worker_queue_arguments,
)

log = logging.getLogger("beatd.worker")

# Once the worker is stopping, how long a finished run keeps trying to reach the broker to
# be settled. After that its message goes back to the queue unsettled, and the run-id store
# finishes the telling when it comes back: a finished run is never run again.
SETTLE_AT_STOP_S = 30.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
# A message the client refuses to send (pika cannot encode a field: issue 9 item 2) fails the
# same way every time; a broker that nacks it this often will not take it either.
REFUSED_MAX = 3
NACKED_MAX = 5
# While the worker runs, how often a publish is tried while the broker is away (about ten
# minutes at the backoff's ceiling) before the run hands its message back unsettled.
TRIES_MAX = 60


class Sent(Enum):
    """What became of a dead letter or retry the worker published."""

    CONFIRMED = "confirmed"  # the broker has it (or returned it: sending again would not help)
    AWAY = "away"  # no broker to confirm it in time: hand the message back, settle it later
    REFUSED = "refused"  # it can never be sent: the queue's own dead-letter exchange takes it


async def declare(channel: Channel, broker: BrokerConfig, w: WorkerConfig) -> None:
    """The worker's exchanges, queues and bindings (idempotent: runs on every new channel)."""
    await channel.declare_exchange(broker.exchange, broker.exchange_type)
    await channel.declare_exchange(w.dead_letter_exchange, "direct")
    extra = {"x-queue-type": "quorum"} if w.queue_type == "quorum" else {}
    await channel.declare_queue(w.dead_letter_queue, arguments=extra)
    # Bound by this worker's queue name: workers with dead-letter queues of their own can
    # share the exchange, and the broker dead-letters expired runs with the same key.
    await channel.bind_queue(w.dead_letter_queue, w.dead_letter_exchange, w.queue)
    await channel.declare_exchange(w.events_exchange, "topic")
    arguments = worker_queue_arguments(w.queue_type, w.dead_letter_exchange, w.queue)
    await channel.declare_queue(w.queue, arguments=arguments)
    for key in w.bindings:
        await channel.bind_queue(w.queue, broker.exchange, key)


class Outbox:
    """Publishes for the worker over its link. Dead letters and retries wait for the
    broker's confirm (a run is settled only once they are safe); events do not."""

    def __init__(
        self,
        link: Broker,
        config: WorkerConfig,
        *,
        identity: str,
        clock: Callable[[], datetime],
        stopping: Callable[[], bool],
        signing: Signing | None = None,
    ) -> None:
        self.link = link
        self.signing = signing
        self.config = config
        self.identity = identity
        self.clock = clock
        self.stopping = stopping
        self.events_dropped = 0

    async def dead_letter(
        self, delivery: Delivery, attempt: int, reason: Reason, detail: str
    ) -> Sent:
        """Copy the message to the dead-letter exchange with why."""
        w = self.config
        headers = dead_letter_headers(
            reason,
            detail,
            queue=w.queue,
            routing_key=delivery.routing_key,
            attempt=attempt,
            worker=self.identity,
            now=self.clock(),
        )
        properties = onward(delivery.properties, headers)
        return await self._publish(
            "dead letter", w.dead_letter_exchange, w.queue, delivery.body, properties
        )

    async def retry(
        self, delivery: Delivery, attempt: int, delay: timedelta, reason: Reason, detail: str
    ) -> Sent:
        """Park attempt+1 in a holding queue that hands it back to the work queue after
        `delay`; the attempt number travels in a header."""
        w = self.config
        holding = retry_queue(w.queue, delay)
        headers = {
            ATTEMPT_HEADER: attempt + 1,
            REASON_HEADER: reason.value,
            DETAIL_HEADER: detail[:1000],
        }
        if self.signing is not None:
            # Re-signed as it will arrive: on the work queue's key, as the next attempt, and
            # due when the holding queue lets it go, so the replay window starts then.
            headers |= sign(
                self.signing.key,
                message_id=delivery.properties.message_id,
                routing_key=w.queue,
                body=delivery.body,
                signed_at=self.clock() + delay,
                attempt=attempt + 1,
            )
        properties = onward(delivery.properties, headers)

        async def declare_holding(channel: Channel) -> None:
            # Declared before every retry: it deletes itself when unused (x-expires).
            await channel.declare_queue(holding, arguments=retry_queue_arguments(w.queue, delay))

        return await self._publish(
            "retry", "", holding, delivery.body, properties, before=declare_holding
        )

    def emit(self, event: Event, facts: RunFacts) -> None:
        """Publish an event, fire and forget: monitoring must never hold up a run, and an
        event while the broker is away is dropped (counted)."""
        channel = self.link.channel_now()
        if channel is None:
            self.events_dropped += 1
            return
        now = self.clock()
        w = self.config
        channel.send_nowait(
            w.events_exchange,
            event_routing_key(event, facts.job),
            event_body(event, facts, queue=w.queue, worker=self.identity, now=now),
            event_properties(event, facts, now),
        )

    async def _publish(
        self,
        what: str,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        before: Callable[[Channel], Awaitable[None]] | None = None,
    ) -> Sent:
        """Publish until the broker confirms, across reconnects. Bounded: REFUSED after
        REFUSED_MAX refusals or NACKED_MAX nacks, AWAY after TRIES_MAX tries (or
        SETTLE_AT_STOP_S once stopping) without a broker; each gives up with a log line."""
        delay_s, deadline = BACKOFF_FIRST_S, None
        refused = nacked = 0
        for _ in range(TRIES_MAX):
            channel: Channel | None = None
            try:
                channel = await self.link.channel(timeout=5)
                if before is not None:
                    await before(channel)
                outcome = await channel.send(exchange, routing_key, body, properties)
            except BrokerError as exc:
                log.debug("%s for %s not sent yet: %s", what, properties.message_id, exc)
                outcome = Outcome.LOST
            if outcome is Outcome.CONFIRMED:
                return Sent.CONFIRMED
            if outcome is Outcome.UNROUTABLE:
                log.error(
                    "%s for %s was unroutable: nothing is bound to exchange %r for key %r",
                    what, properties.message_id, exchange, routing_key,
                )  # fmt: skip
                return Sent.CONFIRMED  # publishing it again would not route it either
            if outcome is Outcome.REFUSED:
                refused = REFUSED_MAX  # the client cannot encode it: it never will
            elif outcome is Outcome.LOST and channel is not None and channel.is_open:
                refused += 1  # lost on a channel that stayed open: refused by another road
            nacked += outcome is Outcome.NACKED
            if refused >= REFUSED_MAX or nacked >= NACKED_MAX:
                how = "refused by the client" if refused else "nacked by the broker"
                log.error(
                    "%s for %s %s %d times; giving up: the message goes to the queue's own "
                    "dead-letter exchange as rejected",
                    what, properties.message_id, how, max(refused, nacked),
                )  # fmt: skip
                return Sent.REFUSED
            if self.stopping():
                deadline = deadline or self.clock() + timedelta(seconds=SETTLE_AT_STOP_S)
                if self.clock() > deadline:
                    break
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, BACKOFF_MAX_S)
        log.error(
            "%s for %s: no broker to confirm it; the message goes back to the queue and is "
            "settled when it returns",
            what, properties.message_id,
        )  # fmt: skip
        return Sent.AWAY
