"""`beatd calendar` and the DST notes it shares with `beatd list`: pinned cases per zone, a
property test against the expression itself, and the command through its entry point.

Transitions used (from tzdata):
- Europe/Berlin: 2027-03-28 01:00Z, 02:00 CET -> 03:00 CEST;
  2026-10-25 01:00Z, 03:00 CEST -> 02:00 CET
- America/New_York: 2026-03-08 07:00Z, 02:00 EST -> 03:00 EDT;
  2026-11-01 06:00Z, 02:00 EDT -> 01:00 EST
- Australia/Lord_Howe: 2026-10-03 15:30Z, 02:00 -> 02:30 (+1030 -> +11): a 30-minute gap
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beatd.cli import main
from beatd.core.calendar import fires
from beatd.core.cron import CronSchedule, parse


def notes(expression: str, zone: str, now: str, count: int) -> list[tuple[str, str]]:
    schedule = CronSchedule(parse(expression), ZoneInfo(zone))
    start = datetime.fromisoformat(now)
    return [
        (fire.at.astimezone(schedule.zone).isoformat(), fire.note)
        for fire in itertools.islice(fires(schedule, start), count)
    ]


@pytest.mark.parametrize(
    ("expression", "zone", "now", "want"),
    [
        (
            "30 2 * * *", "Europe/Berlin", "2027-03-27T12:00:00+00:00",
            [("2027-03-28T03:00:00+02:00", "DST: 02:30 skipped, runs at 03:00"),
             ("2027-03-29T02:30:00+02:00", "")],
        ),
        (
            "*/20 2 * * *", "Europe/Berlin", "2027-03-27T12:00:00+00:00",
            [("2027-03-29T02:00:00+02:00", "DST: 02:00-03:00 skipped, no runs in it"),
             ("2027-03-29T02:20:00+02:00", "")],
        ),
        (
            "0 3 * * *", "Europe/Berlin", "2027-03-27T12:00:00+00:00",  # 03:00 itself is real
            [("2027-03-28T03:00:00+02:00", ""), ("2027-03-29T03:00:00+02:00", "")],
        ),
        (
            "30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00+00:00",
            [("2026-10-25T02:30:00+02:00", "DST: 02:30 comes twice, runs at the first only"),
             ("2026-10-26T02:30:00+01:00", "")],
        ),
        (
            "15 * * * *", "America/New_York", "2026-11-01T05:00:00+00:00",
            [("2026-11-01T01:15:00-04:00", "DST: repeated hour, first time"),
             ("2026-11-01T01:15:00-05:00", "DST: repeated hour, second time"),
             ("2026-11-01T02:15:00-05:00", "")],
        ),
        (
            "15 * * * *", "America/New_York", "2026-03-08T06:00:00+00:00",
            [("2026-03-08T01:15:00-05:00", ""),
             ("2026-03-08T03:15:00-04:00", "DST: 02:00-03:00 skipped, no runs in it")],
        ),
        (
            "10 2 * * *", "Australia/Lord_Howe", "2026-10-03T00:00:00+00:00",
            [("2026-10-04T02:30:00+11:00", "DST: 02:10 skipped, runs at 02:30")],
        ),
        ("30 2 * * *", "UTC", "2027-03-27T12:00:00+00:00", [("2027-03-28T02:30:00+00:00", "")]),
    ],
)  # fmt: skip
def test_dst_notes_at_pinned_transitions(
    expression: str, zone: str, now: str, want: list[tuple[str, str]]
) -> None:
    assert notes(expression, zone, now, len(want)) == want


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"]
TRANSITIONS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # New York, forward
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # New York, back
    datetime(2027, 3, 28, 1, tzinfo=UTC),  # Berlin, forward
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Berlin, back
    datetime(2026, 10, 3, 16, tzinfo=UTC),  # Sydney, forward (Lord Howe half an hour before)
    datetime(2026, 4, 4, 16, tzinfo=UTC),  # Sydney, back
]
minutes = st.sampled_from(["0", "15", "30", "45", "*/15", "*/20", "*", "10,40"])
hours = st.sampled_from(["0", "1", "2", "3", "1,2", "*", "*/2", "1-3"])


@settings(max_examples=150, deadline=None)
@given(
    minute=minutes,
    hour=hours,
    zone=st.sampled_from(ZONES),
    near=st.sampled_from(TRANSITIONS),
    hours_before=st.integers(0, 30),
)
def test_every_fire_time_that_is_not_a_plain_match_has_a_note_that_says_why(
    minute: str, hour: str, zone: str, near: datetime, hours_before: int
) -> None:
    expr = parse(f"{minute} {hour} * * *")
    tz = ZoneInfo(zone)
    start = near - timedelta(hours=hours_before)
    for fire in itertools.islice(fires(CronSchedule(expr, tz), start), 40):
        local = fire.at.astimezone(tz)
        wall = local.replace(tzinfo=None)
        repeated = local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset()
        if expr.first_at_or_after(wall) != wall:  # not a time the expression names: shifted
            assert expr.fixed_time and fire.note.endswith(f"skipped, runs at {wall:%H:%M}")
        elif repeated:
            assert "comes twice" in fire.note or "repeated hour" in fire.note
            assert not (expr.fixed_time and local.fold)  # Debian: the first occurrence only
        elif fire.note:  # a plain match right after a gap: what the gap cost
            assert "skipped" in fire.note
            assert expr.fixed_time == ("runs at" in fire.note)


# --- the command --------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_calendar_previews_fire_times_in_the_zone_and_utc_with_dst_notes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["calendar", "30 2 * * *", "--tz", "Europe/Berlin", "--count", "3"]
    code, out, err = run(capsys, *argv, "--now", "2027-03-27")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "30 2 * * * (at 02:30 daily) in Europe/Berlin, after Sat 2027-03-27 00:00:00 CET:",
        "  1  Sat 2027-03-27 02:30:00 CET    2027-03-27T01:30:00Z",
        "  2  Sun 2027-03-28 03:00:00 CEST   2027-03-28T01:00:00Z"
        "  DST: 02:30 skipped, runs at 03:00",
        "  3  Mon 2027-03-29 02:30:00 CEST   2027-03-29T00:30:00Z",
    ]


def test_calendar_hashes_h_fields_from_the_job_name_as_list_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "calendar", "H H * * *", "--job", "spread-out", "--now", "2026-06-01")
    want = parse("H H * * *", "spread-out")
    assert f"{want.hours[0]:02d}:{want.minutes[0]:02d}:00 UTC" in out.splitlines()[1]


def test_calendar_says_when_there_are_no_more_fire_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["calendar", "@yearly", "--tz", "Asia/Tokyo", "--now", "9999-06-01", "--count", "3"]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [  # 10000-01-01 is not a date
        "  no more fire times (none within 50 years, or past year 9999)"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["61 * * * *"], "beatd: calendar: '61 * * * *': minute 61 out of range 0-59\n"),
        (["* * *"], "beatd: calendar: '* * *': expected 5 fields (minute hour day-of-month"
         " month day-of-week), or 6 with seconds first; got 3\n"),
        (["@reboot"], "beatd: calendar: '@reboot': @reboot is not a schedule beatd can keep;"
         " use `at:` for a single run\n"),
        (["* * * * *", "--tz", "Europe/Berln"], "beatd: calendar: --tz: unknown time zone"
         " 'Europe/Berln' (did you mean 'Europe/Berlin'?)\n"),
    ],
)  # fmt: skip
def test_calendar_with_bad_input_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(capsys, "calendar", *argv) == (1, "", message)


def test_calendar_with_a_bad_count_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["calendar", "* * * * *", "--count", "0"])
    assert exited.value.code == 2
    assert "usage: beatd calendar" in capsys.readouterr().err
