"""Plain-words descriptions of cron expressions, as `beatd list` shows them."""

from __future__ import annotations

import pytest

from beatd.core.cron import parse
from beatd.core.describe import describe


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0 * * * *", "every hour"),
        ("@hourly", "every hour"),
        ("15 * * * *", "hourly at minute 15"),
        ("15,45 * * * *", "hourly at minute 15,45"),
        ("30 2 * * *", "at 02:30 daily"),
        ("@daily", "at 00:00 daily"),
        ("0 0 * * 0-6", "at 00:00 daily"),
        ("0 */6 * * *", "at 00:00, 06:00, 12:00, 18:00 daily"),
        ("5 */2 * * *", "every 2 hours at :05"),
        ("0 */3 * * *", "every 3 hours"),
        ("*/10 8-10 * * *", "every 10 minutes of hours 8-10"),
        ("0 9 * * 1-5", "at 09:00 on Mon-Fri"),
        ("0,30 9-17 * * mon-fri", "every 30 minutes of hours 9-17 on Mon-Fri"),
        ("0 12 * * 0,6", "at 12:00 on Sat,Sun"),
        ("@weekly", "at 00:00 on Sun"),
        ("0 0 1 * *", "at 00:00 on day 1 of the month"),
        ("@yearly", "at 00:00 on day 1 of the month in Jan"),
        ("0 9 * jan,jul *", "at 09:00 in Jan,Jul"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 0 15,L * *", "at 00:00 on day 15 and the last day of the month"),
        ("0 8 * * 5#2", "at 08:00 on the 2nd Fri"),
        ("0 0 * * 5L", "at 00:00 on the last Fri"),
        ("1,2,3,5,7,8,9 * * * *", "hourly at minute 1-3,5,7-9"),
        ("*/20 * * * * *", "every 20 seconds"),
        ("* * * * * *", "every second"),
        ("30 5 4 * * *", "at 04:05:30 daily"),
        ("0 5 4 * * *", "at 04:05 daily"),
        ("*/30 * 9 * * *", "every 30 seconds, every minute of hours 9"),
    ],
)
def test_an_expression_is_described_in_plain_words(expression: str, words: str) -> None:
    assert describe(parse(expression)) == words


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 9 15W * *", "at 09:00 on the weekday nearest day 15 of the month"),
        ("0 9 LW * *", "at 09:00 on the last weekday of the month"),
        ("0 0 L-3 * *", "at 00:00 on the day 3 days before the last day of the month"),
        ("0 0 L-1 * *", "at 00:00 on the day before the last day of the month"),
        ("0 0 25-L * *", "at 00:00 on day 25 to the last day of the month"),
        ("0 0 1-L-3 * *", "at 00:00 on day 1 to 3 days before the last day of the month"),
        ("0 0 1-L/8 * *", "at 00:00 on every 8 days from day 1 to the last day of the month"),
        (
            "30 8 1,LW,15W * *",
            "at 08:30 on day 1 and the weekday nearest day 15 and the last weekday of the month",
        ),
        ("0 22-2 * * *", "at minute 0 of hours 22-2"),
        ("*/10 22-2 * * *", "every 10 minutes of hours 22-2"),
        ("0 0 * * fri-mon", "at 00:00 on Fri-Mon"),
        ("0 0 * nov-mar *", "at 00:00 in Nov-Mar"),
        ("0 0 * * mon-fri#1", "at 00:00 on the 1st Mon-Fri"),
        ("0 0 * * mon-fri#1,fri#3", "at 00:00 on the 1st Mon-Fri, the 3rd Fri"),
        ("0 0 * * 1,3#2", "at 00:00 on Mon, the 2nd Wed"),
        ("0 0 * * L5,L2", "at 00:00 on the last Tue,Fri"),
        ("0 0 ? * tuesday", "at 00:00 on Tue"),
        ("0 0 1 * ?", "at 00:00 on day 1 of the month"),
    ],
)
def test_the_dialect_is_described_in_plain_words(expression: str, words: str) -> None:
    assert describe(parse(expression)) == words


def test_the_day_fields_say_or_when_debian_cron_ors_them() -> None:
    assert describe(parse("0 0 13 * fri")) == "at 00:00 on day 13 of the month or on Fri"


def test_the_day_fields_say_if_also_when_debian_cron_ands_them() -> None:
    assert describe(parse("0 0 1-7 * */7")) == "at 00:00 on day 1-7 of the month if also Sun"


def test_h_expressions_are_described_by_the_values_they_hash_to() -> None:
    expr = parse("H H * * *", "nightly")
    (minute,), (hour,) = expr.minutes, expr.hours
    assert describe(expr) == f"at {hour:02d}:{minute:02d} daily"


def test_a_range_of_three_or_more_is_written_as_a_range() -> None:
    assert describe(parse("0 9,10,11,15,20 * * *")) == "at minute 0 of hours 9-11,15,20"
