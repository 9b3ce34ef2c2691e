"""`beatd run`: the scheduler daemon.

The loop: sleep until the earliest due slot (a heap, so a pass touches only the due jobs, not
all of them), plan those jobs (beatd.core.plan, pure), publish the runs with pipelined confirms,
record what the broker confirmed, repeat. Signal handlers and the file watcher only set
flags and wake the loop; the loop does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from beatd.compat.celery_codec import celery_message
from beatd.compat.celery_codec import route as celery_route
from beatd.core import plan
from beatd.core.config import Config, Job, MessageFormat, read_config
from beatd.core.errors import BeatdError, BrokerError, ConfigError
from beatd.core.messages import (
    BeatdTemplate,
    Draft,
    Outgoing,
    Run,
    Trigger,
    beatd_message,
    iso_utc,
)
from beatd.runtime.rabbitmq import Channel, Link, Outcome, one_shot
from beatd.runtime.state import JobState, State
from beatd.runtime.systemd import Notifier
from beatd.runtime.watch import FileWatch

log = logging.getLogger("beatd.scheduler")

Clock = Callable[[], datetime]
MAX_SLEEP_S = 60.0  # re-read the wall clock at least this often, so a clock step is noticed
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
SHUTDOWN_GRACE_S = 10.0  # how long SIGTERM waits for confirms of the batch in flight
# Plan and draft a burst this long before its slot (10,000 runs take ~0.3 s to draft), so
# that at the slot only the sending is left: the last of 1,000 runs leaves ~25 ms sooner.
PREPARE_AHEAD_S = 0.5
EXIT_CONFIG = 78


def system_clock() -> datetime:
    return datetime.now(UTC)


def encode(run: Run, published_at: datetime, default_exchange: str) -> Outgoing:
    """The message for a run, in the job's format."""
    if run.job.format is MessageFormat.CELERY:
        return celery_message(run, published_at, default_exchange)
    return beatd_message(run, published_at, default_exchange)


class Encoder:
    """encode() with each job's beatd-format template kept between runs."""

    def __init__(self, default_exchange: str) -> None:
        self.default_exchange = default_exchange
        self._templates: dict[str, BeatdTemplate] = {}

    def __call__(self, run: Run, published_at: datetime) -> Outgoing:
        return self.draft(run)(published_at)

    def draft(self, run: Run) -> Draft:
        job = run.job
        if job.format is MessageFormat.CELERY:
            return functools.partial(_encode_at, run, self.default_exchange)
        template = self._templates.get(job.name)
        if template is None or template.job is not job:
            template = self._templates[job.name] = BeatdTemplate(job, self.default_exchange)
        return template.draft(run)


def _encode_at(run: Run, exchange: str, published_at: datetime) -> Outgoing:
    return encode(run, published_at, exchange)


@dataclass
class Prepared:
    """A burst drafted before its slot: planned as of `at`, each message waiting only for the
    time it is sent. At the slot, publishing is all that is left to do."""

    at: datetime
    plans: list[plan.JobPlan]
    drafts: list[Draft]
    expired: set[str]


@dataclass
class Counters:
    published: int = 0
    unroutable: int = 0
    missed: int = 0
    expired: int = 0


class Scheduler:
    def __init__(
        self,
        path: str,
        env: Mapping[str, str],
        *,
        clock: Clock = system_clock,
        notifier: Notifier | None = None,
        watch_file: bool = True,
    ) -> None:
        self.path = path
        self.env = env
        self.clock = clock
        self.notifier = notifier or Notifier(env)
        self.watch_file = watch_file
        self.counters = Counters()
        self.jobs: dict[str, Job] = {}
        self.states: dict[str, JobState] = {}
        self._due: dict[str, datetime] = {}  # each enabled job's next due time
        self._heap: list[tuple[datetime, str]] = []  # may hold stale entries; _due decides
        self._retry_s: dict[str, float] = {}
        self._parked: set[str] = set()  # due while the broker is away
        self._prepared: Prepared | None = None
        self._declared_queues: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stop = False
        self._reload = False
        self._unroutable_logged: dict[tuple[str, str], float] = {}
        self.config: Config
        self.state: State
        self.link: Link
        self._encoder: Encoder

    # Lifecycle

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit code."""
        try:
            self.config = read_config(self.path, self.env)
            self.state = State(self.config.state)
            self.states = self.state.load()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("cannot start: %s is invalid", self.path)
            return EXIT_CONFIG
        except BeatdError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_CONFIG
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        watch = FileWatch(self.path, self.request_reload) if self.watch_file else None
        if watch is not None:
            watch.start()
        self._apply(self.config)
        self.link = self._new_link(self.config)
        self._link_task = asyncio.create_task(self.link.run())
        log.info(
            "scheduling %d jobs from %s (state: %s)",
            len(self.jobs),
            self.path,
            self.config.state,
        )
        self.notifier.send(READY=1, STATUS=self._status())
        try:
            await self._loop()
        finally:
            self.notifier.send(STOPPING=1)
            if watch is not None:
                watch.stop()
            await self.link.close()
            await self._link_task
            self.state.close()
            log.info("stopped; %s", self._summary())
        return 0

    def request_stop(self) -> None:
        self._stop = True
        self._stopping.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def wake(self) -> None:
        """Re-read the clock and publish whatever is due (tests with a fake clock use this)."""
        self._wake.set()

    def _new_link(self, config: Config) -> Link:
        exchanges = {config.broker.exchange} | {
            job.exchange
            for job in config.jobs
            if job.exchange and job.format is MessageFormat.BEATD
        }
        kind = config.broker.exchange_type

        async def setup(channel: Channel) -> None:
            for name in sorted(exchanges):
                await channel.declare_exchange(name, kind)
            self._declared_queues.clear()

        def on_state(state: str) -> None:
            self.notifier.send(STATUS=self._status())
            if state == "up":
                self._wake.set()

        return Link(config.broker, name="scheduler", setup=setup, on_state=on_state)

    # The loop

    async def _loop(self) -> None:
        while not self._stop:
            self._wake.clear()
            if self._reload:
                self._reload = False
                self._prepared = None  # drafted from the old file; _apply reschedules its jobs
                await self._reload_config()
            await self._run_pass()
            if self.notifier.watchdog_s:
                self.notifier.send(WATCHDOG=1)
            if not self._stop:
                self._prepare_next()
                await self._sleep()

    async def _run_pass(self) -> None:
        """One pass; if SIGTERM comes meanwhile, give the batch in flight a few seconds to be
        confirmed, then abandon it (unrecorded slots are published again after a restart)."""
        task = asyncio.create_task(self._pass())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                done, _ = await asyncio.wait([task], timeout=SHUTDOWN_GRACE_S)
                if not done:
                    log.warning("stopping without confirms for the batch in flight")
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
        finally:
            stopping.cancel()
        task.result()

    async def _sleep(self) -> None:
        timeout = MAX_SLEEP_S
        wake_at = self._next_wake()
        if wake_at is not None:
            timeout = min(timeout, (wake_at - self.clock()).total_seconds())
        if self.notifier.watchdog_s:
            timeout = min(timeout, self.notifier.watchdog_s / 2)
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _next_wake(self) -> datetime | None:
        """The drafted burst's slot; else time to draft the next one; else its slot."""
        if self._prepared is not None:
            return self._prepared.at
        top = self._peek()
        if top is None:
            return None
        if self.link.channel_now() is None:
            return top[0]
        return top[0] - timedelta(seconds=PREPARE_AHEAD_S)

    def _prepare_next(self) -> None:
        """Draft the next burst if its slot is less than PREPARE_AHEAD_S away."""
        top = self._peek()
        if self._prepared is not None or top is None or self.link.channel_now() is None:
            return
        at = top[0]
        if (at - self.clock()).total_seconds() > PREPARE_AHEAD_S:
            return
        names = self._pop_due(at)
        plans: list[plan.JobPlan] = []
        expired: set[str] = set()
        drafts = list(self._drafts(names, at, plans, expired))
        self._prepared = Prepared(at, plans, drafts, expired)

    def _drafts(
        self, names: list[str], now: datetime, plans: list[plan.JobPlan], expired: set[str]
    ) -> Iterator[Draft]:
        """Plan each job as of now and yield a draft of each run to send; the plans go into
        plans, and runs whose `expires` passed before they could be sent into expired."""
        for name in names:
            job_plan = self._plan(self.jobs[name], now)
            plans.append(job_plan)
            for run in job_plan.runs:
                if run.expires_at is not None and run.expires_at <= now:
                    expired.add(run.id)
                    self._log_expired(run)
                else:
                    yield self._encoder.draft(run)

    def _pop_due(self, now: datetime) -> list[str]:
        due = []
        while (top := self._peek()) is not None and top[0] <= now:
            heapq.heappop(self._heap)
            del self._due[top[1]]
            due.append(top[1])
        return due

    def _peek(self) -> tuple[datetime, str] | None:
        """The earliest live heap entry (stale ones, of removed or rescheduled jobs, go)."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    async def _pass(self) -> None:
        now = self.clock()
        prepared = self._prepared
        if prepared is not None and prepared.at <= now:
            self._prepared = None
        else:
            prepared = None
        due = self._pop_due(now)
        drafted = [p.job.name for p in prepared.plans] if prepared else []
        channel = self.link.channel_now()
        if channel is None:
            # The broker is away: park the due jobs until it is back, and plan them then, so
            # whatever went past its grace meanwhile is handled by the misfire policy.
            self._parked.update(due + drafted)
            return
        due += [name for name in self._parked if name in self.jobs and name not in due]
        self._parked.clear()
        if not due and prepared is None:
            return
        await self._declare_queues(channel, due + drafted)
        plans = prepared.plans if prepared else []
        expired = prepared.expired if prepared else set()
        clock = self.clock

        def messages() -> Iterator[Outgoing]:
            # Each message is stamped with its real send time as it goes.
            if prepared is not None:
                for draft in prepared.drafts:
                    yield draft(clock())
            # Jobs due without a draft (a slot that came due while busy, or after an outage):
            # planning interleaves with sending, so the first run goes out at once.
            for draft in self._drafts(due, now, plans, expired):
                yield draft(clock())

        results = iter(await channel.publish(messages()))
        outcomes = [None if run.id in expired else next(results) for p in plans for run in p.runs]
        self._record(plans, outcomes, now)
        self.notifier.send(STATUS=self._status())

    def _plan(self, job: Job, now: datetime) -> plan.JobPlan:
        state = plan.current_state(job, self.states.get(job.name), now)
        job_plan = plan.plan_job(job, state, now)
        if job_plan.dropped is not None:  # the catch-up runs, if any, are logged below
            log.info(
                "job %r: dropped %d missed slot(s) up to %s (misfire: %s)",
                job.name,
                job_plan.dropped.count,
                iso_utc(job_plan.dropped.last),
                job.misfire.value,
            )
        for run in job_plan.runs:
            if run.trigger is Trigger.CATCHUP:
                log.info("job %r: catching up missed slot %s", job.name, iso_utc(run.slot))
        return job_plan

    def _log_expired(self, run: Run) -> None:
        log.warning(
            "job %r: run %s expired at %s before it could be published; dropped",
            run.job.name,
            run.id,
            iso_utc(run.expires_at or run.slot),
        )

    async def _declare_queues(self, channel: Channel, due: Sequence[str]) -> None:
        """Celery-format runs name a queue that must exist before publishing, as Celery's own
        producer makes sure; declare each once per channel."""
        for name in due:
            job = self.jobs[name]
            if job.format is not MessageFormat.CELERY:
                continue
            queue = celery_route(job)[2]
            if queue and queue not in self._declared_queues:
                await ensure_celery_queue(self.link, channel, queue)
                self._declared_queues.add(queue)

    def _record(
        self, plans: list[plan.JobPlan], outcomes: list[Outcome | None], now: datetime
    ) -> None:
        """Move each job's cursor past what the broker confirmed (None: expired before
        publishing, also handled) and save; runs after a LOST or NACKED one are retried."""
        changed: list[JobState] = []
        unroutable: list[Run] = []
        position = 0
        confirmed = Outcome.CONFIRMED
        for job_plan in plans:
            job, runs = job_plan.job, job_plan.runs
            if len(runs) == 1 and outcomes[position] is confirmed:
                # A burst is thousands of these: one run, confirmed. Keep it cheap.
                position += 1
                after = job_plan.state
                new = JobState(
                    job.name, job.fingerprint, after.cursor, after.last_slot, now,
                    after.published + 1, after.missed, after.unroutable,
                )  # fmt: skip
                self.counters.published += 1
                self.counters.missed += after.missed - job_plan.before.missed
                changed.append(new)
                self.states[job.name] = new
                self._retry_s.pop(job.name, None)
                self._schedule_next(job)
                continue
            results = outcomes[position : position + len(runs)]
            position += len(runs)
            handled = next(
                (i for i, r in enumerate(results) if r is Outcome.LOST or r is Outcome.NACKED),
                len(runs),
            )
            if handled == len(runs):
                base = job_plan.state
            elif handled:
                last = runs[handled - 1].slot
                base = replace(job_plan.state, cursor=last, last_slot=last)
            else:
                base = job_plan.before
            done = results[:handled]
            published = sum(1 for r in done if r is not None)
            expired = handled - published
            lost_to_no_queue = [
                run for run, r in zip(runs, done, strict=False) if r is Outcome.UNROUTABLE
            ]
            unroutable += lost_to_no_queue
            new = JobState(
                job.name,
                job.fingerprint,
                base.cursor,
                base.last_slot,
                now if published else base.last_published_at,
                base.published + published,
                base.missed + expired,
                base.unroutable + len(lost_to_no_queue),
            )
            self.counters.published += published
            self.counters.unroutable += len(lost_to_no_queue)
            self.counters.expired += expired
            self.counters.missed += new.missed - job_plan.before.missed
            if new != self.states.get(job.name):
                changed.append(new)
                self.states[job.name] = new
            if handled < len(runs):
                delay = self._retry_s.get(job.name, RETRY_FIRST_S)
                self._retry_s[job.name] = min(delay * 2, RETRY_MAX_S)
                log.warning(
                    "job %r: the broker did not confirm %d run(s); retrying in %.0fs",
                    job.name,
                    len(runs) - handled,
                    delay,
                )
                self._schedule(job.name, now + timedelta(seconds=delay))
            else:
                self._retry_s.pop(job.name, None)
                self._schedule_next(job)
        self.state.save(changed)
        if unroutable:
            self._log_unroutable(unroutable)

    def _log_unroutable(self, runs: list[Run]) -> None:
        """One line per exchange and key, once a minute at most: a burst of 10,000 runs with
        no queue bound must not write 10,000 lines."""
        targets: dict[tuple[str, str], list[Run]] = {}
        for run in runs:
            exchange = run.job.exchange or self.config.broker.exchange
            targets.setdefault((exchange, run.job.routing_key or run.job.task), []).append(run)
        now = time.monotonic()
        for (exchange, key), group in targets.items():
            if now - self._unroutable_logged.get((exchange, key), -1e9) < 60:
                continue
            self._unroutable_logged[(exchange, key)] = now
            names = sorted({run.job.name for run in group})
            shown = ", ".join(repr(name) for name in names[:3])
            if len(names) > 3:
                shown += f" and {len(names) - 3} more"
            log.warning(
                "%d run(s) of job %s unroutable: no queue is bound to exchange %r for key %r "
                "(counted in the state file; logged once a minute)",
                len(group),
                shown,
                exchange,
                key,
            )

    # Schedule bookkeeping

    def _apply(self, config: Config) -> None:
        """Adopt a validated config: new and changed jobs start from now, removed jobs go."""
        now = self.clock()
        self.config = config
        self.jobs = {job.name: job for job in config.jobs}
        # Each job of the old file got a state row when it was adopted: this finds them all.
        removed = [name for name in self.states if name not in self.jobs]
        if removed:
            self.state.forget(removed)
            for name in removed:
                self.states.pop(name, None)
        fresh = []
        for job in config.jobs:
            state = self.states.get(job.name)
            if state is None or state.fingerprint != job.fingerprint:
                # Recorded at once: if beatd dies before this job's first slot, the time in
                # between must still count as "scheduled", not as "before the job existed".
                self.states[job.name] = plan.fresh_state(job, now, state)
                fresh.append(self.states[job.name])
        self.state.save(fresh)
        self._encoder = Encoder(config.broker.exchange)
        self._heap, self._due = [], {}
        for job in config.jobs:
            self._schedule_next(job)

    def _schedule_next(self, job: Job) -> None:
        if not job.enabled:
            return
        state = self.states.get(job.name)
        cursor = state.cursor if state is not None else self.clock()
        at = job.schedule.next_after(cursor)
        if at is not None:
            self._schedule(job.name, at)

    def _schedule(self, name: str, at: datetime) -> None:
        self._due[name] = at
        heapq.heappush(self._heap, (at, name))

    async def _reload_config(self) -> None:
        self.notifier.reloading()
        try:
            config = read_config(self.path, self.env)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("reload failed: keeping the running schedule (%d jobs)", len(self.jobs))
            self.notifier.send(READY=1, STATUS=self._status())
            return
        before = {name: job.fingerprint for name, job in self.jobs.items()}
        broker_changed = config.broker != self.config.broker or {
            job.exchange for job in config.jobs
        } != {job.exchange for job in self.config.jobs}
        if config.state != self.config.state:
            log.warning("changing the state file needs a restart; keeping %s", self.config.state)
            config = replace(config, state=self.config.state)
        self._apply(config)
        added = [name for name in self.jobs if name not in before]
        removed = [name for name in before if name not in self.jobs]
        changed = [n for n, j in self.jobs.items() if n in before and before[n] != j.fingerprint]
        log.info(
            "reloaded %s: %d jobs (%d added, %d removed, %d rescheduled)",
            self.path,
            len(self.jobs),
            len(added),
            len(removed),
            len(changed),
        )
        if broker_changed:
            log.info("broker settings changed: reconnecting")
            await self.link.close()
            await self._link_task
            self.link = self._new_link(config)
            self._link_task = asyncio.create_task(self.link.run())
        self.notifier.send(READY=1, STATUS=self._status())

    def _status(self) -> str:
        broker = getattr(getattr(self, "link", None), "state", "connecting")
        parts = [f"{len(self.jobs)} jobs", f"broker {broker}"]
        top = self._peek()
        if top is not None:
            parts.append(f"next {top[1]} at {iso_utc(top[0])}")
        parts.append(f"published {self.counters.published}")
        return "; ".join(parts)

    def _summary(self) -> str:
        c = self.counters
        return (
            f"published {c.published}, unroutable {c.unroutable}, "
            f"missed {c.missed}, expired before publish {c.expired}"
        )


def run(path: str, env: Mapping[str, str]) -> int:
    """Entry point for `beatd run`."""
    return asyncio.run(Scheduler(path, env).run())


async def ensure_celery_queue(link: Link, channel: Channel, queue: str) -> None:
    """Make sure a Celery queue exists before publishing to it, as Celery's producer does: use
    it as the workers declared it (quorum, x-max-priority, ...: a declare with other arguments
    would fail with 406), or create it as Celery would, with its same-named direct exchange."""
    if await link.queue_exists(queue):
        return
    await channel.declare_exchange(queue, "direct")
    await channel.declare_queue(queue, durable=True)
    await channel.bind_queue(queue, queue, queue)


async def publish_manual(config: Config, job: Job, clock: Clock = system_clock) -> Run:
    """`beatd trigger`: publish one run of job now; return it once the broker confirmed it."""
    link = await one_shot(config.broker, name="trigger")
    try:
        channel = await link.channel(0)
        exchange = config.broker.exchange
        run = Run.manual(job, clock())
        message = encode(run, clock(), exchange)
        if message.queue:
            await ensure_celery_queue(link, channel, message.queue)
        elif job.format is MessageFormat.BEATD:
            await channel.declare_exchange(message.exchange, config.broker.exchange_type)
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
