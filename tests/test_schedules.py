"""Interval, one-off and cron schedules, jitter, and the bounded searches over their slots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beatd.core.config import Job, parse_config
from beatd.core.cron import CronSchedule, parse
from beatd.core.schedules import EPOCH, At, Cron, Interval, Schedule, latest_between, slots_between
from tests.clock import utc

T0 = datetime(2026, 3, 14, 9, 26, 53, 589_793, tzinfo=UTC)


def take(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    slots: list[datetime] = []
    t: datetime | None = after
    while len(slots) < count:
        assert t is not None
        t = schedule.next_after(t)
        assert t is not None
        slots.append(t)
    return slots


@dataclass
class Counting:
    """A schedule wrapper that counts next_after calls."""

    inner: Schedule
    calls: list[datetime] = field(default_factory=list)

    def next_after(self, t: datetime) -> datetime | None:
        self.calls.append(t)
        return self.inner.next_after(t)


# --- Interval ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [utc(2026, 1, 1), T0, utc(2026, 1, 1, 0, 14, 59, 999_999)])
def test_fifteen_minutes_fire_on_the_quarter_hours_whatever_the_start(start: datetime) -> None:
    slots = take(Interval(timedelta(minutes=15)), start, 8)
    assert {s.minute for s in slots} == {0, 15, 30, 45}
    assert all(s.second == 0 and s.microsecond == 0 for s in slots)
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(slots))
    assert start < slots[0] <= start + timedelta(minutes=15)


def test_an_interval_slot_is_strictly_after_the_given_time() -> None:
    every = Interval(timedelta(minutes=15))
    assert every.next_after(utc(2026, 1, 1, 0, 15)) == utc(2026, 1, 1, 0, 30)
    assert every.next_after(utc(2026, 1, 1, 0, 14, 59, 999_999)) == utc(2026, 1, 1, 0, 15)


def test_intervals_are_aligned_to_the_unix_epoch() -> None:
    slots = take(Interval(timedelta(minutes=7)), T0, 20)
    assert all((s - EPOCH) % timedelta(minutes=7) == timedelta(0) for s in slots)


def test_half_second_intervals_fire_twice_a_second() -> None:
    assert take(Interval(timedelta(milliseconds=500)), utc(2026, 1, 1, 0, 0, 0, 250_000), 3) == [
        utc(2026, 1, 1, 0, 0, 0, 500_000),
        utc(2026, 1, 1, 0, 0, 1),
        utc(2026, 1, 1, 0, 0, 1, 500_000),
    ]


def test_two_day_intervals_count_from_the_epoch_not_from_the_start() -> None:
    # 1970-01-01 plus a whole number of two-day periods: 2026-01-01 is day 20454 (even).
    assert Interval(timedelta(days=2)).next_after(utc(2026, 1, 1, 12)) == utc(2026, 1, 3)


def test_an_interval_ignores_daylight_saving_time() -> None:
    zone = ZoneInfo("Europe/Berlin")
    before = datetime(2026, 3, 29, 1, 0, tzinfo=zone)  # the clocks skip 02:00-03:00
    slots = take(Interval(timedelta(hours=1)), before, 3)
    assert [s - before for s in slots] == [timedelta(hours=h) for h in (1, 2, 3)]


def test_an_interval_offset_shifts_every_slot() -> None:
    plain = take(Interval(timedelta(minutes=15)), T0, 4)
    shifted = take(Interval(timedelta(minutes=15), timedelta(seconds=42)), T0, 4)
    assert [s + timedelta(seconds=42) for s in plain] == shifted


def test_latest_at_or_before_includes_an_exact_slot() -> None:
    every = Interval(timedelta(minutes=15))
    assert every.latest_at_or_before(utc(2026, 1, 1, 0, 30)) == utc(2026, 1, 1, 0, 30)
    assert every.latest_at_or_before(utc(2026, 1, 1, 0, 29, 59)) == utc(2026, 1, 1, 0, 15)


# --- At ---------------------------------------------------------------------------------------


def test_at_has_one_slot_and_then_none() -> None:
    once = At(utc(2027, 1, 1))
    assert once.next_after(utc(2026, 12, 31)) == utc(2027, 1, 1)
    assert once.next_after(utc(2027, 1, 1)) is None
    assert once.next_after(utc(2028, 1, 1)) is None


def test_at_in_slots_between_yields_one_slot() -> None:
    assert list(slots_between(At(utc(2027, 1, 1)), utc(2026, 1, 1), utc(2030, 1, 1))) == [
        utc(2027, 1, 1)
    ]


# --- Cron wrapper -----------------------------------------------------------------------------


def test_a_cron_offset_delays_each_slot_and_keeps_slots_strictly_increasing() -> None:
    schedule = Cron(CronSchedule(parse("*/15 * * * *"), UTC), timedelta(minutes=3))
    assert take(schedule, utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1, 0, 3),
        utc(2026, 1, 1, 0, 18),
        utc(2026, 1, 1, 0, 33),
    ]
    assert schedule.next_after(utc(2026, 1, 1, 0, 17)) == utc(2026, 1, 1, 0, 18)


# --- jitter from the file ---------------------------------------------------------------------


def jittered(names: list[str], jitter: str, schedule: str = "every: 1h") -> dict[str, Job]:
    body = "".join(f"  {n}:\n    {schedule}\n    task: t\n    jitter: {jitter}\n" for n in names)
    config = parse_config(f"jobs:\n{body}", "jobs.yaml", {})
    return {job.name: job for job in config.jobs}


def offset(job: Job) -> timedelta:
    schedule = job.schedule
    assert isinstance(schedule, Interval | Cron)
    return schedule.offset


NAMES = [f"job-{i}" for i in range(100)]


def test_jitter_is_a_fixed_offset_per_job_name_below_the_jitter() -> None:
    first = {name: offset(job) for name, job in jittered(NAMES, "5m").items()}
    again = {name: offset(job) for name, job in jittered(list(reversed(NAMES)), "5m").items()}
    assert first == again
    assert all(timedelta(0) <= o < timedelta(minutes=5) for o in first.values())
    assert all(o.microseconds == 0 for o in first.values())  # whole seconds
    assert len(set(first.values())) > 50  # spread out, not all the same


def test_jitter_under_two_seconds_is_spread_in_milliseconds() -> None:
    offsets = {offset(job) for job in jittered(NAMES, "500ms").values()}
    assert all(timedelta(0) <= o < timedelta(milliseconds=500) for o in offsets)
    assert all(o.microseconds % 1000 == 0 for o in offsets)  # whole milliseconds
    assert len(offsets) > 50


def test_a_jittered_interval_fires_at_its_offset_after_each_slot() -> None:
    job = jittered(["report"], "10m")["report"]
    o = offset(job)
    assert take(job.schedule, utc(2025, 12, 31, 23, 59), 2) == [
        utc(2026, 1, 1) + o,
        utc(2026, 1, 1, 1) + o,
    ]


def test_a_jittered_cron_job_fires_at_its_offset_after_each_cron_time() -> None:
    job = jittered(["report"], "10m", 'cron: "0 3 * * *"')["report"]
    o = offset(job)
    assert timedelta(0) < o < timedelta(minutes=10)
    assert take(job.schedule, utc(2026, 1, 1), 2) == [
        utc(2026, 1, 1, 3) + o,
        utc(2026, 1, 2, 3) + o,
    ]


def test_zero_jitter_means_no_offset() -> None:
    job = jittered(["a"], "0s")["a"]
    assert offset(job) == timedelta(0)


# --- latest_between and slots_between ---------------------------------------------------------

SCHEDULES: dict[str, Schedule] = {
    "interval 7m": Interval(timedelta(minutes=7)),
    "interval 90s jittered": Interval(timedelta(seconds=90), timedelta(seconds=13)),
    "cron */10 9-17 weekdays": Cron(CronSchedule(parse("*/10 9-17 * * 1-5"), UTC)),
    "cron 30 1 in New York": Cron(CronSchedule(parse("30 1 * * *"), ZoneInfo("America/New_York"))),
    "cron every minute in Lord Howe": Cron(
        CronSchedule(parse("* * * * *"), ZoneInfo("Australia/Lord_Howe"))
    ),
    "cron seconds": Cron(CronSchedule(parse("*/7 0 * * * *"), UTC)),
    "cron jittered": Cron(CronSchedule(parse("0 * * * *"), UTC), timedelta(seconds=2)),
}
WINDOWS = [
    (utc(2026, 11, 1, 4), timedelta(hours=3)),  # the New York fall-back
    (utc(2026, 3, 6, 20), timedelta(days=3)),  # a weekend
    (utc(2026, 10, 3, 15, 0, 0, 1), timedelta(hours=1, seconds=1)),  # Lord Howe half-hour jump
    (utc(2026, 1, 5, 9, 10), timedelta(0)),  # an empty window
    (utc(2026, 1, 5, 9, 10), timedelta(seconds=30)),
]


def scan(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    slots = []
    t = schedule.next_after(after)
    while t is not None and t <= until:
        slots.append(t)
        t = schedule.next_after(t)
    return slots


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(("after", "length"), WINDOWS)
def test_latest_between_is_the_newest_slot_a_full_scan_finds(
    name: str, after: datetime, length: timedelta
) -> None:
    schedule = SCHEDULES[name]
    slots = scan(schedule, after, after + length)
    assert latest_between(schedule, after, after + length) == (slots[-1] if slots else None)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize(("after", "length"), WINDOWS)
def test_slots_between_yields_every_slot_in_the_window_oldest_first(
    name: str, after: datetime, length: timedelta
) -> None:
    schedule = SCHEDULES[name]
    slots = list(slots_between(schedule, after, after + length))
    assert slots == scan(schedule, after, after + length)
    assert all(after < s <= after + length for s in slots)


def test_latest_between_excludes_the_start_and_includes_the_end() -> None:
    every = Interval(timedelta(minutes=15))
    assert latest_between(every, utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 15)) is None
    assert latest_between(every, utc(2026, 1, 1, 0, 14), utc(2026, 1, 1, 0, 15)) == utc(
        2026, 1, 1, 0, 15
    )
    cron = Cron(CronSchedule(parse("*/15 * * * *"), UTC))
    assert latest_between(cron, utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 29)) is None
    assert latest_between(cron, utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 30)) == utc(
        2026, 1, 1, 0, 30
    )


def test_latest_between_after_a_week_down_for_a_one_second_job_takes_few_calls() -> None:
    counting = Counting(Cron(CronSchedule(parse("* * * * * *"), UTC)))
    after, now = utc(2026, 1, 1), utc(2026, 1, 8, 3, 4, 5, 678_000)
    assert latest_between(counting, after, now) == utc(2026, 1, 8, 3, 4, 5)
    assert len(counting.calls) < 50  # a scan would make 600,000


def test_latest_between_for_a_half_second_interval_needs_no_scan() -> None:
    counting = Counting(Interval(timedelta(milliseconds=500)))
    assert latest_between(counting, utc(2026, 1, 1), utc(2026, 1, 8, 0, 0, 0, 700_000)) == utc(
        2026, 1, 8, 0, 0, 0, 500_000
    )
    # An Interval is answered by arithmetic; a wrapper hides that and still bisects.
    assert len(counting.calls) < 50


def test_latest_between_with_a_single_slot_in_the_window_returns_it() -> None:
    assert latest_between(At(utc(2026, 6, 1)), utc(2026, 1, 1), utc(2027, 1, 1)) == utc(2026, 6, 1)
    assert latest_between(At(utc(2026, 6, 1)), utc(2026, 6, 1), utc(2027, 1, 1)) is None


def test_slots_between_is_lazy_so_a_caller_can_bound_a_huge_window() -> None:
    counting = Counting(Interval(timedelta(seconds=1)))
    first = list(islice(slots_between(counting, utc(2026, 1, 1), utc(2027, 1, 1)), 1000))
    assert len(first) == 1000
    assert first[-1] == utc(2026, 1, 1, 0, 16, 40)
    assert len(counting.calls) == 1000


@st.composite
def windows(draw: st.DrawFn) -> tuple[Schedule, datetime, datetime]:
    """A schedule and a window holding up to a few hundred of its slots."""
    after = utc(2026, 10, 31) + timedelta(milliseconds=draw(st.integers(0, 3 * 86_400_000)))
    if draw(st.booleans()):
        every = timedelta(milliseconds=draw(st.integers(1, 7_200_000)))
        offset = timedelta(milliseconds=draw(st.integers(0, 999))) % every
        schedule: Schedule = Interval(every, offset)
        if draw(st.booleans()):  # hide the type, so latest_between bisects instead
            schedule = Counting(schedule)
    else:
        expression = draw(st.sampled_from(["*/5 * * * *", "0 * * * *", "*/13 1-3 * * *"]))
        every = timedelta(minutes=5)
        schedule = Cron(CronSchedule(parse(expression), ZoneInfo("America/New_York")))
    length = every * draw(st.integers(0, 300)) + timedelta(milliseconds=draw(st.integers(0, 999)))
    return schedule, after, after + length


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(window=windows())
def test_latest_between_matches_a_scan_for_any_window(
    window: tuple[Schedule, datetime, datetime],
) -> None:
    schedule, after, until = window
    slots = scan(schedule, after, until)
    assert latest_between(schedule, after, until) == (slots[-1] if slots else None)
