"""The worker's consuming side: every delivery is judged (core.verdicts, pure), then run
(worker.runner), and settled only after the run: an ack, a retry or a dead letter with the
reason (worker.outbox). It is given its broker, run-id store and clock, so tests drive it over
an in-memory broker; daemon.py wraps it in a process.

Every decision about a delivery is taken synchronously in the consumer callback, so two copies
of one run id arriving together cannot both start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from beatd.core import signing
from beatd.core.config import Config
from beatd.core.errors import BeatdError, BrokerError
from beatd.core.inbound import admit
from beatd.core.messages import Received
from beatd.core.ports import Channel, Clock, Connector, Delivery, RunStore
from beatd.core.verdicts import (
    Event,
    Phase,
    Reason,
    RunFacts,
    Verdict,
    attempt_of,
    event_for,
    judge,
    retry_delay,
)
from beatd.worker import outbox, runner
from beatd.worker.bindings import BindingWatch
from beatd.worker.commits import GroupCommit
from beatd.worker.ledger import InFlight, Ledger
from beatd.worker.slots import Slots

log = logging.getLogger("beatd.worker")


class Worker:
    def __init__(
        self,
        config: Config,
        tasks: dict[str, runner.Task],
        store: RunStore,
        connect: Connector,
        *,
        env: Mapping[str, str],
        clock: Clock,
        on_status: Callable[[], None] = lambda: None,
        on_ready: Callable[[], None] = lambda: None,
        on_fatal: Callable[[BeatdError], None] = lambda _error: None,
    ) -> None:
        """on_fatal: the run-id store failed; the owner stops the worker (not guessing)."""
        self.config = config
        self.tasks = tasks
        self.store = store
        self.commits = GroupCommit(store, group=config.worker.concurrency > 1)
        self.env = env
        self.clock = clock
        self.on_status = on_status
        self.on_ready = on_ready
        self.on_fatal = on_fatal
        self.counts: Counter[str] = Counter()
        # (task, result, seconds, finished at): each run that finished; metrics listen here
        self.on_finished: Callable[[str, str, float, datetime], None] = lambda *_a: None
        self.slots = Slots(config.worker.concurrency)
        self.threads = runner.Threads(config.worker.concurrency)
        self.stopping = False
        self.link = connect(
            config.broker,
            name=f"worker {config.worker.queue}",
            setup=self._setup,
            on_state=lambda _state: on_status(),
        )
        self.outbox = outbox.Outbox(
            self.link,
            config.worker,
            identity=f"{socket.gethostname()}:{os.getpid()}",
            clock=clock,
            stopping=lambda: self.stopping,
            signing=config.signing,
        )
        self.bindings = BindingWatch(
            self.link, config.broker, config.worker, stopping=lambda: self.stopping
        )
        self.ledger = Ledger()
        # Calls past their timeout, settled, whose threads still hold a slot until they return.
        self.lingering = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._consumer: tuple[Channel, str] | None = None
        self._ready = False
        self._link_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start keeping the broker link up; consuming starts on every new channel."""
        self._link_task = asyncio.create_task(self.link.run())
        self._watch_task = asyncio.create_task(self.bindings.run())

    async def drain(self) -> None:
        """Stop taking messages, requeue those not started, let running ones finish."""
        self.stopping = True
        self.slots.close()
        if self._consumer is not None:
            channel, tag = self._consumer
            self._consumer = None
            with contextlib.suppress(BrokerError):
                await channel.cancel(tag)
        await self.idle()

    async def idle(self) -> None:
        """Wait until every delivery taken so far is settled (or handed back)."""
        while self._handlers:
            await asyncio.wait(set(self._handlers))

    def interrupt(self) -> None:
        """Stop running commands now (a second SIGTERM). Their messages stay unacked and go
        back to the queue; the run-id store knows they started, so they run again."""
        for handler in list(self._handlers):
            handler.cancel()

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self.link.close()
        if self._link_task is not None:
            await self._link_task

    # The broker side

    async def _setup(self, channel: Channel) -> None:
        """Declare everything and start consuming; runs again on every new channel."""
        w = self.config.worker
        await outbox.declare(channel, self.config.broker, w)
        self.bindings.declared()
        if self.stopping:
            return
        tag = await channel.consume(w.queue, self._on_message, prefetch=w.concurrency)
        self._consumer = (channel, tag)
        if not self._ready:
            self._ready = True
            self.on_ready()
        self.on_status()

    async def check_bindings(self) -> None:
        """Check the exchange and bind the queue again now (also every BIND_CHECK_S)."""
        await self.bindings.check()

    def _on_message(self, delivery: Delivery) -> None:
        if self.stopping:
            delivery.reject(requeue=True)  # not started: it stays in the queue for later
            return
        try:
            self._dispatch(delivery)
        except BeatdError as exc:  # the run-id store failed: do not guess, stop
            self.on_fatal(exc)

    def _dispatch(self, delivery: Delivery) -> None:
        attempt = attempt_of(delivery.properties.headers)
        max_body = self.config.worker.max_body
        try:
            message = admit(delivery.properties, delivery.body, max_body=max_body)
        except ValueError as exc:
            self._spawn(self._refuse(delivery, attempt, Reason.MALFORMED, str(exc)), None)
            return
        now = self.clock()
        unsigned = self._signature_problem(delivery, message, attempt, now)
        if unsigned:
            self._spawn(self._refuse(delivery, attempt, Reason.BAD_SIGNATURE, unsigned), None)
            return
        entry = self.ledger.get(message.id)
        task = self.tasks.get(message.task)
        seen = self.store.get(message.id)
        decision = judge(
            message,
            attempt,
            seen,
            in_progress=entry is not None and entry.attempt == attempt,
            known_task=task is not None,
            now=now,
            task=None if task is None else task.config,
        )
        facts = RunFacts(
            message.id, message.job, message.task, attempt, scheduled_at=message.scheduled_at
        )
        if decision.verdict in (Verdict.DUPLICATE, Verdict.JOIN):
            log.info("run %s (job %s): duplicate, %s", message.id, message.job, decision.detail)
            self.counts["duplicate"] += 1
            self.outbox.emit(Event.DUPLICATE, replace(facts, detail=decision.detail))
            if entry is not None:
                entry.deliveries.append(delivery)  # settled together with the run here
            else:
                delivery.ack()
            return
        if entry is not None:
            self.ledger.park(entry, delivery, attempt)
            return
        entry = InFlight(message, attempt, [delivery], facts)
        self.ledger.open(entry)
        if decision.verdict is Verdict.RUN:
            self._spawn(self._run(entry), entry)
        elif decision.verdict is Verdict.RESUME:
            self._spawn(self._resume(entry), entry)
        else:
            assert decision.reason is not None
            self._spawn(self._reject(entry, decision.reason, decision.detail), entry)

    def _spawn(self, work: Coroutine[object, object, None], entry: InFlight | None) -> None:
        handler = asyncio.create_task(self._guard(work, entry))
        self._handlers.add(handler)
        handler.add_done_callback(lambda done: self._handler_done(done, work, entry))

    async def _guard(self, work: Coroutine[object, object, None], entry: InFlight | None) -> None:
        """Contain a failure of the worker itself (not of a task) to the one message."""
        try:
            await work
        except BeatdError as exc:  # the run-id store failed: stop rather than guess
            self.on_fatal(exc)
            if entry is not None:
                self.ledger.close(entry)  # unacked: it returns to the queue
        except asyncio.CancelledError:  # a forced stop, wherever the run was
            if entry is not None:
                self.ledger.close(entry)
            raise
        except Exception:
            log.exception("internal error; the message goes to the dead-letter queue as rejected")
            if entry is not None:
                self.ledger.reject(entry)

    def _handler_done(
        self,
        handler: asyncio.Task[None],
        work: Coroutine[object, object, None],
        entry: InFlight | None,
    ) -> None:
        self._handlers.discard(handler)
        if handler.cancelled() and entry is not None:
            self.ledger.close(entry)  # a forced stop before it began: _guard never ran
        work.close()  # a no-op once it ran; else it would warn that it was never awaited
        self.on_status()

    # Runs

    async def _run(self, entry: InFlight) -> None:
        message, attempt = entry.message, entry.attempt
        if not await self.slots.acquire():  # stopping: it never started, so it goes back
            self.ledger.hand_back(entry)
            return
        lingering: asyncio.Future[None] | None = None
        try:
            if not any(d.channel.is_open for d in entry.deliveries):
                # Its channel closed while it waited: the broker hands it out again.
                self.ledger.close(entry)
                return
            now = self.clock()
            if attempt == 1 and message.expires_at is not None and now >= message.expires_at:
                await self._reject(entry, Reason.EXPIRED, "expired while waiting for a free slot")
                return
            task = self.tasks.get(message.task)
            if task is None:  # removed by a reload while it waited
                await self._reject(entry, Reason.UNKNOWN_TASK, "removed from the worker's file")
                return
            self.store.start(message.id, attempt)
            await self.commits.durable()  # its start is on disk before it runs
            entry.facts = replace(entry.facts, started_at=now)
            self.outbox.emit(Event.STARTED, entry.facts)
            self.on_status()
            invocation = runner.Invocation(
                run_id=message.id,
                job=message.job,
                task=message.task,
                attempt=attempt,
                scheduled_at=message.scheduled_at,
                args=message.args,
                kwargs=message.kwargs,
                body=entry.deliveries[0].body,
            )
            try:
                result = await runner.run(task, invocation, self.env, self.threads)
            except asyncio.CancelledError:
                log.warning(
                    "run %s (job %s): interrupted by a forced stop", message.id, message.job
                )
                self.ledger.close(entry)  # unacked: the broker requeues it
                raise
            entry.facts = replace(
                entry.facts,
                finished_at=self.clock(),
                exit_code=result.exit_code,
                output=result.output,
            )
            lingering = result.lingering
            await self._conclude(entry, task, result)
        finally:
            if lingering is None or lingering.done():
                self.slots.release()
            else:
                # Settled, but its thread cannot be stopped: the slot stays taken until it
                # returns, and nothing (a drain included) waits for it.
                self.lingering += 1
                lingering.add_done_callback(self._linger_done)

    def _linger_done(self, _future: asyncio.Future[None]) -> None:
        self.lingering -= 1
        self.slots.release()
        self.on_status()

    @property
    def running(self) -> int:
        """Runs started and not yet settled (not counting calls left past their timeout)."""
        return self.slots.busy - self.lingering

    async def _conclude(self, entry: InFlight, task: runner.Task, result: runner.Result) -> None:
        message, attempt, facts = entry.message, entry.attempt, entry.facts
        took = _duration_s(facts)
        self.on_finished(message.task, result.status.value, took, facts.finished_at or self.clock())
        if result.status is runner.Status.SUCCEEDED:
            self.store.finish(message.id, attempt, Phase.DONE)
            await self.commits.durable()  # its end is on disk before the broker hears
            returned = f", returned {result.output}" if task.function and result.output else ""
            log.info(
                "run %s (job %s): succeeded in %.3fs%s", message.id, message.job, took, returned
            )
            self.counts["succeeded"] += 1
            self.outbox.emit(Event.SUCCEEDED, facts)
            self.ledger.ack(entry)
            return
        reason = {
            runner.Status.TIMED_OUT: Reason.TIMED_OUT,
            runner.Status.REFUSED: Reason.REFUSED,
        }.get(result.status, Reason.FAILED)
        if attempt <= task.config.retries and reason is not Reason.REFUSED:
            delay = retry_delay(task.config.retry_delay, attempt)
            self.store.finish(message.id, attempt, Phase.RETRY, reason.value, result.detail)
            await self.commits.durable()
            log.warning(
                "run %s (job %s): %s after %.3fs (%s); retry %d of %d in %gs",
                message.id, message.job, reason.value, took, result.detail,
                attempt, task.config.retries, delay.total_seconds(),
            )  # fmt: skip
            self.counts["retried"] += 1
            event = event_for(reason)
            failed = replace(facts, reason=reason.value, detail=result.detail, retry_in=delay)
            self.outbox.emit(event, failed)
            sent = await self.outbox.retry(
                entry.deliveries[0], attempt, delay, reason, result.detail
            )
            await self._after(entry, sent, reason.value, result.detail)
            return
        self.store.finish(message.id, attempt, Phase.DEAD, reason.value, result.detail)
        await self.commits.durable()
        gave_up = f"; gave up after {attempt} attempts" if attempt > 1 else ""
        log.warning(
            "run %s (job %s): %s after %.3fs (%s)%s; dead-lettered",
            message.id, message.job, reason.value, took, result.detail, gave_up,
        )  # fmt: skip
        self.counts[reason.value] += 1
        self.outbox.emit(
            event_for(reason), replace(facts, reason=reason.value, detail=result.detail)
        )
        sent = await self.outbox.dead_letter(entry.deliveries[0], attempt, reason, result.detail)
        await self._after(entry, sent, reason.value, result.detail)

    async def _resume(self, entry: InFlight) -> None:
        """A run finished badly, then the worker died before the broker heard: tell it now."""
        message, attempt = entry.message, entry.attempt
        seen = self.store.get(message.id)
        assert seen is not None
        try:
            reason = Reason(seen.reason)
        except ValueError:
            reason = Reason.FAILED
        log.info(
            "run %s (job %s): settling what finished before a restart", message.id, message.job
        )
        if seen.phase is Phase.RETRY:
            task = self.tasks.get(message.task)
            first = task.config.retry_delay if task is not None else timedelta(seconds=10)
            delay = retry_delay(first, attempt)
            sent = await self.outbox.retry(entry.deliveries[0], attempt, delay, reason, seen.detail)
        else:
            sent = await self.outbox.dead_letter(entry.deliveries[0], attempt, reason, seen.detail)
        await self._after(entry, sent, seen.reason, seen.detail)

    async def _reject(self, entry: InFlight, reason: Reason, detail: str) -> None:
        """Dead-letter a run that will not run here."""
        message, attempt = entry.message, entry.attempt
        log.warning(
            "run %s (job %s): rejected, %s: %s", message.id, message.job, reason.value, detail
        )
        self.counts[reason.value] += 1
        self.outbox.emit(
            event_for(reason), replace(entry.facts, reason=reason.value, detail=detail)
        )
        record = reason is Reason.INTERRUPTED
        if record:
            self.store.finish(message.id, attempt, Phase.DEAD, reason.value, detail)
            await self.commits.durable()
        sent = await self.outbox.dead_letter(entry.deliveries[0], attempt, reason, detail)
        await self._after(entry, sent, reason.value, detail, record=record)

    def _signature_problem(
        self, delivery: Delivery, message: Received, attempt: int, now: datetime
    ) -> str:
        """Why a run is not one this worker's keys vouch for ("" if it is, or no signing:)."""
        keys = self.config.signing
        if keys is None:
            return ""
        expires = None if message.expires_at is None else message.expires_at - message.scheduled_at
        check = signing.verify(
            keys,
            delivery.properties.headers,
            message_id=delivery.properties.message_id,
            routing_key=delivery.routing_key,
            body=delivery.body,
            attempt=attempt,
            now=now,
            window=signing.window_for(keys, expires),
        )
        return "" if check.ok else check.detail

    async def _refuse(self, delivery: Delivery, attempt: int, reason: Reason, detail: str) -> None:
        """Dead-letter a delivery that is not a run to consider (malformed, badly signed)."""
        headers = delivery.properties.headers
        job = headers.get("beatd-job")
        facts = RunFacts(
            run_id=delivery.properties.message_id,
            job=job if isinstance(job, str) else "",
            task=delivery.properties.type or "",
            attempt=attempt,
            reason=reason.value,
            detail=detail,
        )
        log.warning(
            "message %r (routing key %r): rejected, %s: %s",
            facts.run_id, delivery.routing_key, reason.value, detail,
        )  # fmt: skip
        self.counts[reason.value] += 1
        self.outbox.emit(Event.REJECTED, facts)
        sent = await self.outbox.dead_letter(delivery, attempt, reason, detail)
        if sent is outbox.Sent.CONFIRMED:
            delivery.ack()
        else:  # REFUSED: the queue's own dead-letter exchange takes it; AWAY: back for later
            delivery.reject(requeue=sent is outbox.Sent.AWAY)

    async def _after(
        self, entry: InFlight, sent: outbox.Sent, reason: str, detail: str, *, record: bool = True
    ) -> None:
        """Settle a run once its dead letter or retry was published (or can never be)."""
        if sent is outbox.Sent.AWAY:  # the run-id store settles it when it comes back
            self.ledger.hand_back(entry)
            return
        if record:
            self.store.finish(entry.message.id, entry.attempt, Phase.DONE, reason, detail)
            await self.commits.durable()
        if sent is outbox.Sent.CONFIRMED:
            self.ledger.ack(entry)
            return
        # It can never be published (issue 9 item 2): rejected without requeue, the work
        # queue's x-dead-letter-exchange takes it, and the slot is free again.
        self.ledger.reject(entry)


def _duration_s(facts: RunFacts) -> float:
    if facts.started_at is None or facts.finished_at is None:
        return 0.0
    return (facts.finished_at - facts.started_at).total_seconds()
