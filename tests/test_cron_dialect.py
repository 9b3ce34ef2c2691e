"""The dialect users bring from croniter, cronsim, Quartz and Celery: `W`, `LW`, `L`/`L-n` as
range ends, wrapping ranges, `#` on ranges, `?`, full names, croniter's seconds-last reading.

Each is checked against croniter or cronsim where they define the same thing, and everywhere
against tests/cron_oracle.py, a term-by-term definition by brute force. Time zones are
tests/test_dst.py's business; here everything is UTC.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice

import pytest
from cron_oracle import Definition
from croniter import croniter
from cronsim import CronSim

from beatd.core.cron import CronSchedule, croniter_reading, parse
from beatd.core.errors import CronError

STARTS = [datetime(2026, 1, 1), datetime(2027, 6, 15, 13, 7, 31), datetime(2028, 2, 27)]


def ours(expression: str, start: datetime, count: int) -> list[datetime]:
    """beatd's next `count` fire times after a naive UTC start, naive."""
    schedule = CronSchedule(parse(expression), UTC)
    found: list[datetime] = []
    t = start.replace(tzinfo=UTC)
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        found.append(nxt.replace(tzinfo=None))
        t = nxt
    return found


def dates(expression: str, start: datetime, count: int) -> list[str]:
    return [t.strftime("%Y-%m-%d %a %H:%M") for t in ours(expression, start, count)]


# --- against croniter, cronsim and the definition ---------------------------------------------

SAME_IN_CRONITER = [
    "0 9 15W * *",
    "0 9 1W * *",
    "0 9 30W * *",
    "0 9 31W * *",  # croniter and beatd: the month's last day when it has no 31st
    "0 9 W15 * *",  # croniter's spelling
    "0 0 25-L * *",
    "0 0 29-L * *",
    "0 0 1-L/8 * *",
    "0 22-2 * * *",
    "0 22-2/2 * * *",
    "50-10/5 0 * * *",
    "0 0 * * FRI-MON",
    "30 22 * * sun-thu",
    "0 0 * nov-mar *",
    "0 0 * * mon-sun",
    "0 0 * * Fri-Sun",
    "0 0 * * 7-1",
    "0 0 * * MON-FRI#1",
    "0 0 * * mon#1,wed#2",
    "0 0 ? * 1",
    "0 0 1 * ?",
    "0 0 * * L5",
    "0,30 1,5 * * L2,L4",
    "1 1 7,14,21,L * *",
]


@pytest.mark.parametrize("expression", SAME_IN_CRONITER)
@pytest.mark.parametrize("start", STARTS, ids=str)
def test_fire_times_equal_croniter_and_the_definition(expression: str, start: datetime) -> None:
    found = ours(expression, start, 30)
    it = croniter(expression, start)
    assert [it.get_next(datetime) for _ in range(30)] == found
    assert Definition(expression).fires(start, 30) == found


SAME_IN_CRONSIM = [
    "0 0 LW * *",
    "0 12 LW 2 *",
    "0 0 * * 5L",
    "0 0 * * 1,3#2",  # croniter refuses to mix; cronsim and beatd take each term as it comes
    "0 9 * * 7/2",
    "0 0 * * 5-7/2",
    "0 0 * * 0-7",
    "0 0 L,15 * *",
    "0 0 * * sat#1,sun#2",
]


@pytest.mark.parametrize("expression", SAME_IN_CRONSIM)
@pytest.mark.parametrize("start", STARTS, ids=str)
def test_fire_times_equal_cronsim_and_the_definition(expression: str, start: datetime) -> None:
    found = ours(expression, start, 30)
    assert list(islice(CronSim(expression, start), 30)) == found
    assert Definition(expression).fires(start, 30) == found


ONLY_IN_THE_DEFINITION = [
    "0 0 L-3 * *",
    "0 0 L-3-L * *",
    "0 0 1-L-3 * *",
    "0 0 L-5/2 * *",
    "0 0 L-30 * *",
    "0 0 L-5-L-3 * *",
    "0 0 1,15W,LW * *",
    "0 0 28-3/2 * *",
    "0 0 * * 6-1/2",  # croniter: Saturdays only
    "0 0 * * fri-fri",  # croniter: every day (an equal range is the whole week)
    "0 0 * * mon-friL",
    "0 0 * * *#2",
    "0 0 */3 * mon-fri#2",
    "0 0 15W * fri",  # both restricted: either
    "30 23 1-7 JAN MON-FRI#1",  # either, by Debian's rule; croniter ANDs a `#` with the days
    "0 8 * september,december tuesday,thursday",
    "0 0 * * 1/2",
    "*/20 50-10/7 23-1 * * *",
    "0 0 L * ?",
]


@pytest.mark.parametrize("expression", ONLY_IN_THE_DEFINITION)
@pytest.mark.parametrize("start", STARTS, ids=str)
def test_fire_times_equal_the_definition(expression: str, start: datetime) -> None:
    assert Definition(expression).fires(start, 30) == ours(expression, start, 30)


# --- what each feature means, with dates -----------------------------------------------------


def test_w_is_the_nearest_weekday_and_never_leaves_the_month() -> None:
    # 2026: 1 Aug is a Saturday (Monday the 3rd, not Friday 31 July); 31 May is a Sunday
    # (Friday the 29th, not Monday 1 June); 15 Mar is a Sunday (Monday the 16th).
    assert dates("0 9 1W 8 *", datetime(2026, 1, 1), 1) == ["2026-08-03 Mon 09:00"]
    assert dates("0 9 31W 5 *", datetime(2026, 1, 1), 1) == ["2026-05-29 Fri 09:00"]
    assert dates("0 9 15W 3 *", datetime(2026, 1, 1), 1) == ["2026-03-16 Mon 09:00"]


def test_lw_is_the_last_weekday_of_the_month() -> None:
    # May 2026 ends on a Sunday, February 2026 on a Saturday, March 2026 on a Tuesday.
    assert dates("0 18 LW * *", datetime(2026, 2, 1), 4) == [
        "2026-02-27 Fri 18:00",
        "2026-03-31 Tue 18:00",
        "2026-04-30 Thu 18:00",
        "2026-05-29 Fri 18:00",
    ]


def test_l_minus_n_counts_back_from_the_last_day() -> None:
    # Quartz's L-3: three days before the last day, so the 28th of January, the 25th of
    # February 2026 and the 26th of February 2028.
    assert dates("0 0 L-3 1,2 *", datetime(2026, 1, 1), 2) == [
        "2026-01-28 Wed 00:00",
        "2026-02-25 Wed 00:00",
    ]
    assert dates("0 0 L-3 2 *", datetime(2028, 1, 1), 1) == ["2028-02-26 Sat 00:00"]


def test_l_as_a_range_end_follows_the_length_of_the_month() -> None:
    assert [t.day for t in ours("0 0 26-L 2 *", datetime(2028, 1, 1), 4)] == [26, 27, 28, 29]
    assert [t.day for t in ours("0 0 1-L-27 * *", datetime(2026, 1, 31), 3)] == [1, 1, 2]


def test_a_range_that_wraps_runs_past_the_end_of_its_field() -> None:
    assert parse("0 22-2 * * *").hours == (0, 1, 2, 22, 23)
    assert parse("50-10/5 * * * *").minutes == (0, 5, 10, 50, 55)
    assert parse("0 0 * nov-mar *").months == (1, 2, 3, 11, 12)
    assert parse("0 0 * * fri-mon").weekdays == frozenset({5, 6, 0, 1})
    assert parse("0 0 * * fri-mon/2").weekdays == frozenset({5, 0})  # Fri, Sun: the walk's order
    assert parse("0 0 30-2 * *").days == frozenset({30, 31, 1, 2})


def test_a_range_of_one_value_is_that_value_not_the_whole_cycle() -> None:
    # croniter reads `fri-fri` as every day; Debian cron and cronsim as Friday.
    assert parse("0 0 * * fri-fri").weekdays == frozenset({5})
    assert parse("0 0 * * 7-7/2").weekdays == frozenset({0})


@pytest.mark.parametrize("expression", ["0 9 * * 7/1", "0 9 * * 7/2", "0 9 * * 7/3"])
def test_seven_with_a_step_is_sunday(expression: str) -> None:
    # Issue 9: `7/2` passed `beatd check` and never fired. 7 runs to the end of the field, 7.
    assert parse(expression).weekdays == frozenset({0})
    assert dates(expression, datetime(2026, 1, 1), 2) == [
        "2026-01-04 Sun 09:00",
        "2026-01-11 Sun 09:00",
    ]


def test_hash_on_a_range_is_each_weekday_of_that_week() -> None:
    expr = parse("0 0 * * mon-fri#1")
    assert expr.nth_weekdays == frozenset((d, 1) for d in range(1, 6))
    assert [t.day for t in ours("0 0 * * mon-fri#1", datetime(2026, 1, 1), 5)] == [2, 5, 6, 7, 2]


def test_question_mark_is_a_star_in_the_day_fields() -> None:
    assert replace(parse("0 12 ? * mon"), text="") == replace(parse("0 12 * * mon"), text="")
    assert ours("0 12 ? * mon", STARTS[0], 5) == ours("0 12 * * mon", STARTS[0], 5)
    assert ours("0 12 15 * ?", STARTS[0], 5) == ours("0 12 15 * *", STARTS[0], 5)


def test_full_names_are_the_short_names() -> None:
    assert parse("0 0 * april,JUNE tuesday-Thursday").months == (4, 6)
    assert parse("0 0 * * Sunday,saturday").weekdays == frozenset({0, 6})


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # Issue 9: non-ASCII digits raised ValueError or were read as numbers.
        ("¹ * * * *", "minute: '¹' is not a number 0-59 (cron numbers are ASCII digits 0-9)"),
        ("٣ * * * *", "minute: '٣' is not a number 0-59 (cron numbers are ASCII digits"),
        (
            "\uff13 * * * *",
            "minute: '\uff13' is not a number 0-59 (cron numbers are ASCII digits",
        ),  # fullwidth 3
        ("*/² * * * *", "minute: step must be a number, got '²'"),
        ("0 0 * * 1#³", "day-of-week: '1#³': the week after # must be 1-5"),
        ("0 0 1٣ * *", "day-of-month: '1٣' is not a number 1-31"),
        ("0 0 ٣W * *", "day-of-month: '٣w': W goes with one day, as in 15W or LW"),
        ("0 0 L-٣ * *", "day-of-month: '٣' is not a number 1-31 (cron numbers are ASCII"),
        ("9" * 5000 + " * * * *", "minute 999999999999...(5000 characters) out of range 0-59"),
        ("*/" + "9" * 5000 + " * * * *", None),  # a huge step is fine: just the first value
        ("0 0 32W * *", "day-of-month 32 out of range 1-31"),
        ("0 0 1-5W * *", "day-of-month: '1-5w': W goes with one day, as in 15W or LW"),
        ("0 0 L-0 * *", "day-of-month: 'L-0': n in L-n must be 1-30"),
        ("0 0 L-31 * *", "day-of-month: 'L-31': n in L-n must be 1-30"),
        ("0 0 L-3-5 * *", "day-of-month: 'l-3-5': a range from L-3 ends at L or L-n"),
        ("0 0 L-2-L-5 * *", "day-of-month: range 'l-2-l-5' is backwards"),
        ("0 0 * * L", "day-of-week: L alone is not a day (Quartz reads it as Saturday)"),
        ("0 0 * * #2", "day-of-week: '#2': # and L go with a day or a range"),
        ("0 0 * * 5#0", "day-of-week: '5#0': the week after # must be 1-5"),
        ("? 0 * * *", "minute: ? only stands for a whole day field"),
        ("0 0 ?/2 * *", "day-of-month: ? stands alone, for the whole field"),
        ("0 0 1-2-3 * *", "day-of-month: '1-2-3' is not a range like 1-5"),
        ("0 0 * * tues", "day-of-week: 'tues' is not a number 0-7 or a name sun-sat"),
        ("0 0 1-7 * *#2", "never matches"),  # days 1-7 and the second week: both must hold
        ("0 0 LW * */7", "never matches"),  # the last weekday and a Sunday
        ("0 0 L-29 2 *", "never matches: no month in '2' has day L-29"),
    ],
)
def test_bad_expressions_name_the_field(expression: str, message: str | None) -> None:
    if message is None:
        parse(expression)
        return
    with pytest.raises(CronError) as caught:
        parse(expression)
    assert message in str(caught.value)


def test_a_six_field_expression_that_only_reads_seconds_last_says_so() -> None:
    assert croniter_reading("0 0 * * mon 5") is not None
    with pytest.raises(CronError, match=r"as croniter writes them: '5 0 0 \* \* mon'"):
        parse("0 0 * * mon 5")


# --- croniter's seconds-last order ------------------------------------------------------------


def test_croniter_reading_is_offered_when_both_readings_are_valid_and_differ() -> None:
    theirs = croniter_reading("0 0 * * * 5")
    assert theirs is not None
    assert (theirs.seconds, theirs.minutes, theirs.hours) == ((5,), (0,), (0,))
    it = croniter("0 0 * * * 5", STARTS[0])
    assert it.get_next(datetime) == datetime(2026, 1, 1, 0, 0, 5)
    assert ours("5 0 0 * * *", STARTS[0], 1) == [datetime(2026, 1, 1, 0, 0, 5)]


@pytest.mark.parametrize(
    "expression",
    [
        "*/15 * * * *",  # five fields: no question
        "* * * * * *",  # the same either way
        "30 0 0 * * mon",  # only beatd's reading is valid (mon is no second)
    ],
)
def test_croniter_reading_is_none_when_nothing_is_ambiguous(expression: str) -> None:
    assert croniter_reading(expression) is None
