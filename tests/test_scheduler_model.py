"""A model-based test of the scheduler: Hypothesis picks interleavings of time passing (across
the Europe/Berlin fall-back night, and wall-clock steps both ways), good and broken reloads at
any instant (inside the drafting window too; adopted a while after the read), pauses and
resumes, nacks, lost connections, broker outages of any
length, and crashes with a restart from the state store. After every step it checks:

- no slot is lost: every slot of a job up to its cursor was published or counted as missed;
- no slot is published under another id than `<job>@<slot>`;
- the state never runs ahead of the broker: a job's last slot is one the broker accepted;
- every enabled job has its next wake-up, and none is scheduled later than its next slot;
- memory stays bounded: no job publishes more than its catch-up and on-time limits in one
  step, and the timetable's heap does not grow with time.

BEATD_MODEL_EXAMPLES sets how many runs Hypothesis tries (CI: the default below).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from beatd.core.config import Job, parse_config
from beatd.core.messages import slot_id
from beatd.core.plan import CATCHUP_LIMIT, ON_TIME_LIMIT
from beatd.core.schedules import Interval
from beatd.runtime.systemd import Notifier
from beatd.scheduler.daemon import SchedulerDaemon
from beatd.scheduler.scheduler import CLOCK_STEP_BACK
from tests.clock import utc
from tests.fakebroker import LOSE, NACK, Queue
from tests.steps import Beat, quiet

START = utc(2026, 10, 24, 23, 50)  # Europe/Berlin falls back at 2026-10-25 01:00 UTC
BASE_JOBS = {
    "fast": "every: 1s\n    misfire: all\n    grace: 5s",
    "minute": "every: 1m",
    "nightly": 'cron: "30 2 * * *"\n    misfire: all\n    grace: 1h',
    "quarter": 'cron: "*/15 * * * *"\n    misfire: skip',
    "brief": "every: 10s\n    expires: 2s\n    misfire: all\n    grace: 1m",
    "patient": "every: 10s\n    grace: 1d",
}
VARIANTS = {
    "same": BASE_JOBS,
    "changed": {**BASE_JOBS, "minute": "every: 2m"},
    "fewer": {k: v for k, v in BASE_JOBS.items() if k != "quarter"},
    "more": {**BASE_JOBS, "extra": 'cron: "0 * * * *"\n    timezone: America/New_York'},
}


def schedule_text(jobs: dict[str, str]) -> str:
    body = "".join(f"  {name}:\n    {spec}\n    task: t.{name}\n" for name, spec in jobs.items())
    return f"timezone: Europe/Berlin\nbroker:\n  exchange: beatd\njobs:\n{body}"


def slots_in(job: Job, after: datetime, until: datetime) -> int:
    """How many slots of job lie in (after, until]."""
    if isinstance(job.schedule, Interval):
        return job.schedule.count_between(after, until)
    count, t = 0, job.schedule.next_after(after)
    while t is not None and t <= until:
        count, t = count + 1, job.schedule.next_after(t)
    return count


class SchedulerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="beatd-model-"))
        self.file = self.dir / "beatd.yaml"
        self.file.write_text(schedule_text(BASE_JOBS))
        self.beat = Beat(parse_config(self.file.read_text(), str(self.file), {}), START)
        self.beat.broker.queues["all"] = Queue("all", {})
        self.beat.broker.bindings.add(("beatd", "all", "#"))
        self.daemon = SchedulerDaemon(
            str(self.file),
            {},
            connect=self.beat.broker.connect,
            clock=self.beat.clock,
            notifier=Notifier({}),
            watch_file=False,
        )
        self.published: dict[str, set[datetime]] = defaultdict(set)
        self.segments: dict[str, tuple[str, datetime, int]] = {}  # fingerprint, start, missed
        self.seen = 0  # how many accepted messages were looked at
        self.do(self.beat.start())
        self.adopted()

    def do(self, work: object) -> None:
        self.loop.run_until_complete(work)  # type: ignore[arg-type]

    def teardown(self) -> None:
        if self.beat.scheduler is not None:
            self.do(self.beat.crash())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def scheduler(self):  # type: ignore[no-untyped-def]
        assert self.beat.scheduler is not None
        return self.beat.scheduler

    def adopted(self) -> None:
        """After a start or reload: a job seen anew (or changed) starts a new segment."""
        for name, job in self.scheduler.jobs.items():
            state = self.scheduler.states[name]
            known = self.segments.get(name)
            if known is None or known[0] != job.fingerprint:
                self.segments[name] = (job.fingerprint, state.cursor, state.missed)
        for name in list(self.segments):
            if name not in self.scheduler.jobs:
                del self.segments[name]

    def collect(self) -> None:
        """Take in what the broker accepted since last time."""
        accepted = self.beat.broker.accepted
        for message in accepted[self.seen :]:
            body = json.loads(message.body)
            slot = datetime.fromisoformat(body["scheduled_at"])
            assert message.properties.message_id == slot_id(body["job"], slot), body
            assert body["id"] == message.properties.message_id
            self.published[body["job"]].add(slot)
        self.seen = len(accepted)
        self.beat.broker.queues["all"].ready.clear()

    def run_for(self, seconds: float) -> None:
        self.do(self.beat.run_until(self.beat.clock() + timedelta(seconds=seconds)))
        self.collect()

    # Time

    @rule(seconds=st.sampled_from([0.2, 0.45, 0.6, 1, 5, 30, 61, 600, 3600, 4 * 3600]))
    def time_passes(self, seconds: float) -> None:
        self.run_for(seconds)

    @rule(seconds=st.sampled_from([-3600, -90, -1, 1, 120, 7200]))
    def the_wall_clock_steps(self, seconds: int) -> None:
        self.beat.clock.now += timedelta(seconds=seconds)
        self.run_for(0)

    # Reloads (at any instant: a burst may be drafted)

    @rule(variant=st.sampled_from(sorted(VARIANTS)))
    def a_good_reload(self, variant: str) -> None:
        self.file.write_text(schedule_text(VARIANTS[variant]))
        self.do(self.daemon.reload(self.scheduler))
        self.adopted()
        self.run_for(0)

    @rule(
        variant=st.sampled_from(sorted(VARIANTS)),
        seconds=st.sampled_from([-90, -1, 0.2, 0.45, 0.6, 1, 30, 61]),
    )
    def a_reload_adopted_after_time_passes(self, variant: str, seconds: float) -> None:
        # The file is read and compared with the running jobs in a thread while the loop
        # steps on: the next slots found there are stale by the time the loop adopts them
        # (or ahead of its clock, if the wall clock went back meanwhile).
        self.file.write_text(schedule_text(VARIANTS[variant]))
        reading = self.loop.run_until_complete(self.daemon._read(self.scheduler))
        if seconds < 0:
            self.beat.clock.now += timedelta(seconds=seconds)
        self.run_for(max(0, seconds))
        self.do(self.daemon._adopt(self.scheduler, reading))
        self.adopted()
        self.run_for(0)

    @rule(name=st.sampled_from(sorted(BASE_JOBS)))
    def a_job_is_paused_or_resumed(self, name: str) -> None:
        if name in self.scheduler.paused:
            self.scheduler.resume(name)
        elif name in self.scheduler.jobs:
            self.scheduler.pause(name, "model")
        self.run_for(0)

    @rule()
    def a_broken_reload(self) -> None:
        self.file.write_text("jobs:\n  fast: [every: 1s\n")
        self.do(self.daemon.reload(self.scheduler))
        self.run_for(0)

    # The broker

    @rule(fault=st.sampled_from([NACK, LOSE]), count=st.integers(1, 3))
    def the_broker_fails_the_next_publishes(self, fault: str, count: int) -> None:
        self.beat.broker.faults.extend([fault] * count)

    @rule()
    def connections_drop(self) -> None:
        self.beat.broker.drop_connections()
        self.do(quiet())

    @precondition(lambda self: self.beat.broker.up)
    @rule()
    def the_broker_goes_away(self) -> None:
        self.beat.broker.stop()

    @precondition(lambda self: not self.beat.broker.up)
    @rule()
    def the_broker_comes_back(self) -> None:
        self.beat.broker.start()
        self.do(quiet())
        self.run_for(0)

    # The process

    @rule()
    def a_crash_and_a_restart(self) -> None:
        self.do(self.beat.crash())
        self.do(self.beat.start())
        self.adopted()
        self.run_for(0)

    # What must always hold

    @invariant()
    def no_slot_is_lost(self) -> None:
        for name, (_, start, missed_before) in self.segments.items():
            job = self.scheduler.jobs[name]
            state = self.scheduler.states[name]
            due = slots_in(job, start, state.cursor)
            published = sum(1 for s in self.published[name] if start < s <= state.cursor)
            missed = state.missed - missed_before
            assert due - published <= missed, (
                f"{name}: {due} slots in ({start}, {state.cursor}], {published} published, "
                f"only {missed} counted as missed"
            )

    @invariant()
    def the_state_never_runs_ahead_of_the_broker(self) -> None:
        for name, state in self.scheduler.states.items():
            assert state.last_slot is None or state.last_slot in self.published[name], name

    @invariant()
    def every_enabled_job_has_its_next_wake_up(self) -> None:
        s = self.scheduler
        now = self.beat.clock()
        drafted = {p.job.name for p in s._prepared.plans} if s._prepared else set()
        for name, job in s.jobs.items():
            upcoming = job.schedule.next_after(max(now, s.states[name].cursor))
            if upcoming is None or name in s.paused:
                continue
            assert name in s.timetable or name in drafted or name in s._parked, name
            due = s.timetable._due.get(name)
            retrying = name in s._retry_s
            if due is not None and not retrying:
                latest = job.schedule.next_after(now + CLOCK_STEP_BACK)
                assert latest is None or due <= latest, f"{name} stalls until {due}"

    @invariant()
    def status_shows_the_next_run_of_every_job_that_will_run(self) -> None:
        s = self.scheduler
        now = self.beat.clock()
        shown = {row["job"]: row["next"] for row in s.snapshot()["jobs"]}
        for name, job in s.jobs.items():
            if name in s.paused or job.schedule.next_after(max(now, s.states[name].cursor)) is None:
                continue
            assert shown[name] is not None, f"status shows no next run of {name}"

    @invariant()
    def memory_stays_bounded(self) -> None:
        for name, count in self.beat.step_counts.items():
            assert count <= CATCHUP_LIMIT + ON_TIME_LIMIT, f"{name}: {count} runs in one step"
        assert len(self.scheduler.timetable._heap) <= 4 * len(self.scheduler.jobs) + 50


EXAMPLES = int(os.environ.get("BEATD_MODEL_EXAMPLES", "40"))
TestSchedulerModel = SchedulerModel.TestCase
TestSchedulerModel.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=25, deadline=None, database=None
)
