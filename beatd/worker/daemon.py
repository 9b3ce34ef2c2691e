"""`beatd worker`: the executor daemon. It consumes beatd messages, runs the tasks its own
file defines (beatd.worker.runner), and settles each message only after the run: ack, a retry, or a
dead letter with the reason. beatd.core.verdicts decides (pure), beatd.worker.outbox publishes, and
beatd.runtime.seen remembers run ids; this module consumes, runs and settles.

Every decision about a delivery is taken synchronously in the consumer callback, so two
copies of one run id arriving together cannot both start. Signal handlers and the file
watcher only set flags and wake the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beatd.core.config import Config, read_config
from beatd.core.errors import BeatdError, BrokerError, ConfigError, Problem
from beatd.core.messages import Received, parse_beatd
from beatd.core.verdicts import (
    Event,
    Reason,
    RunFacts,
    Verdict,
    attempt_of,
    event_for,
    judge,
    retry_delay,
)
from beatd.runtime.rabbitmq import Channel, Delivery, Link
from beatd.runtime.seen import Phase, SeenStore
from beatd.runtime.systemd import Notifier
from beatd.runtime.watch import FileWatch
from beatd.worker import outbox, runner

log = logging.getLogger("beatd.worker")

Clock = Callable[[], datetime]
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 78
STATUS_EVERY_S = 1.0  # systemd STATUS= at most this often: runs can finish by the thousand


def system_clock() -> datetime:
    return datetime.now(UTC)


def run(path: str, env: Mapping[str, str]) -> int:
    """Entry point for `beatd worker`; returns the exit code."""
    try:
        config, tasks = load(path, env)
        store = SeenStore(store_path(config), config.worker.dedupe_size)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("cannot start: %s is invalid", path)
        return EXIT_CONFIG
    except BeatdError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    try:
        return asyncio.run(Worker(path, env, config, tasks, store).run())
    finally:
        store.close()


def load(path: str, env: Mapping[str, str]) -> tuple[Config, dict[str, runner.Task]]:
    """Read a worker's file and resolve its tasks; ConfigError names every problem."""
    config = read_config(path, env)
    if not config.tasks:
        raise ConfigError(
            [Problem(path, None, "no tasks: a worker runs only the tasks its file defines")]
        )
    return config, runner.prepare(config.tasks, path, env, os.geteuid())


def store_path(config: Config) -> Path:
    """The run-id store: `worker.state`, else beside the scheduler's state, per queue."""
    if config.worker.state is not None:
        return config.worker.state
    return config.state.parent / f"worker-{config.worker.queue}.db"


@dataclass
class InFlight:
    """A run id this worker is settling: every delivery of it is acked together at the end."""

    message: Received
    attempt: int
    deliveries: list[Delivery]
    facts: RunFacts


class Slots:
    """At most `size` runs at once; close() turns away whoever still waits (at stop)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.free = size
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._closed = False

    @property
    def busy(self) -> int:
        return self.size - self.free

    async def acquire(self) -> bool:
        if self._closed:
            return False
        if self.free and not self._waiters:
            self.free -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes straight to the next in line
                return
        self.free += 1

    def close(self) -> None:
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)


class Worker:
    def __init__(
        self,
        path: str,
        env: Mapping[str, str],
        config: Config,
        tasks: dict[str, runner.Task],
        store: SeenStore,
        *,
        clock: Clock = system_clock,
        notifier: Notifier | None = None,
    ) -> None:
        self.path = path
        self.env = env
        self.config = config
        self.tasks = tasks
        self.store = store
        self.clock = clock
        self.notifier = notifier or Notifier(env)
        self.counts: Counter[str] = Counter()
        self.slots = Slots(config.worker.concurrency)
        self.threads = runner.Threads(config.worker.concurrency)
        self.link = Link(
            config.broker,
            name=f"worker {config.worker.queue}",
            setup=self._setup,
            on_state=lambda _state: self._status_soon(),
        )
        self.outbox = outbox.Outbox(
            self.link,
            config.worker,
            identity=f"{socket.gethostname()}:{os.getpid()}",
            clock=clock,
            stopping=lambda: self._stop_signals > 0,
        )
        self._inflight: dict[str, InFlight] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._consumer: tuple[Channel, str] | None = None
        self._wake = asyncio.Event()
        self._stop_signals = 0
        self._reload = False
        self._status_timer: asyncio.TimerHandle | None = None
        self._ready = False
        self._exit_code = EXIT_OK

    # Lifecycle

    async def run(self) -> int:
        """Consume until SIGTERM/SIGINT, then drain; return the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        watch = FileWatch(self.path, self.request_reload)
        watch.start()
        link_task = asyncio.create_task(self.link.run())
        log.info(
            "worker for queue %r: %d tasks from %s, %d at once (run ids: %s)",
            self.config.worker.queue,
            len(self.tasks),
            self.path,
            self.slots.size,
            self.store.path,
        )
        drain: asyncio.Task[None] | None = None
        try:
            while drain is None or not drain.done():
                await self._sleep()
                self._wake.clear()
                if self._stop_signals and drain is None:
                    drain = asyncio.create_task(self._drain())
                    drain.add_done_callback(lambda _t: self._wake.set())
                if self._reload:
                    self._reload = False
                    self._reload_tasks()
                if self.notifier.watchdog_s:
                    self.notifier.send(WATCHDOG=1)
            drain.result()
        finally:
            watch.stop()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self.link.close()
            await link_task
            counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
            dropped = self.outbox.events_dropped
            events = f"; {dropped} events dropped while the broker was away" if dropped else ""
            log.info("stopped; %s%s", counts or "nothing ran", events)
            self.notifier.send(STATUS="stopped")
        return self._exit_code

    async def _sleep(self) -> None:
        timeout = self.notifier.watchdog_s / 2 if self.notifier.watchdog_s else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def request_stop(self) -> None:
        self._stop_signals += 1
        if self._stop_signals == 2:
            self._force_stop()
        self._wake.set()

    def _fail(self, error: BeatdError) -> None:
        """Stop (gracefully) with exit code 1, so systemd restarts the worker."""
        log.critical("stopping: %s", error)
        self._exit_code = EXIT_FAILED
        if not self._stop_signals:
            self.request_stop()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    async def _drain(self) -> None:
        """Stop taking messages, requeue those not started, let running ones finish."""
        self.notifier.send(STOPPING=1)
        log.info("stopping: taking no new runs; waiting for %d running", self.slots.busy)
        self.slots.close()
        if self._consumer is not None:
            channel, tag = self._consumer
            self._consumer = None
            with contextlib.suppress(BrokerError):
                await channel.cancel(tag)
        while self._handlers:
            await asyncio.wait(set(self._handlers))

    def _force_stop(self) -> None:
        """A second SIGTERM/SIGINT: stop running commands now. Their messages stay unacked and
        go back to the queue; the run-id store knows they started, so they run again."""
        log.warning("stopping now: interrupting %d run(s), to run again later", self.slots.busy)
        self._exit_code = EXIT_FAILED
        for handler in list(self._handlers):
            handler.cancel()

    def _reload_tasks(self) -> None:
        self.notifier.reloading()
        try:
            config, tasks = load(self.path, self.env)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("reload failed; still running the %d tasks loaded before", len(self.tasks))
            self.notifier.send(READY=1, STATUS=self._status())
            return
        if (config.broker, config.worker) != (self.config.broker, self.config.worker):
            log.warning("changes to broker: and worker: take effect when the worker restarts")
        added = sorted(tasks.keys() - self.tasks.keys())
        removed = sorted(self.tasks.keys() - tasks.keys())
        self.tasks = tasks
        log.info(
            "reloaded %s: %d tasks (added: %s; removed: %s)",
            self.path,
            len(tasks),
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )
        self.notifier.send(READY=1, STATUS=self._status())

    # The broker side

    async def _setup(self, channel: Channel) -> None:
        """Declare everything and start consuming; runs again on every new channel."""
        w = self.config.worker
        await outbox.declare(channel, self.config.broker, w)
        if self._stop_signals:
            return
        tag = await channel.consume(w.queue, self._on_message, prefetch=w.concurrency)
        self._consumer = (channel, tag)
        if not self._ready:
            self._ready = True
            log.info("consuming %r (bindings: %s)", w.queue, ", ".join(w.bindings))
            self.notifier.send(READY=1, STATUS=self._status())
        self._status_soon()

    def _on_message(self, delivery: Delivery) -> None:
        if self._stop_signals:
            delivery.reject(requeue=True)  # not started: it stays in the queue for later
            return
        try:
            self._dispatch(delivery)
        except BeatdError as exc:  # the run-id store failed: do not guess, stop
            self._fail(exc)

    def _dispatch(self, delivery: Delivery) -> None:
        attempt = attempt_of(delivery.properties.headers)
        try:
            message = parse_beatd(delivery.body)
        except ValueError as exc:
            self._spawn(self._reject_malformed(delivery, attempt, str(exc)), None)
            return
        now = self.clock()
        entry = self._inflight.get(message.id)
        decision = judge(
            message,
            attempt,
            self.store.get(message.id),
            in_progress=entry is not None and entry.attempt == attempt,
            known_task=message.task in self.tasks,
            now=now,
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
            # Another attempt of this id is still being settled here (a retry delay shorter
            # than that takes): hand it back for a moment rather than run both at once.
            delivery.reject(requeue=True)
            return
        entry = InFlight(message, attempt, [delivery], facts)
        self._inflight[message.id] = entry
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
        handler.add_done_callback(self._handler_done)

    async def _guard(self, work: Coroutine[object, object, None], entry: InFlight | None) -> None:
        """Contain a failure of the worker itself (not of a task) to the one message."""
        try:
            await work
        except BeatdError as exc:  # the run-id store failed: stop rather than guess
            self._fail(exc)
            if entry is not None:
                self._inflight.pop(entry.message.id, None)  # unacked: it returns to the queue
        except Exception:
            log.exception("internal error; the message goes to the dead-letter queue as rejected")
            if entry is not None:
                self._inflight.pop(entry.message.id, None)
                for delivery in entry.deliveries:
                    # The queue's x-dead-letter-exchange takes it (header x-death: rejected).
                    delivery.reject(requeue=False)

    def _handler_done(self, handler: asyncio.Task[None]) -> None:
        self._handlers.discard(handler)
        self._status_soon()

    # Runs

    async def _run(self, entry: InFlight) -> None:
        message, attempt = entry.message, entry.attempt
        if not await self.slots.acquire():  # stopping: it never started, so it goes back
            self._forget(entry, requeue=True)
            return
        try:
            if not any(d.channel.is_open for d in entry.deliveries):
                # Its channel closed while it waited: the broker hands it out again.
                self._forget(entry, requeue=False)
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
            entry.facts = replace(entry.facts, started_at=now)
            self.outbox.emit(Event.STARTED, entry.facts)
            self._status_soon()
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
                self._inflight.pop(message.id, None)  # unacked: the broker requeues it
                raise
            entry.facts = replace(
                entry.facts,
                finished_at=self.clock(),
                exit_code=result.exit_code,
                output=result.output,
            )
            await self._conclude(entry, task, result)
            if result.lingering is not None:
                await result.lingering
        finally:
            self.slots.release()

    async def _conclude(self, entry: InFlight, task: runner.Task, result: runner.Result) -> None:
        message, attempt, facts = entry.message, entry.attempt, entry.facts
        took = _duration_s(facts)
        if result.status is runner.Status.SUCCEEDED:
            self.store.finish(message.id, attempt, Phase.DONE)
            log.info("run %s (job %s): succeeded in %.3fs", message.id, message.job, took)
            self.counts["succeeded"] += 1
            self.outbox.emit(Event.SUCCEEDED, facts)
            self._settle(entry)
            return
        reason = Reason.TIMED_OUT if result.status is runner.Status.TIMED_OUT else Reason.FAILED
        if attempt <= task.config.retries:
            delay = retry_delay(task.config.retry_delay, attempt)
            self.store.finish(message.id, attempt, Phase.RETRY, reason.value, result.detail)
            log.warning(
                "run %s (job %s): %s after %.3fs (%s); retry %d of %d in %gs",
                message.id, message.job, reason.value, took, result.detail,
                attempt, task.config.retries, delay.total_seconds(),
            )  # fmt: skip
            self.counts["retried"] += 1
            event = event_for(reason)
            failed = replace(facts, reason=reason.value, detail=result.detail, retry_in=delay)
            self.outbox.emit(event, failed)
            if await self.outbox.retry(entry.deliveries[0], attempt, delay, reason, result.detail):
                self.store.finish(message.id, attempt, Phase.DONE, reason.value, result.detail)
                self._settle(entry)
            else:
                self._forget(entry, requeue=False)
            return
        self.store.finish(message.id, attempt, Phase.DEAD, reason.value, result.detail)
        gave_up = f"; gave up after {attempt} attempts" if attempt > 1 else ""
        log.warning(
            "run %s (job %s): %s after %.3fs (%s)%s; dead-lettered",
            message.id, message.job, reason.value, took, result.detail, gave_up,
        )  # fmt: skip
        self.counts[reason.value] += 1
        self.outbox.emit(
            event_for(reason), replace(facts, reason=reason.value, detail=result.detail)
        )
        if await self.outbox.dead_letter(entry.deliveries[0], attempt, reason, result.detail):
            self.store.finish(message.id, attempt, Phase.DONE, reason.value, result.detail)
            self._settle(entry)
        else:
            self._forget(entry, requeue=False)

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
        if sent:
            self.store.finish(message.id, attempt, Phase.DONE, seen.reason, seen.detail)
            self._settle(entry)
        else:
            self._forget(entry, requeue=False)

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
        if await self.outbox.dead_letter(entry.deliveries[0], attempt, reason, detail):
            if record:
                self.store.finish(message.id, attempt, Phase.DONE, reason.value, detail)
            self._settle(entry)
        else:
            self._forget(entry, requeue=False)

    async def _reject_malformed(self, delivery: Delivery, attempt: int, detail: str) -> None:
        headers = delivery.properties.headers
        job = headers.get("beatd-job")
        facts = RunFacts(
            run_id=delivery.properties.message_id,
            job=job if isinstance(job, str) else "",
            task=delivery.properties.type or "",
            attempt=attempt,
            reason=Reason.MALFORMED.value,
            detail=detail,
        )
        log.warning(
            "message %r (routing key %r): rejected, malformed: %s",
            facts.run_id, delivery.routing_key, detail,
        )  # fmt: skip
        self.counts[Reason.MALFORMED.value] += 1
        self.outbox.emit(Event.REJECTED, facts)
        if await self.outbox.dead_letter(delivery, attempt, Reason.MALFORMED, detail):
            delivery.ack()

    def _settle(self, entry: InFlight) -> None:
        """Ack every delivery of the run. One whose channel has gone is redelivered by the
        broker, and the run-id store then acks it as a duplicate."""
        self._inflight.pop(entry.message.id, None)
        for delivery in entry.deliveries:
            delivery.ack()

    def _forget(self, entry: InFlight, *, requeue: bool) -> None:
        self._inflight.pop(entry.message.id, None)
        if requeue:
            for delivery in entry.deliveries:
                delivery.reject(requeue=True)

    # systemd

    def _status(self) -> str:
        c = self.counts
        return (
            f"broker {self.link.state}; {self.slots.busy}/{self.slots.size} running; "
            f"{c['succeeded']} succeeded, {c['failed'] + c['timed_out']} failed, "
            f"{c['duplicate']} duplicates"
        )

    def _status_soon(self) -> None:
        if self._status_timer is None:
            loop = asyncio.get_running_loop()
            self._status_timer = loop.call_later(STATUS_EVERY_S, self._send_status)

    def _send_status(self) -> None:
        self._status_timer = None
        self.notifier.send(STATUS=self._status())


def _duration_s(facts: RunFacts) -> float:
    if facts.started_at is None or facts.finished_at is None:
        return 0.0
    return (facts.finished_at - facts.started_at).total_seconds()
