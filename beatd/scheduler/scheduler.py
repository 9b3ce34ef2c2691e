"""The scheduler, one step at a time: `await step(now)` publishes what is due at now, and
`next_wake()` says when to call it again. It is given its broker (a Connector), its state store
and its clock, so tests drive it over an in-memory broker with a fake clock; daemon.py wraps it
in a process (signals, the file watcher, the sleep).

A step: take the due jobs off the timetable, plan each (core.plan, pure), publish the runs with
pipelined confirms, settle each job's state from the outcomes (core.settle, pure), save.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from beatd.core import plan, progress
from beatd.core.config import Config, Job
from beatd.core.jobstate import JobState
from beatd.core.messages import Draft, Outgoing, Run, iso_utc
from beatd.core.ports import Broker, Channel, Clock, Connector, JobStore, Outcome
from beatd.core.settle import handled, settle
from beatd.scheduler.changes import Changes, compare
from beatd.scheduler.codecs import Codecs
from beatd.scheduler.leader import Leadership, say_differing
from beatd.scheduler.report import Report, Sink
from beatd.scheduler.timetable import Timetable

log = logging.getLogger("beatd.scheduler")

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
# Plan and draft a burst this long before its slot, so that at the slot only the sending is
# left (the last of 1,000 runs leaves ~25 ms sooner), plus twice what drafting the burst's
# runs took last time: 10,000 runs take 0.3 s to draft on an idle machine, 1.5 s on a busy
# one, with signing more; a drafting that overran the slot made the whole burst that late.
PREPARE_AHEAD_S = 0.5
DRAFT_S_FIRST = 100e-6  # per run, until a burst was drafted here (a busy machine)
MAX_PREPARE_AHEAD_S = 10.0
# A wall clock that went back by more than this (a manual step, a VM restored from a snapshot)
# would stall every job until it caught up with the cursors: reset them to now instead.
CLOCK_STEP_BACK = timedelta(seconds=1)
REMOVED_KEPT = 1000  # rows of removed jobs kept, so a job restored later keeps its counters


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
        config: Config,
        store: JobStore,
        connect: Connector,
        *,
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
        sinks: Sequence[Sink] = (),
        paused: Mapping[str, str] | None = None,
    ) -> None:
        """on_change: called when the broker's state changes (the daemon updates its status
        and wakes up: a reconnect means parked jobs can go). sinks: told what each step did,
        after the log lines (metrics, the run history). paused: jobs paused with notes."""
        self.store = store
        self.connect = connect
        self.clock = clock
        self.on_change = on_change
        self.counters = Counters()
        self.config = config
        self.jobs: dict[str, Job] = {}
        self.states: dict[str, JobState] = store.load()
        self.timetable = Timetable()
        self.codecs = Codecs(config.broker, config.signing)
        self._retry_s: dict[str, float] = {}
        self._parked: set[str] = set()  # due while the broker is away
        self.paused: dict[str, str] = dict(paused or {})  # job -> note (beatd pause)
        self._prepared: Prepared | None = None
        self._draft_s = DRAFT_S_FIRST  # what drafting one run took, last burst
        self._declared_queues: set[str] = set()
        self.report = Report(lambda: self.config.broker.exchange, sinks)
        # With ha: off this always leads; with ha: on, only while its link holds the lock.
        self.leadership = Leadership(
            config.ha, clock, on_lead=self._lead, on_peek=self._peek, on_change=on_change
        )
        self.link = self._new_link(config)
        self._link_task: asyncio.Task[None] | None = None
        self._ha_task: asyncio.Task[None] | None = None
        self.exchanges: frozenset[str] = frozenset()
        # No job's cursor is beyond this (the latest now seen, or a cursor loaded or taken
        # over), so a step need not look at every job to notice that the clock went back.
        self._high = max((s.cursor for s in self.states.values()), default=clock())
        self.adopt(config, clock())

    # The broker link

    def _new_link(self, config: Config) -> Broker:
        kind = config.broker.exchange_type

        async def setup(channel: Channel) -> None:
            # Those of the config adopted last (a reload with others makes a new link).
            for name in sorted(self.exchanges):
                await channel.declare_exchange(name, kind)
            self._declared_queues.clear()
            await self.leadership.setup(channel)

        def on_state(state: str) -> None:
            self.leadership.link_state(state)
            self.on_change()

        link = self.connect(config.broker, name="scheduler", setup=setup, on_state=on_state)
        self.leadership.link = link
        return link

    def start(self) -> None:
        """Start keeping the broker link up (in the background), and with ha: on, electing."""
        self._link_task = asyncio.create_task(self.link.run())
        if self.config.ha is not None and self._ha_task is None:
            self._ha_task = asyncio.create_task(self.leadership.run())

    async def close(self) -> None:
        self.leadership.stop()
        if self._ha_task is not None:
            await self._ha_task
        await self._stop_link()
        self.store.close()

    def _lead(self, snapshot: progress.Snapshot | None) -> None:
        """Becoming the leader: resume each job from the further of its own state and the old
        leader's; planning then applies the misfire policy to what went past its grace."""
        remote = {} if snapshot is None else snapshot.states
        merged, differing = progress.merge(self.states, remote, self.config.jobs)
        say_differing(differing, "the previous leader ran: they start afresh")
        self.store.save(s for name, s in merged.items() if self.states.get(name) != s)
        self.states.update(merged)
        self._high = max([self._high, *(s.cursor for s in merged.values())])
        self._parked.clear()
        self._reschedule()

    def _peek(self, snapshot: progress.Snapshot) -> None:
        """A standby's first look at the leader's progress: is it running this schedule?"""
        differing = progress.merge(self.states, snapshot.states, self.config.jobs)[1]
        say_differing(differing, "the leader runs: they would start afresh on a takeover")

    async def _stop_link(self) -> None:
        await self.link.close()
        if self._link_task is not None:
            await self._link_task
            self._link_task = None

    # Steps

    def next_wake(self) -> datetime | None:
        """When to step next: the drafted burst's slot; else time to draft the next burst;
        else, while the broker is away, the next slot itself."""
        if not self.leadership.leading:
            return None  # a standby is woken by the election
        if self._prepared is not None:
            return self._prepared.at
        top = self.timetable.peek()
        if top is None:
            return None
        if self.link.channel_now() is None:
            return top[0]
        return top[0] - timedelta(seconds=self._ahead_s(top[0]))

    def _ahead_s(self, at: datetime) -> float:
        """How long before the slot at to draft its burst."""
        drafting_s = self._draft_s * self.timetable.count_at(at)
        return min(MAX_PREPARE_AHEAD_S, PREPARE_AHEAD_S + 2 * drafting_s)

    def biggest_burst(self, after: datetime, until: datetime) -> tuple[int, datetime | None]:
        """The most runs due at one slot after `after` up to until and not published yet,
        and that slot (0, None: none)."""
        best: tuple[int, datetime | None] = (0, None)
        prepared = self._prepared
        if prepared is not None and after < prepared.at <= until:
            best = (len(prepared.drafts), prepared.at)
        for at, count in self.timetable.counts():
            if after < at <= until and count > best[0]:
                best = (count, at)
        return best

    def prepare(self, now: datetime) -> None:
        """Draft the next burst if its slot is near enough (see PREPARE_AHEAD_S)."""
        top = self.timetable.peek()
        if self._prepared is not None or top is None or self.link.channel_now() is None:
            return
        if not self.leadership.leading:
            return
        at = top[0]
        if (at - now).total_seconds() > self._ahead_s(at):
            return
        names = self.timetable.pop_due(at)
        plans: list[plan.JobPlan] = []
        expired: set[str] = set()
        drafts = list(self._drafts(names, at, plans, expired))
        self._prepared = Prepared(at, plans, drafts, expired)
        if names:  # the clock is injected: a test's stands still, and this stays 0
            self._draft_s = max(0.0, (self.clock() - now).total_seconds()) / len(names)

    async def step(self, now: datetime) -> None:
        """Publish everything due at now (a drafted burst whose slot came, jobs due since,
        jobs parked while the broker was away) and record what the broker confirmed."""
        if not self.leadership.leading:
            return  # a standby publishes nothing; it resumes from the progress when it leads
        self._rewind(now)
        prepared = self._prepared
        if prepared is not None and prepared.at <= now:
            self._prepared = None
        else:
            prepared = None
        due = self.timetable.pop_due(now)
        drafted = [p.job.name for p in prepared.plans] if prepared else []
        channel = self.link.channel_now()
        if channel is None:
            # The broker is away: park the due jobs until it is back, and plan them then, so
            # whatever went past its grace meanwhile is handled by the misfire policy.
            self._parked.update(due + drafted)
            return
        due += [name for name in self._parked if name in self.jobs and name not in due]
        due = [name for name in due if name not in self.paused]
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
        if self.config.ha is not None:
            await self.leadership.save(channel, self.states.values())

    def _drafts(
        self, names: list[str], now: datetime, plans: list[plan.JobPlan], expired: set[str]
    ) -> Iterator[Draft]:
        """Plan each job as of now and yield a draft of each run to send; the plans go into
        plans, and runs whose `expires` passed before they could be sent into expired."""
        codecs = self.codecs
        for name in names:
            job_plan = self._plan(self.jobs[name], now)
            plans.append(job_plan)
            for run in job_plan.runs:
                if run.expires_at is not None and run.expires_at <= now:
                    expired.add(run.id)
                    self._log_expired(run)
                else:
                    yield codecs.draft(run, now)  # signed as of the slot it is drafted for

    def _plan(self, job: Job, now: datetime) -> plan.JobPlan:
        state = plan.current_state(job, self.states.get(job.name), now)
        job_plan = plan.plan_job(job, state, now)
        return job_plan  # reported (dropped slots, catch-up runs) once published: _record

    def _log_expired(self, run: Run) -> None:
        log.warning(
            "job %r: run %s expired at %s before it could be published; dropped",
            run.job.name,
            run.id,
            iso_utc(run.expires_at or run.slot),
            extra={"job": run.job.name, "run_id": run.id},
        )

    async def _declare_queues(self, channel: Channel, due: Sequence[str]) -> None:
        """Some formats name a queue that must exist before publishing (Celery's producer
        makes sure the same way); declare each once per channel."""
        for name in due:
            job = self.jobs[name]
            queue = self.codecs[job].queue(job)
            if queue and queue not in self._declared_queues:
                await ensure_queue(self.link, channel, queue)
                self._declared_queues.add(queue)

    def _record(
        self, plans: list[plan.JobPlan], outcomes: list[Outcome | None], now: datetime
    ) -> None:
        """Settle each job's state from its runs' outcomes and save; a job with runs lost or
        nacked is retried with backoff, the others wait for their next slot."""
        changed: list[JobState] = []
        position = 0
        counters = self.counters
        for job_plan in plans:
            job, count = job_plan.job, len(job_plan.runs)
            results = outcomes[position : position + count]
            position += count
            new = settle(job_plan, results, now)
            before = job_plan.before
            counters.published += new.published - before.published
            counters.missed += new.missed - before.missed
            if count == 1 and results[0] is Outcome.CONFIRMED:  # the burst's common case
                changed.append(new)
                self.states[job.name] = new
                self._retry_s.pop(job.name, None)
                self._schedule_next(job)
                continue
            done = handled(results)
            counters.unroutable += new.unroutable - before.unroutable
            counters.expired += sum(1 for r in results[:done] if r is None)
            if new != self.states.get(job.name):
                changed.append(new)
                self.states[job.name] = new
            if done < count:
                self._retry(job, count - done, now)
            else:
                self._retry_s.pop(job.name, None)
                self._schedule_next(job)
        self._high = max(self._high, now)  # every cursor settled here is at most now
        self.store.save(changed)
        self.report.step(plans, outcomes, now)

    def _retry(self, job: Job, runs: int, now: datetime) -> None:
        delay = self._retry_s.get(job.name, RETRY_FIRST_S)
        self._retry_s[job.name] = min(delay * 2, RETRY_MAX_S)
        log.warning(
            "job %r: the broker did not confirm %d run(s); retrying in %.0fs",
            job.name,
            runs,
            delay,
        )
        self.timetable.schedule(job.name, now + timedelta(seconds=delay))

    # The schedule

    def adopt(self, config: Config, now: datetime, changes: Changes | None = None) -> None:
        """Take a validated config: new and changed jobs start from now, removed jobs are
        set aside; the rest keep their place in the timetable. changes: how config differs
        from the running jobs, computed off the loop (a reload's thread); without it, or if
        it was compared with other jobs than these, it is computed here."""
        if changes is None or changes.base is not self.jobs:
            changes = compare(self.jobs, config, now)
        self.config = config
        self.codecs = Codecs(config.broker, config.signing)
        self.exchanges = changes.exchanges
        self.jobs = changes.jobs
        self._high = max(self._high, now)
        # A removed job keeps its row, marked by an empty fingerprint, so that restoring it in
        # the next save keeps its last slot and counters; it starts from now, as a changed job
        # does. The oldest of these rows go beyond REMOVED_KEPT.
        fresh: list[JobState] = []
        for name in changes.removed:
            state = self.states.get(name)
            self.timetable.discard(name)
            if state is not None and state.fingerprint:
                fresh.append(state._replace(fingerprint=""))
                self.states[name] = fresh[-1]
        for name in changes.added + changes.changed:
            job = self.jobs[name]
            state = self.states.get(name)
            if state is None or state.fingerprint != job.fingerprint:
                # Recorded at once: if beatd dies before this job's first slot, the time in
                # between must still count as "scheduled", not as "before the job existed".
                self.states[name] = plan.fresh_state(job, now, state)
                fresh.append(self.states[name])
        # Every job has a row, so the rows beyond the jobs' are the removed ones.
        if len(self.states) - len(self.jobs) > REMOVED_KEPT:
            removed = sorted(
                (s for name, s in self.states.items() if name not in self.jobs),
                key=lambda s: s.cursor,
            )
            forgotten = [s.name for s in removed[: len(removed) - REMOVED_KEPT]]
            self.store.forget(forgotten)
            for name in forgotten:
                del self.states[name]
            fresh = [s for s in fresh if s.name in self.states]
        self.store.save(fresh)
        if self._rewind(now):
            return
        self._drop_prepared()
        due: list[tuple[datetime, str]] = []
        # Jobs that share a schedule object share their next slot after the same cursor: found
        # once per (schedule, cursor), while the schedules live (100k jobs at a start: 14k).
        found: dict[tuple[int, datetime], datetime | None] = {}
        states, jobs, paused, next_at = self.states, self.jobs, self.paused, changes.next_at
        for name in changes.rescheduled:
            cursor = states[name].cursor
            job = jobs[name]
            if not job.enabled or name in paused:
                at = None
            elif cursor == now and changes.as_of <= now and name in next_at:
                # Started afresh from now: the slot found off the loop after as_of is the one
                # after now, unless it is not after now.
                at = next_at[name]
                if at is not None and at <= now:
                    at = job.schedule.next_after(cursor)
            else:
                key = (id(job.schedule), cursor)
                if key in found:
                    at = found[key]
                else:
                    at = found[key] = job.schedule.next_after(cursor)
            if at is None:
                self.timetable.discard(name)
            else:
                due.append((at, name))
        self.timetable.schedule_all(due)

    def _drop_prepared(self) -> None:
        """Give up a burst drafted before (for a new schedule, a pause): its jobs go back in
        the timetable, due at the same slot, to be planned again as things now are."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return
        for job_plan in prepared.plans:
            job = self.jobs.get(job_plan.job.name)
            if job is not None:
                self._schedule_next(job)

    def _reschedule(self) -> None:
        """Every job from its state (a burst drafted before is dropped; its jobs come back)."""
        self._prepared = None
        self.timetable.clear()
        for job in self.config.jobs:
            self._schedule_next(job)

    def _rewind(self, now: datetime) -> bool:
        """If the wall clock went back behind jobs' cursors, move those cursors back to now
        and reschedule: the replayed slots go out again under the same ids (the worker drops
        the second copy), rather than every job stalling for as long as the clock went back."""
        if now + CLOCK_STEP_BACK >= self._high:
            return False  # no cursor is beyond the latest now seen: nothing to look at
        ahead = [s for s in self.states.values() if s.cursor - now > CLOCK_STEP_BACK]
        if not ahead:
            self._high = max((s.cursor for s in self.states.values()), default=now)
            return False
        furthest = max(s.cursor for s in ahead)
        log.warning(
            "the wall clock is %.0fs behind where %d job(s) got to; scheduling them from now",
            (furthest - now).total_seconds(),
            len(ahead),
        )
        rewound = [s._replace(cursor=now) for s in ahead]
        for state in rewound:
            self.states[state.name] = state
        self.store.save(rewound)
        self._high = max((s.cursor for s in self.states.values()), default=now)
        self._reschedule()
        return True

    async def reload(self, config: Config, now: datetime, changes: Changes | None = None) -> None:
        """Adopt a new validated config, reconnecting if its broker settings changed.
        changes: see adopt."""
        if config.signing != self.config.signing:
            log.warning("changes to signing: take effect when the scheduler restarts")
            config = replace(config, signing=self.config.signing)
        if config.ha != self.config.ha:
            log.warning("changes to ha: take effect when the scheduler restarts")
            config = replace(config, ha=self.config.ha)
        if changes is None or changes.base is not self.jobs:
            changes = compare(self.jobs, config, now)
        broker_changed = config.broker != self.config.broker or changes.exchanges != self.exchanges
        self.adopt(config, now, changes)
        if broker_changed:
            log.info("broker settings changed: reconnecting")
            await self._stop_link()
            self.link = self._new_link(config)
            self.start()

    def pause(self, name: str, note: str) -> None:
        """Publish nothing of this job until resumed (its slots come due meanwhile)."""
        self.paused[name] = note
        self._drop_prepared()
        self.timetable.discard(name)

    def resume(self, name: str) -> None:
        """Schedule the job again from its cursor: the slots that came due while it was
        paused are missed ones, so its misfire policy decides (once: the newest; all: each;
        skip: none), exactly as after downtime."""
        if self.paused.pop(name, None) is not None and name in self.jobs:
            self._schedule_next(self.jobs[name])

    def snapshot(self) -> dict[str, Any]:
        """What `beatd status` shows: the broker, the role, and each job's next run, last
        publish, counters and pause."""
        jobs = []
        # a job of the drafted burst has left the timetable until its slot, and one parked
        # while the broker is away waits for it: both still run next at a slot of their own
        prepared = self._prepared
        drafted = {p.job.name for p in prepared.plans} if prepared is not None else set()
        for name, job in self.jobs.items():
            state = self.states.get(name)
            due = self.timetable.due_at(name)
            if due is None and prepared is not None and name in drafted:
                due = prepared.at
            elif due is None and name in self._parked:
                due = job.schedule.next_after(state.cursor if state else self.clock())
            jobs.append(
                {
                    "job": name,
                    "enabled": job.enabled,
                    "schedule": job.spec,
                    "next": None if due is None else iso_utc(due),
                    "last_slot": _iso(state.last_slot if state else None),
                    "last_published_at": _iso(state.last_published_at if state else None),
                    "published": state.published if state else 0,
                    "missed": state.missed if state else 0,
                    "unroutable": state.unroutable if state else 0,
                    "paused": self.paused.get(name),
                }
            )
        role = "single" if self.config.ha is None else self.leadership.status()
        return {"broker": self.link.state, "role": role, "jobs": jobs}

    def _schedule_next(self, job: Job) -> None:
        at = self._next_slot(job)
        if at is not None:
            self.timetable.schedule(job.name, at)

    def _next_slot(self, job: Job) -> datetime | None:
        """The job's next slot after its cursor; None if none, or disabled or paused."""
        if not job.enabled or job.name in self.paused:
            return None
        state = self.states.get(job.name)
        return job.schedule.next_after(state.cursor if state is not None else self.clock())

    def status(self) -> str:
        parts = [f"{len(self.jobs)} jobs", f"broker {self.link.state}"]
        if self.config.ha is not None:
            parts.append(self.leadership.status())
        top = self.timetable.peek()
        if top is not None:
            parts.append(f"next {top[1]} at {iso_utc(top[0])}")
        parts.append(f"published {self.counters.published}")
        return "; ".join(parts)

    def summary(self) -> str:
        c = self.counters
        return (
            f"published {c.published}, unroutable {c.unroutable}, "
            f"missed {c.missed}, expired before publish {c.expired}"
        )


async def ensure_queue(link: Broker, channel: Channel, queue: str) -> None:
    """Make sure a Celery queue exists before publishing to it, as Celery's producer does: use
    it as the workers declared it (quorum, x-max-priority, ...: a declare with other arguments
    would fail with 406), or create it as Celery would, with its same-named direct exchange."""
    if await link.queue_exists(queue):
        return
    await channel.declare_exchange(queue, "direct")
    await channel.declare_queue(queue, durable=True)
    await channel.bind_queue(queue, queue, queue)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment)
