"""Plain-words descriptions of cron expressions for `beatd list`. Pure.

cron-descriptor would do this too, but it re-reads its translation catalogue on every call
(~250 µs), a quarter of the time budget for listing 10,000 jobs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from beatd.core.cron import DAYS, MONTHS, CronExpr

_ORDINALS = ("", "1st", "2nd", "3rd", "4th", "5th")


@functools.lru_cache(maxsize=4096)
def describe(expr: CronExpr) -> str:
    """Say when expr fires: 'every 15 minutes', 'at 02:30 on Mon-Fri', ..."""
    words = _time_of_day(expr)
    days = _days(expr)
    months = "" if len(expr.months) == 12 else "in " + _names(expr.months, MONTHS, 1)
    if not days and not months and words.startswith("at ") and ":" in words:
        days = "daily"
    return " ".join(part for part in (words, days, months) if part)


def _time_of_day(expr: CronExpr) -> str:
    sec, mins, hours = expr.seconds, expr.minutes, expr.hours
    if len(sec) == 1 and len(hours) <= 4 and len(mins) <= 2 and len(hours) * len(mins) <= 4:
        seconds = f":{sec[0]:02d}" if sec[0] else ""  # 04:05:30, or 04:05 as usual
        return "at " + ", ".join(f"{h:02d}:{m:02d}{seconds}" for h in hours for m in mins)
    if sec != (0,):
        every = _step(sec, 60)
        what = f"every {every} seconds" if every else f"at second {ranges(sec)}"
        if every == 1:
            what = "every second"
        if len(mins) == 60 and len(hours) == 24:
            return what
        return f"{what}, {_minutes_and_hours(mins, hours)}"
    return _minutes_and_hours(mins, hours)


def _minutes_and_hours(mins: tuple[int, ...], hours: tuple[int, ...]) -> str:
    every_min = _step(mins, 60)
    if every_min == 1:
        minute_words = "every minute"
    elif every_min:
        minute_words = f"every {every_min} minutes"
    else:
        minute_words = "at minute " + ranges(mins)
    if len(hours) == 24:
        if every_min:
            return minute_words
        return "every hour" if mins == (0,) else f"hourly at minute {ranges(mins)}"
    every_hour = _step(hours, 24)
    if every_hour and mins == (0,):
        return "every hour" if every_hour == 1 else f"every {every_hour} hours"
    if every_hour and len(mins) == 1:
        return f"every {every_hour} hours at :{mins[0]:02d}"
    return f"{minute_words} of hours {ranges(hours, wrap=(0, 23))}"


def _days(expr: CronExpr) -> str:
    dom = []
    if len(expr.days) < 31 and expr.days:
        dom.append("day " + ranges(tuple(sorted(expr.days))))
    dom += [_relative(term) for term in expr.relative_days]
    dom += [_nearest(day) for day in sorted(expr.nearest_days, key=lambda d: (d == 0, d))]
    dom_words = " and ".join(dom) + " of the month" if dom else ""
    weekdays = tuple(sorted(expr.weekdays))
    specials = []
    for n in sorted({n for _, n in expr.nth_weekdays}):
        nth = tuple(sorted(d for d, k in expr.nth_weekdays if k == n))
        specials.append(f"the {_ORDINALS[n]} {_names(nth, DAYS, 0)}")
    if expr.last_weekdays:
        specials.append(f"the last {_names(tuple(sorted(expr.last_weekdays)), DAYS, 0)}")
    dow_words = ", ".join(([_names(weekdays, DAYS, 0)] if weekdays else []) + specials)
    restricted_dow = dow_words and not (len(weekdays) == 7 and not specials)
    if expr.day_and:
        parts = [p for p in (dom_words, dow_words if restricted_dow else "") if p]
        return ("on " + " if also ".join(parts)) if parts else ""
    return f"on {dom_words} or on {dow_words}"


def _relative(term: tuple[int, int, int]) -> str:
    first, last, step = term
    if first == last:
        if first >= 0:
            return _day(first)
        return "the day before the last day" if first == -1 else f"the day {_day(first)}"
    span = f"{_day(first)} to {_day(last)}"
    return span if step == 1 else f"every {step} days from {span}"


def _day(day: int) -> str:
    """A day of the month; 0 and below count from the last day (`L`, `L-3`)."""
    if day > 0:
        return f"day {day}"
    if day == 0:
        return "the last day"
    return f"{-day} day{'s' if day < -1 else ''} before the last day"  # `L-3`


def _nearest(day: int) -> str:
    return "the last weekday" if day == 0 else f"the weekday nearest day {day}"


def _step(values: tuple[int, ...], size: int) -> int | None:
    """n if values are exactly 0, n, 2n, ... covering the field (`*/n`), else None."""
    if len(values) < 2 or values[0] != 0:
        return 1 if len(values) == size else None
    n = values[1]
    return n if values == tuple(range(0, size, n)) else None


def ranges(
    values: tuple[int, ...], fmt: Callable[[int], str] = str, wrap: tuple[int, int] | None = None
) -> str:
    """1,2,3,5,7-9 style: runs of three or more become ranges. With wrap=(low, high), a run that
    goes past high on to low is one run, written first: hours 22-2, Fri-Mon, Nov-Mar."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    if wrap and len(runs) > 1 and runs[0][0] == wrap[0] and runs[-1][-1] == wrap[1]:
        runs = [runs[-1] + runs[0], *runs[1:-1]]
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{fmt(run[0])}-{fmt(run[-1])}")
        else:
            parts.extend(fmt(v) for v in run)
    return ",".join(parts)


def _names(values: tuple[int, ...], names: tuple[str, ...], base: int) -> str:
    return ranges(values, lambda v: names[v - base].title(), (base, base + len(names) - 1))
