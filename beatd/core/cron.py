"""Cron expressions: parsing (Jenkins `H` included), wall-clock matching and Debian cron's
daylight-saving rules. Pure: no I/O, no clock; "now" is always an argument.

croniter is not the engine, though it was the plan: asked for the next run of `30 1 * * *` it
fires twice on a fall-back day, it treats `*/2` in day-of-month as a restriction (Debian cron
ANDs it with day-of-week), its `H` hash is its own implementation detail, and parsing one
expression costs ~100 µs, ten times the budget for listing 10,000 jobs in a second.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
from bisect import bisect_left
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, tzinfo

from beatd.core.errors import CronError

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
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 exists


@dataclass(frozen=True, slots=True, eq=False)  # six singletons: identity is equality, and
class _Field:  # hashing by identity keeps the parse caches' lookups cheap
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, tuple(MONTHS), 1)
_DOW = _Field("day-of-week", 0, 7, tuple(DAYS), 0)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed expression: the allowed values of each field, all ascending."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 = Sunday
    last_day: bool  # `L` in day-of-month
    nth_weekdays: frozenset[tuple[int, int]]  # `5#2`: (weekday, n)
    last_weekdays: frozenset[int]  # `5L`: the month's last Friday
    # Debian cron ANDs day-of-month and day-of-week when either starts with `*`, else ORs them.
    day_and: bool
    # Debian cron's DST fixup applies only to jobs at a specific minute and hour
    # (neither field starts with `*`); cronsim also limits it to 5-field expressions.
    fixed_time: bool

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
            while d <= last and not self._day_matches(y, mo, d, last):
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

    def _day_matches(self, y: int, mo: int, d: int, last: int) -> bool:
        by_dom = d in self.days or (self.last_day and d == last)
        if by_dom != self.day_and:
            return by_dom  # OR with a matching day, or AND with a failing one: settled
        if len(self.weekdays) == 7:  # any day of the week (no need to work out which)
            return True
        dow = (calendar.weekday(y, mo, d) + 1) % 7
        return (
            dow in self.weekdays
            or (dow, (d + 6) // 7) in self.nth_weekdays
            or (dow in self.last_weekdays and d + 7 > last)
        )


def _at_or_after(values: tuple[int, ...], x: int) -> int | None:
    i = bisect_left(values, x)
    return values[i] if i < len(values) else None


def parse(expression: str, hash_key: str = "") -> CronExpr:
    """Parse a 5-field (or 6-field, seconds first) expression or a macro like @daily.

    `H` fields are hashed from hash_key (the job name), so they are stable per job forever.
    """
    text = " ".join(expression.split())
    hashed = any(term.startswith(("h", "H")) for term in text.replace(",", " ").split())
    return _parse(text, hash_key if hashed else "")


@functools.lru_cache(maxsize=4096)  # a file of 10,000 jobs has a few dozen distinct expressions
def _parse(text: str, hash_key: str) -> CronExpr:
    lowered = text.lower()
    if lowered.startswith("@"):
        if lowered == "@reboot":
            raise CronError("@reboot is not a schedule beatd can keep; use `at:` for a single run")
        if lowered not in MACROS:
            raise CronError(f"unknown macro {text!r} (one of {', '.join(MACROS)})")
        lowered = MACROS[lowered]
    parts = lowered.split()
    if len(parts) == 5:
        parts.insert(0, "0")
        with_seconds = False
    elif len(parts) == 6:
        with_seconds = True
    else:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"or 6 with seconds first; got {len(parts)}"
        )
    sec, minute, hour, dom, month, dow = parts
    days, last_day = _parse_dom(dom, hash_key)
    weekdays, nth, last_wd = _parse_dow(dow, hash_key)
    months = _parse_field(_MONTH, month, hash_key, 4)
    day_and = dom.startswith("*") or dow.startswith("*")
    if day_and and not last_day and not dom.startswith("*"):
        longest = max(_DAYS_IN_MONTH[m] for m in months)
        if min(days) > longest:
            raise CronError(f"never matches: no month in {month!r} has day {min(days)}")
    return CronExpr(
        text=text,
        seconds=_parse_field(_SECOND, sec, hash_key, 0),
        minutes=_parse_field(_MINUTE, minute, hash_key, 1),
        hours=_parse_field(_HOUR, hour, hash_key, 2),
        days=frozenset(days),
        months=months,
        weekdays=frozenset(weekdays),
        last_day=last_day,
        nth_weekdays=frozenset(nth),
        last_weekdays=frozenset(last_wd),
        day_and=day_and,
        fixed_time=not with_seconds and not minute.startswith("*") and not hour.startswith("*"),
    )


def _parse_dom(text: str, hash_key: str) -> tuple[tuple[int, ...], bool]:
    terms = text.split(",")
    last = "l" in terms
    rest = ",".join(t for t in terms if t != "l")
    return (_parse_field(_DOM, rest, hash_key, 3) if rest else ()), last


def _parse_dow(text: str, hash_key: str) -> tuple[set[int], set[tuple[int, int]], set[int]]:
    plain: list[str] = []
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    for term in text.split(","):
        if "#" in term:
            day, _, n = term.partition("#")
            if not n.isdigit() or not 1 <= int(n) <= 5:
                raise CronError(f"day-of-week: {term!r}: the week after # must be 1-5")
            nth.add((_value(_DOW, day) % 7, int(n)))
        elif term.endswith("l") and len(term) > 1:
            last.add(_value(_DOW, term[:-1]) % 7)
        else:
            plain.append(term)
    weekdays = {v % 7 for v in _parse_field(_DOW, ",".join(plain), hash_key, 5)} if plain else set()
    return weekdays, nth, last


def _parse_field(field: _Field, text: str, hash_key: str, index: int) -> tuple[int, ...]:
    """The field's values, ascending. Cached: only `H` terms depend on the job name."""
    return _field_values(field, text, hash_key if "h" in text else "", index)


@functools.lru_cache(maxsize=4096)
def _field_values(field: _Field, text: str, hash_key: str, index: int) -> tuple[int, ...]:
    values: set[int] = set()
    for term in text.split(","):
        values |= _parse_term(field, term, hash_key, index)
    return tuple(sorted(values))


def _parse_term(field: _Field, term: str, hash_key: str, index: int) -> set[int]:
    if not term:
        raise CronError(f"{field.name}: empty value")
    base, slash, step_text = term.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit():
            raise CronError(f"{field.name}: step must be a number, got {step_text!r}")
        step = int(step_text)
        if step == 0:
            raise CronError(f"{field.name}: step must be positive, got 0")
    high = 6 if field is _DOW else field.high  # `*` in day-of-week is 0-6; 7 is Sunday's alias
    if base.startswith("h"):
        return _hashed(field, base, step, hash_key, index)
    if base == "*":
        low = field.low
    elif "-" in base:
        first, _, second = base.partition("-")
        if not first or not second:
            raise CronError(f"{field.name}: {base!r} is not a range like 1-5")
        low, high = _value(field, first), _value(field, second)
        if high < low:
            raise CronError(f"{field.name}: range {base!r} is backwards (no wrap-around in cron)")
    else:
        low = _value(field, base)
        if not slash:
            return {low}
    return set(range(low, high + 1, step))


def _hashed(field: _Field, base: str, step: int, hash_key: str, index: int) -> set[int]:
    # Jenkins' H: a value spread by the job name, so many `H * * * *` jobs do not all fire at :00.
    low, high = field.low, field.high
    if field is _DOM:
        low, high = 1, 28  # as in Jenkins: a day every month has
    elif field is _DOW:
        high = 6
    if base != "h":
        inner = base[1:]
        if not (inner.startswith("(") and inner.endswith(")") and "-" in inner):
            raise CronError(f"{field.name}: {base!r} is not H, H(a-b), H/n or H(a-b)/n")
        first, _, second = inner[1:-1].partition("-")
        low, high = _value(field, first), _value(field, second)
        if high < low:
            raise CronError(f"{field.name}: range {base!r} is backwards")
    digest = hashlib.sha256(f"{hash_key}\0{index}".encode()).digest()
    spread = int.from_bytes(digest[:8], "big")
    if step == 1:
        return {low + spread % (high - low + 1)}
    start = low + spread % min(step, high - low + 1)
    return set(range(start, high + 1, step))


def _value(field: _Field, text: str) -> int:
    if text in field.names:
        return field.names.index(text) + field.name_base
    if not text.isdigit():
        allowed = f"a number {field.low}-{field.high}"
        if field.names:
            allowed += f" or a name {field.names[0]}-{field.names[-1]}"
        raise CronError(f"{field.name}: {text!r} is not {allowed}")
    value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name} {value} out of range {field.low}-{field.high}")
    return value


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

    def next_after(self, t: datetime) -> datetime | None:
        """Return the first fire time strictly after t, in UTC; None if none within 50 years."""
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
