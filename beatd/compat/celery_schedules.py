"""A celery beat entry's schedule as a beatd schedule: crontab fields to cron text, intervals
to durations (pure apart from importing celery.schedules, lazily, to recognise its types)."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable
from datetime import UTC, timedelta, tzinfo
from typing import Any

from beatd.core import cron, durations
from beatd.core.describe import ranges

# Week-of-month blocks: `weekday#n` in cron is that weekday on one of these days.
_WEEKS = ((1, 7), (8, 14), (15, 21), (22, 28), (29, 31))


class UnconvertibleError(ValueError):
    """One value has no exact beatd equivalent; the message says why."""


def schedule_spec(
    value: Any, relative: bool = False, zone: tzinfo = UTC, hashed: Collection[str] = ()
) -> tuple[str, str, str]:
    """(beatd key, value, what it was) for a beat entry's schedule: a number of seconds, a
    timedelta, schedule(run_every), or crontab(...). zone is the app's; hashed names the crontab
    fields the app picked at random on import, which become `H`."""
    schedules = importlib.import_module("celery.schedules")
    if isinstance(value, bool):
        raise UnconvertibleError(f"schedule: {value!r} is not a schedule")
    if isinstance(value, timedelta):
        return _interval(value, relative, zone, f"timedelta(seconds={value.total_seconds():g})")
    if isinstance(value, int | float):
        return _interval(timedelta(seconds=value), relative, zone, f"{value!r} seconds")
    if isinstance(value, schedules.crontab) and not _overrides(value, schedules.crontab):
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        given = ", ".join(
            f"{f}={getattr(value, '_orig_' + f)!r}"
            for f in fields
            if getattr(value, "_orig_" + f) != "*"
        )
        starred = {f for f in fields if str(getattr(value, "_orig_" + f)).startswith("*")}
        expression = cron_expression(
            value.minute,
            value.hour,
            value.day_of_week,
            value.day_of_month,
            value.month_of_year,
            starred=starred,
            hashed=hashed,
        )
        comment = f"crontab({given})"
        if hashed:
            comment += f"; the {' and '.join(sorted(hashed))} differed between two imports"
        return "cron", expression, comment
    if isinstance(value, schedules.solar):
        raise UnconvertibleError(
            f"schedule: solar({value.event!r}, {value.lat}, {value.lon}) follows the sun at a "
            "place; beatd has no solar schedules (use a cron time close to it)"
        )
    if type(value) is schedules.schedule:
        return _interval(
            value.run_every,
            relative or value.relative,
            zone,
            f"schedule(run_every={value.run_every})",
        )
    raise UnconvertibleError(
        f"schedule: {type(value).__module__}.{type(value).__qualname__} is a custom schedule "
        "class; only numbers, timedelta, schedule and crontab convert"
    )


def _overrides(value: Any, base: type) -> bool:
    """Whether a subclass decides due times itself (then its crontab fields are not the truth)."""
    methods = ("is_due", "remaining_estimate", "remaining_delta")
    return any(getattr(type(value), m, None) is not getattr(base, m, None) for m in methods)


# celery.utils.time.delta_resolution: relative=True rounds each next run down to the largest
# of these units that fits in the interval, in the app's zone.
_RESOLUTIONS = (
    (timedelta(days=1), "day", "0 0 * * *"),
    (timedelta(hours=1), "hour", "0 * * * *"),
    (timedelta(minutes=1), "minute", "* * * * *"),
)


def _interval(every: timedelta, relative: bool, zone: tzinfo, comment: str) -> tuple[str, str, str]:
    if relative:
        return _relative(every, zone, comment)
    text = durations.format_duration(every)
    if not exact_duration(every, text):
        raise UnconvertibleError(
            f"schedule: an interval of {every.total_seconds()!r} s is not a positive whole "
            "number of milliseconds"
        )
    return "every", text, comment


def _relative(every: timedelta, zone: tzinfo, comment: str) -> tuple[str, str, str]:
    """relative=True: each run is (last run + every) rounded down to the day, hour or minute.
    For exactly one such unit that is the start of every unit, whenever beat started."""
    unit = next(((u, n, c) for u, n, c in _RESOLUTIONS if every >= u), None)
    if unit is None:
        raise UnconvertibleError(
            "relative=True with an interval under a minute only drops microseconds, so the "
            "runs keep the second beat started at; drop relative to get `every:`"
        )
    size, name, expression = unit
    # In a zone with DST, a day or hour rounded down in local time is not always one cron
    # slot (a midnight that does not exist, an hour that repeats); in UTC it is exactly.
    if every == size and getattr(zone, "key", str(zone)) in ("UTC", "Etc/UTC"):
        return "cron", expression, f"{comment}, relative=True: the start of every {name}"
    why = (
        "depend on when beat started"
        if every != size
        else f"follow the app's zone {getattr(zone, 'key', zone)} across DST changes"
    )
    raise UnconvertibleError(
        f"relative=True rounds each run down to the {name}, so the runs {why}; write it as a "
        f"cron expression instead (every {name}: {expression!r})"
    )


def exact_duration(delta: timedelta, text: str) -> bool:
    try:
        return delta > timedelta(0) and durations.parse_duration(text) == delta
    except ValueError:  # rounded to 0s
        return False


def cron_expression(
    minute: Iterable[int],
    hour: Iterable[int],
    day_of_week: Iterable[int],
    day_of_month: Iterable[int],
    month_of_year: Iterable[int],
    starred: Collection[str] = (),
    hashed: Collection[str] = (),
) -> str:
    """The 5-field cron expression that fires exactly when Celery's crontab with these expanded
    fields does (day_of_week 0 = Sunday, as in cron).

    Celery requires day_of_month AND day_of_week to match; cron (Debian's and beatd's) ANDs them
    only when one field starts with `*`, and ORs two restricted fields. Both restricted is
    written with `weekday#n` or a `*`-prefixed step where that is exact, else refused.
    starred names the fields written as `*...` in Celery, which stay so here: for beatd, as for
    Debian cron, a `*` minute or hour means "every real matching instant" across DST changes.
    hashed names the fields written as `H` (the app picked them at random on import).
    """

    def spell(name: str, found: set[int], low: int, high: int) -> str:
        if name in hashed:
            return "H"
        # A list that happens to equal `*/n` stays a list in the minute and hour: under the
        # DST rule `*/2` is a wildcard hour, so it would skip 02:00 on the spring-forward day.
        fixed = name in ("minute", "hour") and name not in starred
        return _field(found, low, high, star=name in starred, fixed=fixed)

    dow, dom = set(day_of_week), set(day_of_month)
    minute_text, hour_text = spell("minute", set(minute), 0, 59), spell("hour", set(hour), 0, 23)
    month_text = spell("month_of_year", set(month_of_year), 1, 12)
    dom_text, dow_text = spell("day_of_month", dom, 1, 31), spell("day_of_week", dow, 0, 6)
    if not dom_text.startswith("*") and not dow_text.startswith("*"):
        weeks = [n for n, (a, b) in enumerate(_WEEKS, 1) if set(range(a, b + 1)) <= dom]
        if dom == {d for n in weeks for d in range(_WEEKS[n - 1][0], _WEEKS[n - 1][1] + 1)}:
            dom_text = "*"
            dow_text = ",".join(f"{d}#{n}" for d in sorted(dow) for n in weeks)
        elif (step := _star_step(dom, 1, 31)) is not None:
            dom_text = f"*/{step}"
        elif (step := _star_step(dow, 0, 6)) is not None:
            dow_text = f"*/{step}"
        elif dom == {1}:
            dom_text = "*/31"  # only the 1st, and `*`-prefixed so that cron ANDs it
        else:
            raise UnconvertibleError(
                f"crontab day_of_month {dom_text} with day_of_week {dow_text}: Celery runs on "
                "days matching both, cron on days matching either, and no cron expression says "
                "exactly this; split it into jobs or restrict only one of the two"
            )
    text = f"{minute_text} {hour_text} {dom_text} {month_text} {dow_text}"
    cron.parse(text)  # a bug here must not reach the output
    return text


def _field(found: set[int], low: int, high: int, *, star: bool = False, fixed: bool = False) -> str:
    if found == set(range(low, high + 1)) and not fixed:
        return "*"
    step = _star_step(found, low, high)
    if step is not None and (star or (len(found) >= 3 and not fixed)):
        return f"*/{step}"
    ordered = sorted(found)
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], ordered[-1] + 1, step)):
            return f"{ordered[0]}-{ordered[-1]}/{step}"
    return ranges(tuple(ordered))


def _star_step(found: set[int], low: int, high: int) -> int | None:
    """n if found is exactly `*/n` over [low, high] with at least two values, else None."""
    ordered = sorted(found)
    if len(ordered) < 2 or ordered[0] != low:
        return None
    step = ordered[1] - ordered[0]
    return step if ordered == list(range(low, high + 1, step)) else None
