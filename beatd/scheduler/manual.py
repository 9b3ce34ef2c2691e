"""`beatd trigger`: one run of a job, now, confirmed by the broker before it returns."""

from __future__ import annotations

from beatd.core.config import Config, Job
from beatd.core.errors import BrokerError
from beatd.core.messages import Run
from beatd.core.ports import Clock, Outcome
from beatd.runtime.clock import system_clock
from beatd.runtime.rabbitmq import one_shot
from beatd.scheduler.codecs import Codecs
from beatd.scheduler.scheduler import ensure_queue


async def publish_manual(config: Config, job: Job, clock: Clock = system_clock) -> Run:
    """Publish one run of job now; return it once the broker confirmed it."""
    codecs = Codecs(config.broker, config.signing)
    codec = codecs[job]
    run = Run.manual(job, clock())
    message = codecs.draft(run)(clock())
    link = await one_shot(config.broker, name="trigger")
    try:
        channel = await link.channel(0)
        queue, exchange = codec.queue(job), codec.exchange(job)
        if queue:
            await ensure_queue(link, channel, queue)
        if exchange:
            await channel.declare_exchange(exchange, config.broker.exchange_type)
        [outcome] = await channel.publish([message])
    finally:
        await link.close()
    if outcome is Outcome.UNROUTABLE:
        raise BrokerError(
            f"run {run.id} was unroutable: no queue is bound to exchange "
            f"{message.exchange!r} for key {message.routing_key!r}"
        )
    if outcome is not Outcome.CONFIRMED:
        raise BrokerError(f"the broker did not confirm run {run.id} ({outcome.value})")
    return run
