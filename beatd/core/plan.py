"""Which slots to publish now, per job, under its misfire policy. Pure: now is an argument.

A job's state has a cursor: every slot at or before it is handled (confirmed by the broker,
or dropped by the misfire policy). The slots after the cursor and up to now are due; those
more than `grace` late are missed. The cursor only moves once the broker has confirmed, so a
crash between publish and record publishes the same slot again, under the same id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from beatd.core.config import Job, Misfire
from beatd.core.jobstate import JobState
from beatd.core.messages import Run, Trigger
from beatd.core.schedules import Cron, Interval, latest_between, slots_between

CATCHUP_LIMIT = 1000  # `misfire: all` publishes at most this many missed slots per pass
ON_TIME_LIMIT = 1000  # and at most this many on-time ones (a grace of many slots)
COUNT_LIMIT = 50  # cron slots counted one by one before counting by days


@dataclass(frozen=True, slots=True)
class Dropped:
    """Missed slots the policy will not publish (for the log and the `missed` counter)."""

    count: int
    last: datetime


@dataclass(frozen=True, slots=True)
class JobPlan:
    job: Job
    before: JobState  # the state planned from
    runs: tuple[Run, ...]  # to publish now, oldest first
    state: JobState  # the state once every run is confirmed
    dropped: Dropped | None = None

    @property
    def next_slot(self) -> datetime | None:
        """The first slot after everything planned: when this job is due again."""
        return self.job.schedule.next_after(self.state.cursor)


def fresh_state(job: Job, now: datetime, old: JobState | None = None) -> JobState:
    """State for a job seen for the first time or whose schedule changed: nothing before now
    counts as missed. Counters and the last slot survive a schedule change."""
    if old is None:
        return JobState(job.name, job.fingerprint, cursor=now)
    return old._replace(fingerprint=job.fingerprint, cursor=now)


def current_state(job: Job, state: JobState | None, now: datetime) -> JobState:
    """The state to plan from: the stored one, or a fresh one if there is none or it is for
    another version of the schedule."""
    if state is None or state.fingerprint != job.fingerprint:
        return fresh_state(job, now, state)
    return state


def plan_job(job: Job, state: JobState, now: datetime) -> JobPlan:
    """Decide what to publish for one job whose state is current (see current_state).

    Bounded: a `grace: 1d` job of `every: 1s` back after 20 hours has 72,000 on-time slots;
    the newest ON_TIME_LIMIT go, the older ones count as missed (and follow the policy).
    """
    cursor = state.cursor
    late_limit = now - job.grace
    schedule = job.schedule
    first = schedule.next_after(cursor)
    if first is None or first > now:
        return JobPlan(job, state, (), state)
    if first >= late_limit:  # the usual case, kept cheap for bursts: nothing was missed
        due = [Run(job, first)]
        slot = schedule.next_after(first)
        while slot is not None and slot <= now and len(due) <= ON_TIME_LIMIT:
            due.append(Run(job, slot))
            slot = schedule.next_after(slot)
        if len(due) <= ON_TIME_LIMIT:
            return JobPlan(job, state, tuple(due), _moved(state, due[-1].slot, due[-1].slot, 0))
    # On-time slots (at most grace late); usually one, several only after a stall < grace.
    on_time_from = max(cursor, _just_before(late_limit))
    on_time, too_many = _newest(job, on_time_from, now, ON_TIME_LIMIT)
    newest_missed = latest_between(schedule, cursor, _just_before(late_limit))
    if too_many is not None:  # on-time slots beyond the limit count as missed ones
        newest_missed = too_many
    catchup: list[Run] = []
    dropped = None
    if newest_missed is not None:
        if job.misfire is Misfire.ALL:
            slots, older = _newest(job, cursor, newest_missed, CATCHUP_LIMIT)
            catchup = [Run(job, slot, Trigger.CATCHUP) for slot in slots]
            dropped = None if older is None else Dropped(_count(job, cursor, older), older)
        elif job.misfire is Misfire.ONCE and not on_time:
            catchup = [Run(job, newest_missed, Trigger.CATCHUP)]
            older = latest_between(schedule, cursor, _just_before(newest_missed))
            if older is not None:
                dropped = Dropped(_count(job, cursor, older), older)
        else:
            dropped = Dropped(_count(job, cursor, newest_missed), newest_missed)
    runs = tuple(catchup + [Run(job, slot) for slot in on_time])
    newest = runs[-1].slot if runs else newest_missed
    assert newest is not None
    last_slot = runs[-1].slot if runs else state.last_slot
    handled = _moved(state, newest, last_slot, dropped.count if dropped else 0)
    return JobPlan(job, state, runs, handled, dropped)


def _moved(state: JobState, cursor: datetime, last_slot: datetime | None, missed: int) -> JobState:
    # dataclasses.replace costs ~7 µs; a burst of 10,000 jobs calls this 10,000 times.
    return JobState(
        state.name,
        state.fingerprint,
        cursor,
        last_slot,
        state.last_published_at,
        state.published,
        state.missed + missed,
        state.unroutable,
    )


def _just_before(moment: datetime) -> datetime:
    # Slots are at least a millisecond apart; "before t" is "at or before t - 1 µs".
    return moment - _MICROSECOND


def _newest(
    job: Job, after: datetime, until: datetime, limit: int
) -> tuple[list[datetime], datetime | None]:
    """The newest `limit` slots in (after, until], oldest first, found newest first without
    walking the older ones; and the newest slot older than those, if any (to be dropped)."""
    slots: list[datetime] = []
    newest = latest_between(job.schedule, after, until)
    while newest is not None and len(slots) < limit:
        slots.append(newest)
        newest = latest_between(job.schedule, after, _just_before(newest))
    slots.reverse()
    return slots, newest


def _count(job: Job, cursor: datetime, last: datetime) -> int:
    """How many slots lie in (cursor, last]: exact for intervals and for up to COUNT_LIMIT cron
    slots; beyond that counted a day at a time on the wall clock (exact but for the slots of
    a DST change), so a week down with 1,000 `* * * * *` jobs plans in milliseconds, not the
    minutes that walking 10,080 slots per job took."""
    schedule = job.schedule
    if isinstance(schedule, Interval):
        return schedule.count_between(cursor, last)
    count, slot = 0, cursor
    for slot in slots_between(schedule, cursor, last):  # noqa: B007  (slot: the last one seen)
        count += 1
        if count == COUNT_LIMIT:
            break
    else:
        return count
    if not isinstance(schedule, Cron):  # another kind of schedule: extrapolate from the rate
        return count + int((last - slot) / ((slot - cursor) / count))
    zone, shift = schedule.cron.zone, schedule.offset
    start = (cursor - shift).astimezone(zone).replace(tzinfo=None)
    end = (last - shift).astimezone(zone).replace(tzinfo=None)
    return max(count, schedule.cron.expr.count_between(start, end))


_MICROSECOND = datetime.resolution
