"""Misfire planning: which slots get published after downtime, with a clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beatd.core import plan
from beatd.core.config import Job, Misfire, parse_config
from beatd.core.jobstate import JobState
from beatd.core.messages import Trigger
from beatd.core.schedules import Schedule

T0 = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)


def job(schedule: str, *, misfire: str = "once", grace: str = "60s", name: str = "j") -> Job:
    text = (
        f"jobs:\n  {name}:\n    {schedule}\n    task: t.t\n"
        f"    misfire: {misfire}\n    grace: {grace}\n"
    )
    return parse_config(text, "test.yaml", {}).jobs[0]


def state_at(j: Job, cursor: datetime) -> JobState:
    return JobState(j.name, j.fingerprint, cursor=cursor)


def slots(p: plan.JobPlan) -> list[datetime]:
    return [run.slot for run in p.runs]


def test_an_on_time_slot_is_published_with_trigger_schedule() -> None:
    j = job("every: 15m")
    p = plan.plan_job(j, state_at(j, T0 - timedelta(minutes=1)), T0 + timedelta(seconds=2))
    assert slots(p) == [T0]
    assert p.runs[0].trigger is Trigger.SCHEDULE
    assert p.runs[0].id == "j@20261121T053000Z"
    assert p.state.cursor == T0
    assert p.next_slot == T0 + timedelta(minutes=15)


def test_nothing_is_published_before_the_slot() -> None:
    j = job("every: 15m")
    p = plan.plan_job(j, state_at(j, T0 - timedelta(minutes=1)), T0 - timedelta(milliseconds=1))
    assert p.runs == ()
    assert p.state.cursor == T0 - timedelta(minutes=1)


def test_once_policy_publishes_only_the_newest_missed_slot() -> None:
    j = job("every: 15m")
    now = T0 + timedelta(hours=2, minutes=5)  # 05:30 ... 07:30 missed, 07:45 not yet due
    p = plan.plan_job(j, state_at(j, T0 - timedelta(seconds=1)), now)
    assert slots(p) == [T0 + timedelta(hours=2)]
    assert p.runs[0].trigger is Trigger.CATCHUP
    assert p.dropped is not None and p.dropped.count == 8
    assert p.state.missed == 8
    assert p.state.cursor == T0 + timedelta(hours=2)


def test_once_policy_publishes_no_missed_slot_when_an_on_time_one_goes_out() -> None:
    j = job("every: 15m", grace="10m")
    now = T0 + timedelta(hours=1, minutes=1)  # 06:30 is on time (1 min late), older ones missed
    p = plan.plan_job(j, state_at(j, T0 - timedelta(seconds=1)), now)
    assert slots(p) == [T0 + timedelta(hours=1)]
    assert p.runs[0].trigger is Trigger.SCHEDULE
    assert p.dropped is not None and p.dropped.count == 4


def test_skip_policy_publishes_no_missed_slot() -> None:
    j = job("every: 15m", misfire="skip")
    now = T0 + timedelta(hours=2, minutes=5)
    p = plan.plan_job(j, state_at(j, T0 - timedelta(seconds=1)), now)
    assert p.runs == ()
    assert p.dropped is not None and p.dropped.count == 9
    assert p.state.cursor == T0 + timedelta(hours=2), "dropped slots are handled"
    assert p.next_slot == T0 + timedelta(hours=2, minutes=15)


def test_all_policy_publishes_each_missed_slot_oldest_first() -> None:
    j = job("every: 15m", misfire="all")
    now = T0 + timedelta(hours=1, minutes=5)
    p = plan.plan_job(j, state_at(j, T0 - timedelta(seconds=1)), now)
    assert slots(p) == [T0 + timedelta(minutes=15 * k) for k in range(5)]
    assert {run.trigger for run in p.runs} == {Trigger.CATCHUP}
    assert p.dropped is None


def test_all_policy_publishes_at_most_a_thousand_and_counts_the_rest() -> None:
    j = job("every: 1s", misfire="all")
    now = T0 + timedelta(hours=1)  # 3600 slots: 61 on time (at most 60 s late), 3539 missed
    p = plan.plan_job(j, state_at(j, T0), now)
    catchups = [run.slot for run in p.runs if run.trigger is Trigger.CATCHUP]
    on_time = [run.slot for run in p.runs if run.trigger is Trigger.SCHEDULE]
    assert len(catchups) == plan.CATCHUP_LIMIT
    assert catchups == sorted(catchups)
    assert catchups[-1] == now - timedelta(seconds=61), "the newest missed ones are kept"
    assert on_time == [now - timedelta(seconds=60 - k) for k in range(61)]
    assert p.dropped is not None and p.dropped.count == 3539 - plan.CATCHUP_LIMIT


def test_a_slot_exactly_grace_late_is_still_on_time() -> None:
    j = job("every: 15m", grace="60s")
    p = plan.plan_job(j, state_at(j, T0 - timedelta(seconds=1)), T0 + timedelta(seconds=60))
    assert p.runs[0].trigger is Trigger.SCHEDULE
    p = plan.plan_job(j, state_at(j, T0 - timedelta(seconds=1)), T0 + timedelta(seconds=61))
    assert p.runs[0].trigger is Trigger.CATCHUP


def test_first_start_counts_nothing_before_now_as_missed() -> None:
    j = job("every: 1m")
    state = plan.current_state(j, None, T0 + timedelta(seconds=30))
    assert state.cursor == T0 + timedelta(seconds=30)
    p = plan.plan_job(j, state, T0 + timedelta(seconds=30))
    assert p.runs == () and p.dropped is None
    assert p.next_slot == T0 + timedelta(minutes=1)


def test_a_changed_schedule_starts_from_now_and_keeps_its_counters() -> None:
    old = job("every: 1m")
    new = job("every: 5m")
    assert old.fingerprint != new.fingerprint
    stored = state_at(old, T0 - timedelta(days=3))._replace(published=41, last_slot=T0)
    state = plan.current_state(new, stored, T0 + timedelta(minutes=7))
    assert state.cursor == T0 + timedelta(minutes=7)
    assert (state.published, state.last_slot) == (41, T0)
    assert plan.plan_job(new, state, T0 + timedelta(minutes=7)).runs == ()


def test_an_unchanged_schedule_keeps_its_cursor() -> None:
    j = job("every: 1m")
    stored = state_at(j, T0)
    assert plan.current_state(job("every: 1m"), stored, T0 + timedelta(days=1)) is stored


class CountingSchedule:
    def __init__(self, inner: Schedule) -> None:
        self.inner = inner
        self.calls = 0

    def next_after(self, t: datetime) -> datetime | None:
        self.calls += 1
        return self.inner.next_after(t)


@pytest.mark.parametrize("spec", ["cron: '* * * * * *'", "every: 1s"])
def test_a_week_of_downtime_for_a_one_second_job_is_planned_without_walking_it(spec: str) -> None:
    j = job(spec)
    counting = CountingSchedule(j.schedule)
    j = j._replace(schedule=counting)
    now = T0 + timedelta(days=7)
    p = plan.plan_job(j, state_at(j, T0), now)
    assert [run.slot for run in p.runs] == [now - timedelta(seconds=60 - k) for k in range(61)]
    assert {run.trigger for run in p.runs} == {Trigger.SCHEDULE}
    assert counting.calls < 20_000, "604,800 missed slots must not be visited one by one"
    assert p.dropped is not None
    assert abs(p.dropped.count - (604_800 - 61)) <= 604_800 * 0.01


def test_a_week_of_downtime_publishes_one_catch_up_when_nothing_is_on_time() -> None:
    j = job("every: 1s", grace="500ms")
    now = T0 + timedelta(days=7, milliseconds=700)
    p = plan.plan_job(j, state_at(j, T0), now)
    assert [(r.slot, r.trigger) for r in p.runs] == [(T0 + timedelta(days=7), Trigger.CATCHUP)]
    assert p.dropped is not None and p.dropped.count == 604_799


def test_a_done_one_off_job_plans_nothing() -> None:
    j = job("at: '2026-11-21T05:30:00Z'")
    p = plan.plan_job(j, state_at(j, T0), T0 + timedelta(days=1))
    assert p.runs == () and p.next_slot is None


def test_a_one_off_job_missed_while_down_runs_once_under_once() -> None:
    j = job("at: '2026-11-21T05:30:00Z'")
    p = plan.plan_job(j, state_at(j, T0 - timedelta(hours=1)), T0 + timedelta(hours=3))
    assert slots(p) == [T0]
    assert p.runs[0].trigger is Trigger.CATCHUP


def test_misfire_enum_matches_the_file_values() -> None:
    assert {m.value for m in Misfire} == {"once", "skip", "all"}


def test_the_on_time_path_is_bounded_too_the_older_on_time_slots_count_as_missed() -> None:
    # Issue 9, item 3: `every: 1s` with `grace: 1d` after 20 hours down planned 72,000 runs.
    j = job("every: 1s", misfire="skip", grace="1d")
    now = T0 + timedelta(hours=20)
    p = plan.plan_job(j, state_at(j, T0), now)
    assert len(p.runs) == plan.ON_TIME_LIMIT
    assert slots(p)[-1] == now and slots(p)[0] == now - timedelta(seconds=999)
    assert p.dropped is not None and p.dropped.count == 72_000 - plan.ON_TIME_LIMIT
    assert p.state.cursor == now


@pytest.mark.parametrize(
    "spec",
    ["* * * * *", "*/7 9-17 * * 1-5", "0 0 L * *", "30 2 * * *", "15 * 1,15 * *", "* * * * * *"],
)
@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
def test_missed_cron_slots_are_counted_by_days_to_within_a_dst_hour(spec: str, zone: str) -> None:
    # Issue 9, item 12: a week down with 1,000 `* * * * *` jobs took 105 s a pass, walking
    # 10,000 slots per job to count the missed ones.
    j = job(f"cron: '{spec}'\n    timezone: {zone}", misfire="skip")
    start = datetime(2026, 10, 24, 7, 13, 5, tzinfo=UTC)  # Berlin falls back on the 25th
    end = start + timedelta(days=2 if spec.count(" ") == 5 else 9, hours=3)
    exact = sum(1 for _ in plan.slots_between(j.schedule, start, end))
    slop = 3600 if spec.count(" ") == 5 else 60
    assert abs(plan._count(j, start, end) - exact) <= (0 if zone == "UTC" else slop)
