"""Durations as written in schedule files: parsing, and printing for `beatd list`."""

from __future__ import annotations

from datetime import timedelta

import pytest

from beatd.core.durations import format_duration, format_left, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        (" 1h 30m ", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("1m1s1ms", timedelta(minutes=1, seconds=1, milliseconds=1)),
        ("36500d", timedelta(days=36500)),
    ],
)
def test_a_duration_is_numbers_with_units(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_bare_number_means_seconds_as_in_systemd() -> None:
    assert parse_duration(30) == timedelta(seconds=30)
    assert parse_duration(0.25) == timedelta(milliseconds=250)


@pytest.mark.parametrize(
    "value", ["", "5", "5x", "-5m", "1m30", "1H", "m", "five minutes", True, None, [1], {"s": 1}]
)
def test_anything_else_is_not_a_duration_and_the_message_gives_examples(value: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(e\.g\. 500ms, 30s, 5m, 1h30m, 2d\)"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["0s", 0, -1, -0.5, "0.0001s"])
def test_zero_and_negative_durations_must_be_positive(value: object) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration(value)


def test_zero_is_allowed_where_asked_for_but_negative_is_not() -> None:
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    with pytest.raises(ValueError, match="must be zero or more"):
        parse_duration(-1, allow_zero=True)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_not_durations(value: float) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["36501d", 1e300, 10**30, "9" * 400 + "s"])
def test_absurdly_long_durations_are_an_error_not_an_overflow(value: object) -> None:
    with pytest.raises(ValueError, match=r"is too long \(at most 36500d"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(days=2), "2d"),
        (timedelta(days=9, seconds=1, milliseconds=5), "9d1s5ms"),
        (timedelta(0), "0s"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_format_duration_writes_what_a_schedule_file_would(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    if delta > timedelta(0):
        assert parse_duration(text) == delta


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(minutes=4, seconds=3), "4min 3s"),
        (timedelta(hours=20, minutes=31, seconds=5), "20h 31min"),
        (timedelta(days=68, hours=13, minutes=5), "68d 13h"),
        (timedelta(seconds=59, microseconds=999_999), "59s"),
        (timedelta(hours=2), "2h"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(0), "now"),
        (timedelta(seconds=-1), "now"),
    ],
)
def test_format_left_shows_the_two_largest_units_like_systemctl(
    delta: timedelta, text: str
) -> None:
    assert format_left(delta) == text
