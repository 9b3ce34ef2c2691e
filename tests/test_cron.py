"""Cron expressions: parsing, error messages, Jenkins `H`, day matching, and agreement with
croniter and cronsim in UTC (time zones are tests/test_dst.py's business)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from cronsim import CronSim

from beatd.core import cron
from beatd.core.cron import CronExpr, CronSchedule, parse
from beatd.core.errors import CronError
from tests.clock import utc

START = datetime(2026, 1, 1, tzinfo=UTC)


def fires(expr: str | CronExpr, start: datetime = START, count: int = 5) -> list[datetime]:
    """The next `count` fire times after start, in UTC."""
    schedule = CronSchedule(parse(expr) if isinstance(expr, str) else expr, UTC)
    found: list[datetime] = []
    t = start
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        found.append(nxt)
        t = nxt
    return found


# --- fields -----------------------------------------------------------------------------------


def test_five_fields_are_minute_hour_day_of_month_month_day_of_week() -> None:
    expr = parse("5 4 3 2 1")
    assert expr.seconds == (0,)
    assert expr.minutes == (5,)
    assert expr.hours == (4,)
    assert expr.days == frozenset({3})
    assert expr.months == (2,)
    assert expr.weekdays == frozenset({1})


def test_six_fields_put_seconds_first() -> None:
    expr = parse("30 5 4 * * *")
    assert expr.seconds == (30,)
    assert expr.minutes == (5,)
    assert expr.hours == (4,)
    assert fires(expr, count=2) == [utc(2026, 1, 1, 4, 5, 30), utc(2026, 1, 2, 4, 5, 30)]


def test_six_fields_can_fire_every_few_seconds() -> None:
    assert fires("*/20 * * * * *", utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]


def test_extra_whitespace_between_fields_is_ignored() -> None:
    assert parse("  */15   *\t* * *  ").text == "*/15 * * * *"


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros_mean_their_five_field_equivalent(macro: str, equivalent: str) -> None:
    assert fires(macro, count=3) == fires(equivalent, count=3)
    assert parse(macro).fixed_time == parse(equivalent).fixed_time


def test_reboot_is_rejected_with_a_pointer_to_at() -> None:
    with pytest.raises(CronError, match=r"@reboot .*`at:`"):
        parse("@reboot")


def test_an_unknown_macro_lists_the_known_ones() -> None:
    with pytest.raises(
        CronError, match=r"unknown macro '@fortnightly' \(one of @yearly, .*@hourly\)"
    ):
        parse("@fortnightly")


def test_month_and_day_names_work_in_any_case_and_in_ranges() -> None:
    expr = parse("0 9 * JAN,mar-May Mon-FRI")
    assert expr.months == (1, 3, 4, 5)
    assert expr.weekdays == frozenset({1, 2, 3, 4, 5})


def test_ranges_steps_and_lists_combine() -> None:
    expr = parse("1-10/3,30,45-47 */6 1-31/10 * *")
    assert expr.minutes == (1, 4, 7, 10, 30, 45, 46, 47)
    assert expr.hours == (0, 6, 12, 18)
    assert expr.days == frozenset({1, 11, 21, 31})


def test_a_single_value_with_a_step_runs_to_the_end_of_the_field() -> None:
    assert parse("50/4 * * * *").minutes == (50, 54, 58)


def test_seven_and_zero_both_mean_sunday() -> None:
    assert parse("0 0 * * 7").weekdays == frozenset({0})
    assert parse("0 0 * * 5-7").weekdays == frozenset({0, 5, 6})
    # 2026-01-04 is a Sunday.
    assert fires("0 0 * * 7", count=1) == [utc(2026, 1, 4)]


def test_star_in_day_of_week_is_every_day_once() -> None:
    assert parse("0 0 * * *").weekdays == frozenset(range(7))
    assert parse("0 0 * * */2").weekdays == frozenset({0, 2, 4, 6})


# --- L and # ----------------------------------------------------------------------------------


def test_l_in_day_of_month_is_the_last_day_of_each_month() -> None:
    assert fires("0 12 L * *", utc(2028, 1, 1), 3) == [
        utc(2028, 1, 31, 12),
        utc(2028, 2, 29, 12),  # a leap year
        utc(2028, 3, 31, 12),
    ]


def test_l_can_be_listed_with_other_days() -> None:
    assert fires("0 0 15,L * *", utc(2026, 4, 1), 3) == [
        utc(2026, 4, 15),
        utc(2026, 4, 30),
        utc(2026, 5, 15),
    ]


def test_hash_in_day_of_week_is_the_nth_such_weekday() -> None:
    # The second Friday of January, February and March 2026.
    assert fires("0 8 * * 5#2", count=3) == [
        utc(2026, 1, 9, 8),
        utc(2026, 2, 13, 8),
        utc(2026, 3, 13, 8),
    ]


def test_a_fifth_weekday_skips_months_without_one() -> None:
    # In 2026 only January, May and July (then October) have a fifth Friday.
    found = fires("0 0 * * fri#5", count=3)
    assert [d.month for d in found] == [1, 5, 7]
    assert all(d.weekday() == 4 and d.day > 28 for d in found)


def test_l_after_a_weekday_is_the_last_such_weekday_of_the_month() -> None:
    assert fires("0 0 * * 5L", count=3) == [utc(2026, 1, 30), utc(2026, 2, 27), utc(2026, 3, 27)]


def test_the_week_after_a_hash_must_be_one_to_five() -> None:
    with pytest.raises(CronError, match=r"day-of-week: '5#6': the week after # must be 1-5"):
        parse("0 0 * * 5#6")
    with pytest.raises(CronError, match="day-of-week"):
        parse("0 0 * * 5#")


# --- Debian's day-of-month / day-of-week rule -------------------------------------------------


def test_both_day_fields_restricted_means_either_matches() -> None:
    # The 13th, or any Friday: Debian cron ORs the two fields when neither starts with `*`.
    found = fires("0 0 13 * fri", count=4)
    assert found == [utc(2026, 1, 2), utc(2026, 1, 9), utc(2026, 1, 13), utc(2026, 1, 16)]


def test_a_day_of_month_starting_with_star_means_both_must_match() -> None:
    # `*/2` in day-of-month starts with `*`, so it is ANDed: odd days that are Mondays.
    # (croniter ORs here, since the field is "restricted"; Debian and cronsim AND.)
    found = fires("0 0 */2 * mon", count=3)
    assert found == [utc(2026, 1, 5), utc(2026, 1, 19), utc(2026, 2, 9)]
    assert all(d.day % 2 == 1 and d.weekday() == 0 for d in found)


def test_a_day_of_week_starting_with_star_means_both_must_match() -> None:
    found = fires("0 0 1-7 * */7", count=2)  # `*/7` is just Sunday: the first Sunday of a month
    assert found == [utc(2026, 1, 4), utc(2026, 2, 1)]


def test_an_unrestricted_day_of_week_leaves_day_of_month_alone() -> None:
    assert fires("0 0 13 * *", count=2) == [utc(2026, 1, 13), utc(2026, 2, 13)]


# --- Jenkins H --------------------------------------------------------------------------------


NAMES = [f"job-{i}" for i in range(200)]


def test_h_is_stable_for_a_job_name() -> None:
    assert parse("H H * * *", "backup").minutes == parse("H H * * *", "backup").minutes
    assert fires(parse("H H * * *", "backup")) == fires(parse("H  H * * *", "backup"))


def test_h_spreads_different_job_names() -> None:
    minutes = {parse("H * * * *", name).minutes for name in NAMES}
    assert len(minutes) > 50  # 200 names over 60 minutes: collisions, but a spread


def test_h_hashes_each_field_independently() -> None:
    pairs = {(e.minutes, e.hours) for e in (parse("H H * * *", n) for n in NAMES)}
    assert len({m for m, _ in pairs}) > 1
    assert not all(m[0] == h[0] for m, h in pairs)


def test_h_with_a_range_stays_in_the_range() -> None:
    hours = {parse("0 H(1-5) * * *", name).hours for name in NAMES}
    assert hours == {(h,) for h in range(1, 6)}


def test_h_with_a_step_starts_at_a_hashed_offset_below_the_step() -> None:
    starts = set()
    for name in NAMES:
        minutes = parse("H/15 * * * *", name).minutes
        assert len(minutes) == 4
        assert all(b - a == 15 for a, b in pairwise(minutes))
        starts.add(minutes[0])
    assert starts == set(range(15))


def test_h_with_a_range_and_a_step_stays_in_the_range() -> None:
    for name in NAMES:
        hours = parse("0 H(8-17)/3 * * *", name).hours
        assert 8 <= hours[0] < 11
        assert hours == tuple(range(hours[0], 18, 3))


def test_h_in_day_of_month_picks_a_day_every_month_has() -> None:
    days = {next(iter(parse("0 0 H * *", name).days)) for name in NAMES * 3}
    assert days <= set(range(1, 29))
    assert len(days) > 20


def test_h_depends_on_the_job_name_even_inside_a_list() -> None:
    found = {parse("0,H * * * *", name).minutes for name in NAMES[:50]}
    assert len(found) > 10


def test_h_in_day_of_week_is_a_single_weekday() -> None:
    weekdays = {parse("0 0 * * H", name).weekdays for name in NAMES}
    assert weekdays == {frozenset({d}) for d in range(7)}


# Every place an `H` can stand, and the odd ones: `LH` in day-of-week hashes the empty name.
H_EXPRESSIONS = [
    "H * * * *", "H H * * *", "H/15 * * * *", "H H(0-5) * * 1-5", "H(0-29)/10 * * * *",
    "H H H * *", "0,H * * * *", "0 0 * * H", "0 0 * * lh", "0 0 * * hl", "0 0 * * h#2",
    "0 0 * * H(1-5)#3", "0 0 H(28-31) 2 *", "H H(0-10),H(12-23)/5 * * *", "H H H H H H",
    "H/7 H/5 H/9 H(1-12)/5 H", "0 0 H,L * *", "0 0 H,15W * *", "H(0-59)/61 * * * *",
    "30 H(0-5) H * 1#1", "H H * * 0 H", "0 0 1-L/H * *", "H(5-1) * * * *",
]  # fmt: skip


@pytest.mark.parametrize("expression", H_EXPRESSIONS)
def test_h_fields_parsed_once_per_period_match_each_names_own_hash(expression: str) -> None:
    # Jobs whose names hash alike modulo a field's period share one parsed expression; each
    # must still equal the expression built from the name's whole hash, error for error.
    text = " ".join(expression.split())
    for name in ["", *NAMES]:
        try:
            ours: CronExpr | str = parse(expression, name)
        except CronError as exc:
            ours = str(exc)
        try:
            whole: CronExpr | str = cron._build(
                text, cron._fields(text), cron._full_spreads(text, name)
            )
        except CronError as exc:
            whole = str(exc)
        if isinstance(ours, str) and isinstance(whole, str):
            assert ours.startswith(whole), (name, ours, whole)  # plus croniter's hint, if any
        else:
            assert ours == whole, name


def test_h_expressions_are_shared_between_names_that_hash_alike() -> None:
    parsed = {id(parse("H * * * *", name)) for name in NAMES}
    assert len(parsed) <= 60


def test_a_schedule_answers_a_repeated_question_without_confusing_the_two_folds() -> None:
    # 01:30 in Berlin's repeated hour is two instants with equal fields; the schedule
    # remembers its last answer, and must not give the first instant's to the second.
    zone = ZoneInfo("Europe/Berlin")
    schedule = CronSchedule(parse("*/20 * * * *"), zone)
    first = datetime(2026, 10, 25, 2, 30, tzinfo=zone, fold=0)
    second = first.replace(fold=1)
    assert schedule.next_after(first) == schedule.next_after(first)
    assert schedule.next_after(second) == datetime(2026, 10, 25, 1, 40, tzinfo=UTC)
    assert schedule.next_after(first) == datetime(2026, 10, 25, 0, 40, tzinfo=UTC)


def test_an_h_expression_runs_at_its_hashed_time() -> None:
    expr = parse("H H * * *", "nightly")
    (minute,), (hour,) = expr.minutes, expr.hours
    assert fires(expr, count=1) == [utc(2026, 1, 1, hour, minute)]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("H(5-1) * * * *", r"minute: range 'h\(5-1\)' is backwards"),
        ("H(5) * * * *", r"minute: 'h\(5\)' is not H, H\(a-b\), H/n or H\(a-b\)/n"),
        ("H(0-60) * * * *", r"minute 60 out of range 0-59"),
        ("H/0 * * * *", r"minute: step must be positive, got 0"),
    ],
)
def test_bad_h_terms_say_what_is_allowed(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse(expression, "job")


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute 61 out of range 0-59"),
        ("0 24 * * *", "hour 24 out of range 0-23"),
        ("0 0 0 * *", "day-of-month 0 out of range 1-31"),
        ("0 0 32 * *", "day-of-month 32 out of range 1-31"),
        ("0 0 * 13 *", "month 13 out of range 1-12"),
        ("0 0 * * 8", "day-of-week 8 out of range 0-7"),
        ("60 * * * * *", "second 60 out of range 0-59"),
        ("*/0 * * * *", "minute: step must be positive, got 0"),
        ("0 */0 * * *", "hour: step must be positive, got 0"),
        ("*/x * * * *", "minute: step must be a number, got 'x'"),
        ("x * * * *", "minute: 'x' is not a number 0-59"),
        ("0 0 * foo *", "month: 'foo' is not a number 1-12 or a name jan-dec"),
        ("0 0 * * funday", "day-of-week: 'funday' is not a number 0-7 or a name sun-sat"),
        ("1,,2 * * * *", "minute: empty value"),
        ("0 -1 * * *", "hour: '-1' is not a range like 1-5"),
        ("0 1- * * *", "hour: '1-' is not a range like 1-5"),
        (
            "* * *",
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            "or 6 with seconds first; got 3",
        ),
        ("", "expected 5 fields"),
        ("0 0 0 0 0 0 0", "got 7"),
    ],
)
def test_every_error_names_the_field_and_the_bad_value(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(expression)
    assert message in str(caught.value)


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 feb *"])
def test_an_expression_that_never_matches_is_an_error_not_a_hang(expression: str) -> None:
    with pytest.raises(CronError, match="never matches"):
        parse(expression)


def test_a_day_that_only_some_listed_months_have_is_fine() -> None:
    assert fires("0 0 31 2,3 *", count=2) == [utc(2026, 3, 31), utc(2027, 3, 31)]


def test_the_29th_of_february_waits_for_a_leap_year() -> None:
    assert fires("0 0 29 2 *", count=2) == [utc(2028, 2, 29), utc(2032, 2, 29)]


def test_a_rare_match_decades_apart_is_still_found() -> None:
    # 29 February on a Sunday (`*/7` starts with `*`, so both day fields must match): the
    # gaps are 28 and 40 years, inside the 50-year search bound.
    rare = CronSchedule(parse("0 0 29 2 */7"), UTC)
    assert rare.next_after(START) == utc(2032, 2, 29)
    assert rare.next_after(utc(2060, 3, 1)) == utc(2088, 2, 29)
    assert rare.next_after(utc(2088, 3, 1)) == utc(2128, 2, 29)


def test_the_search_gives_up_at_the_end_of_the_calendar_instead_of_failing() -> None:
    assert CronSchedule(parse("0 0 29 2 */7"), UTC).next_after(utc(9980, 1, 1)) is None
    assert CronSchedule(parse("0 0 * * *"), UTC).next_after(utc(9999, 12, 31, 0, 1)) is None


# --- next_after -------------------------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    schedule = CronSchedule(parse("*/15 * * * *"), UTC)
    assert schedule.next_after(utc(2026, 1, 1, 0, 15)) == utc(2026, 1, 1, 0, 30)
    assert schedule.next_after(utc(2026, 1, 1, 0, 14, 59, 999_999)) == utc(2026, 1, 1, 0, 15)
    assert schedule.next_after(utc(2026, 1, 1, 0, 15, 0, 1)) == utc(2026, 1, 1, 0, 30)


def test_next_after_rolls_over_the_end_of_a_year() -> None:
    assert fires("59 23 31 12 *", utc(2026, 12, 31, 23, 59), 1) == [utc(2027, 12, 31, 23, 59)]
    assert fires("0 0 * * *", utc(2026, 12, 31, 23, 59, 59), 1) == [utc(2027, 1, 1)]


def test_next_after_accepts_any_zone_for_its_argument() -> None:
    from zoneinfo import ZoneInfo

    t = datetime(2026, 1, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # midnight UTC
    assert CronSchedule(parse("0 * * * *"), UTC).next_after(t) == utc(2026, 1, 1, 1)


# --- agreement with croniter and cronsim in UTC -----------------------------------------------

# Plain expressions: no `H` (its hash is ours), no `L`/`#` spelling differences, and no `*/n`
# in a day field next to a restricted other day field (croniter ORs those; Debian ANDs).
PLAIN = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "15,45 */3 * * *",
    "30 2 * * *",
    "0 9-17 * * mon-fri",
    "0 0 1 * *",
    "0 0 1 1 *",
    "0 0 13 * 5",
    "0 12 1,15 * 1",
    "5 4 * * sun",
    "0 0 29 2 *",
    "0 0 31 * *",
    "*/10 8-10 * jan,jul *",
    "0 22 * * 1-5",
    "23 0-20/2 * * *",
    "0 0 * * 6,0",
    "1-5/2 3 * 2-11/3 *",
    "0 0 28-31 * *",
    "59 23 L * *",
]


@pytest.mark.parametrize("expression", PLAIN)
@pytest.mark.parametrize("start", [utc(2026, 1, 1), utc(2027, 2, 27, 13, 7, 31), utc(2028, 12, 31)])
def test_utc_fire_times_equal_croniter_and_cronsim(expression: str, start: datetime) -> None:
    ours = fires(expression, start, 25)
    if "L" not in expression:
        it = croniter(expression, start)
        assert [it.get_next(datetime) for _ in range(25)] == ours
    assert list(islice(CronSim(expression, start), 25)) == ours


def test_a_starred_day_field_follows_cronsim_where_croniter_differs() -> None:
    expression = "0 0 */2 * mon"  # Debian: odd days that are Mondays; croniter: either
    ours = fires(expression, count=10)
    assert list(islice(CronSim(expression, START), 10)) == ours
    assert croniter(expression, START).get_next(datetime) == utc(2026, 1, 3)
    assert ours[0] == utc(2026, 1, 5)


def test_a_minute_job_fires_sixty_times_an_hour() -> None:
    found = fires("* * * * *", count=60)
    assert found[-1] - found[0] == timedelta(minutes=59)
