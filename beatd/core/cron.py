"""Cron expressions: parsing (Jenkins `H`, Quartz's `L`/`W`/`#`, croniter's wrapping ranges),
wall-clock matching and Debian cron's daylight-saving rules. Pure: no I/O, no clock; "now" is
always an argument. The terms of each field are read in beatd/core/cronfields.py.

croniter is not the engine, though it was the plan: asked for the next run of `30 1 * * *` it
fires twice on a fall-back day, it treats `*/2` in day-of-month as a restriction (Debian cron
ANDs it with day-of-week), its `H` hash is its own implementation detail, and parsing one
expression costs ~100 µs, ten times the budget for listing 10,000 jobs in a second.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, tzinfo

from beatd.core import cronfields as f
from beatd.core.cronfields import DAYS, MONTHS, DayRange
from beatd.core.errors import CronError

__all__ = ["DAYS", "MONTHS", "CronExpr", "CronSchedule", "croniter_reading", "parse"]

SECOND = timedelta(seconds=1)
# cronsim's bound too: an expression with no match in this many years has none at all.
SEARCH_YEARS = 50

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists
_LENGTHS = {m: (28, 29) if m == 2 else (_DAYS_IN_MONTH[m],) for m in range(1, 13)}


_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed expression: the allowed values of each field, all ascending."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]  # plain days of the month
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 = Sunday
    relative_days: tuple[DayRange, ...]  # `L`, `L-3`, `25-L`: ends <= 0 count from the last day
    nearest_days: frozenset[int]  # `15W`; 0 is `LW`
    nth_weekdays: frozenset[tuple[int, int]]  # `5#2`: (weekday, n)
    last_weekdays: frozenset[int]  # `5L`: the month's last Friday
    # Debian cron ANDs day-of-month and day-of-week when either starts with `*`, else ORs them.
    day_and: bool
    # Debian cron's DST fixup applies only to jobs at a specific minute and hour
    # (neither field starts with `*`); cronsim also limits it to 5-field expressions.
    fixed_time: bool
    # Days of the month by the month's length (28-31): `days` and `relative_days` resolved.
    month_days: tuple[frozenset[int], ...]
    # Computed once: jobs' schedules are shared through caches keyed by the expression, and
    # hashing its fourteen fields on every lookup cost more than the rest of the lookup.
    _hash: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        meaning = tuple(getattr(self, name) for name in _COMPARED)
        object.__setattr__(self, "_hash", hash(meaning))

    def __hash__(self) -> int:
        return self._hash

    def first_at_or_after(self, start: datetime) -> datetime | None:
        """Return the first naive wall-clock time >= start (whole seconds) that matches."""
        y, mo, d = start.year, start.month, start.day
        h, mi, s = start.hour, start.minute, start.second
        while y <= min(start.year + SEARCH_YEARS, MAXYEAR):
            if mo not in self.months:
                i = bisect_left(self.months, mo)
                if i == len(self.months):
                    y, mo = y + 1, self.months[0]
                else:
                    mo = self.months[i]
                d, h, mi, s = 1, 0, 0, 0
            last = 28 if mo == 2 and not calendar.isleap(y) else _DAYS_IN_MONTH[mo]
            first_weekday = _first_weekday(y, mo)
            while d <= last and not self.day_matches(d, last, first_weekday):
                d, h, mi, s = d + 1, 0, 0, 0
            if d > last:
                y, mo, d, h, mi, s = (y + 1, 1, 1, 0, 0, 0) if mo == 12 else (y, mo + 1, 1, 0, 0, 0)
                continue
            h2 = _at_or_after(self.hours, h)
            if h2 is None:
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            if h2 != h:
                h, mi, s = h2, 0, 0
            mi2 = _at_or_after(self.minutes, mi)
            if mi2 is None:
                h, mi, s = h + 1, 0, 0
                if h > 23:
                    d, h = d + 1, 0
                continue
            if mi2 != mi:
                mi, s = mi2, 0
            s2 = _at_or_after(self.seconds, s)
            if s2 is None:
                mi, s = mi + 1, 0
                if mi > 59:
                    h, mi = h + 1, 0
                    if h > 23:
                        d, h = d + 1, 0
                continue
            return datetime(y, mo, d, h, mi, s2)  # wall clock; zone applied later
        return None

    def count_between(self, start: datetime, end: datetime) -> int:
        """How many naive wall-clock times in (start, end] match, a day at a time rather than a
        slot at a time (a week of `* * * * *` is 10,080 slots, 7 days here). Wall time, so
        across a DST change it is off by the slots of the skipped or repeated hour."""
        total, day, last_day = 0, start.date(), end.date()
        while day <= last_day:
            if day.month in self.months:
                last = (
                    28
                    if day.month == 2 and not calendar.isleap(day.year)
                    else (_DAYS_IN_MONTH[day.month])
                )
                if self.day_matches(day.day, last, _first_weekday(day.year, day.month)):
                    upto = self._times_upto(end) if day == last_day else self._per_day
                    since = self._times_upto(start) if day == start.date() else 0
                    total += upto - since
            day += _ONE_DAY
        return total

    @property
    def _per_day(self) -> int:
        return len(self.hours) * len(self.minutes) * len(self.seconds)

    def _times_upto(self, t: datetime) -> int:
        """How many matching times of day are at or before t's time of day."""
        per_hour = len(self.minutes) * len(self.seconds)
        count = bisect_left(self.hours, t.hour) * per_hour
        if t.hour in self.hours:
            count += bisect_left(self.minutes, t.minute) * len(self.seconds)
            if t.minute in self.minutes:
                count += bisect_right(self.seconds, t.second)
        return count

    def day_matches(self, d: int, last: int, first_weekday: int) -> bool:
        """Whether day d matches in a month of `last` days starting on first_weekday (0 = Sun)."""
        by_dom = d in self.month_days[last - 28] or (
            bool(self.nearest_days)
            and any(f.nearest_weekday(n, last, first_weekday) == d for n in self.nearest_days)
        )
        if by_dom != self.day_and:
            return by_dom  # OR with a matching day, or AND with a failing one: settled
        if len(self.weekdays) == 7:  # any day of the week (no need to work out which)
            return True
        dow = (first_weekday + d - 1) % 7
        return (
            dow in self.weekdays
            or (dow, (d + 6) // 7) in self.nth_weekdays
            or (dow in self.last_weekdays and d + 7 > last)
        )


_COMPARED = tuple(x.name for x in dataclasses.fields(CronExpr) if x.compare)


@functools.lru_cache(maxsize=1024)  # a search rarely leaves a few years
def _first_weekday(year: int, month: int) -> int:
    return (calendar.weekday(year, month, 1) + 1) % 7  # 0 = Sunday


def _at_or_after(values: tuple[int, ...], x: int) -> int | None:
    i = bisect_left(values, x)
    return values[i] if i < len(values) else None


def parse(expression: str, hash_key: str = "") -> CronExpr:
    """Parse a 5-field (or 6-field, seconds first) expression or a macro like @daily.

    `H` fields are hashed from hash_key (the job name), so they are stable per job forever.
    """
    text = " ".join(expression.split())
    try:
        return _parse(text, _spreads(text, hash_key))
    except CronError as exc:
        if len(text.split()) == 6 and croniter_reading(text, hash_key) is not None:
            written = text.split()
            seconds_first = " ".join(written[-1:] + written[:-1])
            hint = f"if the seconds are last, as croniter writes them: '{seconds_first}'"
            raise CronError(f"{exc} ({hint})") from None
        raise


def uses_name(expression: str) -> bool:
    """Whether the expression's values depend on the job name (an `H` field that hashes it)."""
    plan = _hash_plan(" ".join(expression.split()))
    return plan is not None and any(by_name for _, by_name, _ in plan)


# The fields in a 6-field expression's order; a 5-field one's seconds are "0".
_FIELDS = (f.SECOND, f.MINUTE, f.HOUR, f.DOM, f.MONTH, f.DOW)
_NO_SPREADS = (0, 0, 0, 0, 0, 0)


def _spreads(text: str, hash_key: str) -> tuple[int, ...]:
    """Each field's spread for its `H` terms, reduced to the field's period: the names of many
    jobs hash alike there, and those jobs share one parsed expression (the `_parse` cache) instead
    of each parsing its own (100k jobs with `H`: a few thousand expressions, not 100k)."""
    plan = _hash_plan(text)
    if plan is None:
        return _NO_SPREADS
    spreads = list(_NO_SPREADS)
    for field, by_name, period in plan:
        spreads[field.index] = f.spread_of(hash_key if by_name else "", field) % period
    return tuple(spreads)


def _full_spreads(text: str, hash_key: str) -> tuple[int, ...]:
    """The spreads unreduced: what each `H` term takes its value from, modulo its range."""
    return tuple(
        f.spread_of(hash_key if f.is_hashed(part) else "", field)
        for field, part in zip(_FIELDS, _parts(text), strict=True)
    )


@functools.lru_cache(maxsize=4096)
def _hash_plan(text: str) -> tuple[tuple[f.Field, bool, int], ...] | None:
    """The fields with `H` terms: each with whether they hash the job name (not when `H` is
    only inside a term, as in day-of-week `LH`: that hashes the empty name) and the period of
    its values in the spread. None: no `H` term, or the text is not fields (_parse says why)."""
    if "h" not in text.lower():
        return None
    try:
        parts = _parts(text)
    except CronError:
        return None
    plan = tuple(
        (field, f.is_hashed(part), f.hash_period(field, part))
        for field, part in zip(_FIELDS, parts, strict=True)
    )
    return tuple(item for item in plan if item[2]) or None


def _parts(text: str) -> list[str]:
    parts = _fields(text)
    return parts if len(parts) == 6 else ["0", *parts]


@functools.lru_cache(maxsize=16384)  # 100k jobs with `H`: a few thousand (text, spreads)
def _parse(text: str, spreads: tuple[int, ...]) -> CronExpr:
    return _build(text, _fields(text), spreads)


def _fields(text: str) -> list[str]:
    lowered = text.lower()
    if lowered.startswith("@"):
        if lowered == "@reboot":
            raise CronError("@reboot is not a schedule beatd can keep; use `at:` for a single run")
        if lowered not in MACROS:
            raise CronError(f"unknown macro {text!r} (one of {', '.join(MACROS)})")
        lowered = MACROS[lowered]
    parts = lowered.split()
    if len(parts) not in (5, 6):
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"or 6 with seconds first; got {len(parts)}"
        )
    return parts


def _build(text: str, parts: list[str], spreads: tuple[int, ...]) -> CronExpr:
    """The expression, each field's `H` terms spread by spreads (one per field, seconds first;
    a 5-field expression's seconds are 0)."""
    with_seconds = len(parts) == 6
    sec, minute, hour, dom, month, dow = parts if with_seconds else ["0", *parts]
    for name, part in (("second", sec), ("minute", minute), ("hour", hour), ("month", month)):
        if "?" in part:
            raise CronError(f"{name}: ? only stands for a whole day field (day-of-month or -week)")
    dom, dow = ("*" if part == "?" else part for part in (dom, dow))  # Quartz's "no value"
    for name, part in (("day-of-month", dom), ("day-of-week", dow)):
        if "?" in part:
            raise CronError(f"{name}: ? stands alone, for the whole field")
    seconds = f.values(f.SECOND, sec, spreads[0])
    minutes = f.values(f.MINUTE, minute, spreads[1])
    hours = f.values(f.HOUR, hour, spreads[2])
    days = f.month_days(dom, spreads[3])
    months = f.values(f.MONTH, month, spreads[4])
    week = f.week_days(dow, spreads[5])
    expr = CronExpr(
        text=text,
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days=days.fixed,
        months=months,
        weekdays=week.plain,
        relative_days=days.relative,
        nearest_days=days.nearest,
        nth_weekdays=week.nth,
        last_weekdays=week.last,
        day_and=dom.startswith("*") or dow.startswith("*"),
        fixed_time=not with_seconds and not minute.startswith("*") and not hour.startswith("*"),
        month_days=days.by_length,
    )
    if (dom, dow) != ("*", "*") and not _some_day_matches(expr):
        both = f"day {dom.upper()}" if dow == "*" else f"a day that {dom!r} and {dow!r} both allow"
        raise CronError(f"never matches: no month in {month!r} has {both}")
    return expr


def _some_day_matches(expr: CronExpr) -> bool:
    # Which days match depends only on the month's length and first weekday: trying every
    # pair the months allow settles it (and each pair comes round within the 50-year search).
    # Up to 7 * 4 * 31 calls: remembered per day fields, which the `H` jobs share.
    key = (
        expr.months,
        expr.month_days,
        expr.nearest_days,
        expr.weekdays,
        expr.nth_weekdays,
        expr.last_weekdays,
        expr.day_and,
    )
    known = _DAYS_MATCH.get(key)
    if known is None:
        if len(_DAYS_MATCH) >= _DAYS_MATCH_KEPT:  # bounded: forget them all, rarely
            _DAYS_MATCH.clear()
        lengths = {n for m in expr.months for n in _LENGTHS[m]}
        known = _DAYS_MATCH[key] = any(
            expr.day_matches(d, last, first)
            for last in lengths
            for first in range(7)
            for d in range(1, last + 1)
        )
    return known


_DAYS_MATCH: dict[tuple[object, ...], bool] = {}
_DAYS_MATCH_KEPT = 4096


@functools.lru_cache(maxsize=1024)
def croniter_reading(text: str, hash_key: str = "") -> CronExpr | None:
    """For a 6-field expression, croniter's reading (seconds last) if it is valid and differs."""
    parts = text.split()
    if len(parts) != 6:
        return None
    reordered = " ".join(parts[-1:] + parts[:-1])
    theirs = _valid(reordered, _full_spreads(reordered, hash_key))
    if theirs is None:
        return None
    ours = _valid(text, _full_spreads(text, hash_key))
    if ours is not None and all(getattr(ours, n) == getattr(theirs, n) for n in _MEANING):
        return None
    return theirs


def _valid(text: str, spreads: tuple[int, ...]) -> CronExpr | None:
    try:
        return _build(text, _fields(text), spreads)
    except CronError:
        return None


_MEANING = [
    x.name
    for x in dataclasses.fields(CronExpr)
    if x.compare and x.name not in ("text", "fixed_time")
]


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression evaluated in a time zone, with Debian cron's DST behaviour.

    Fixed-time jobs (a specific minute and hour) whose wall time falls in a skipped hour run
    once, right after the jump; in a repeated hour they run once, at the first occurrence.
    Every other job runs at each real instant whose wall time matches, so `*/15 * * * *`
    also runs four times in a repeated hour and not at all in a skipped one.
    """

    expr: CronExpr
    zone: tzinfo
    # The last question and its answer: jobs share a schedule (10,000 `*/5 * * * *` jobs, one
    # object), and are asked about the same t together: at start-up, in a burst, in a list.
    # One tuple, replaced whole, so a reload reading in a thread never sees half of it.
    _last: tuple[datetime, datetime | None] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    def next_after(self, t: datetime) -> datetime | None:
        """Return the first fire time strictly after t, in UTC; None if none within 50 years."""
        last = self._last
        # Same tzinfo and fold too: equal wall times in a repeated hour are two instants.
        if (
            last is not None
            and last[0] == t
            and last[0].tzinfo is t.tzinfo
            and last[0].fold == t.fold
        ):
            return last[1]
        found = self._next_after(t)
        object.__setattr__(self, "_last", (t, found))
        return found

    def _next_after(self, t: datetime) -> datetime | None:
        local = t.astimezone(self.zone)
        start = local.replace(tzinfo=None, microsecond=0) + SECOND
        if self.zone is UTC:
            match = self.expr.first_at_or_after(start)
            return match.replace(tzinfo=UTC) if match else None
        other = local.replace(fold=1 - local.fold)
        ambiguous = other.utcoffset() != local.utcoffset()
        if self.expr.fixed_time:
            if ambiguous and local.fold == 1:
                # Wall times left in this repeated hour already ran at their first occurrence.
                start = max(start, self._repeat_range(other, local)[1])
            match = self.expr.first_at_or_after(start)
            return None if match is None else self._resolve_fixed(match)
        repeat = None
        if ambiguous and local.fold == 0:
            # The repeated hour comes round again after t: its second occurrences count too.
            s, e = self._repeat_range(local, other)
            match = self.expr.first_at_or_after(s)
            if match is not None and match < e:
                repeat = match.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        found = self._next_real(start, t)
        if repeat is not None and (found is None or repeat < found):
            return repeat
        return found

    def _next_real(self, start: datetime, t: datetime) -> datetime | None:
        # Bounded: each pass either returns or jumps a whole DST gap forward.
        for _ in range(SEARCH_YEARS * 4):
            match = self.expr.first_at_or_after(start)
            if match is None:
                return None
            first = match.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
            second = match.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
            if first == second:
                return first
            if first.astimezone(self.zone).replace(tzinfo=None) != match:  # in a DST gap
                start = self._gap_end(first, second)[1]
                continue
            return first if first > t else second  # a repeated hour: t may sit between the two
        return None

    def _resolve_fixed(self, match: datetime) -> datetime:
        first = match.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = match.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second or first.astimezone(self.zone).replace(tzinfo=None) == match:
            return first  # a normal time, or the first occurrence of a repeated one
        return self._gap_end(first, second)[0]  # skipped: run right after the jump

    def _gap_end(self, a: datetime, b: datetime) -> tuple[datetime, datetime]:
        """For a wall time in a DST gap (its two readings a, b), the jump instant and wall time."""
        jump = _transition(self.zone, min(a, b), max(a, b))
        return jump, jump.astimezone(self.zone).replace(tzinfo=None)

    def _repeat_range(self, first: datetime, second: datetime) -> tuple[datetime, datetime]:
        """For a wall time in a repeated hour (its two readings), the hour's naive start, end."""
        jump = _transition(self.zone, first.astimezone(UTC), second.astimezone(UTC))
        before = first.utcoffset()
        after = second.utcoffset()
        assert before is not None and after is not None
        naive = jump.replace(tzinfo=None)
        return naive + after, naive + before


def _transition(zone: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The first whole second in (lo, hi] whose UTC offset differs from lo's (one must)."""
    a, b = int(lo.timestamp()), -int(-hi.timestamp() // 1)
    offset = datetime.fromtimestamp(a, zone).utcoffset()
    while b - a > 1:  # log2(hours of DST) steps
        mid = (a + b) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset:
            a = mid
        else:
            b = mid
    return datetime.fromtimestamp(b, UTC)
