"""Cron fields: the terms of one field (numbers, names, ranges that may wrap, steps, Jenkins `H`,
and the day-of-month `L`, `L-n`, `nW`, `LW`) turned into the values they allow. Pure: no I/O.

Numbers are ASCII digits only: `int()` would read an Arabic-Indic or a fullwidth 3 as 3 and choke
on a superscript one, and no cron reads either.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass

from beatd.core.errors import CronError

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FULL_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_FULL_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
LONGEST = 31
_DIGITS = re.compile(r"[0-9]+")
# A day-of-month range end may count from the last day: `L`, `L-3`; so `L-3-L` is a range.
_DAY_RANGE = re.compile(r"(l-[0-9]+|l|[^-]+)(?:-(l-[0-9]+|l|[^-]+))?")
_MAX_DIGITS = 9  # longer numbers are out of range in every field (and would slow int() down)


@dataclass(frozen=True, slots=True, eq=False)  # six singletons: identity is equality, and
class Field:  # hashing by identity keeps the parse caches' lookups cheap
    name: str
    low: int
    high: int
    index: int  # the field's position, which `H` hashes with the job name
    names: tuple[tuple[str, int], ...] = ()


SECOND = Field("second", 0, 59, 0)
MINUTE = Field("minute", 0, 59, 1)
HOUR = Field("hour", 0, 23, 2)
DOM = Field("day-of-month", 1, LONGEST, 3)
MONTH = Field(
    "month", 1, 12, 4, tuple((n, i % 12 + 1) for i, n in enumerate(MONTHS + _FULL_MONTHS))
)
DOW = Field("day-of-week", 0, 7, 5, tuple((n, i % 7) for i, n in enumerate(DAYS + _FULL_DAYS)))


def is_hashed(text: str) -> bool:
    """Whether a field has a Jenkins `H` term (whose values depend on the job name)."""
    return "h" in text and any(term.startswith("h") for term in text.split(","))


def values(field: Field, text: str, spread: int) -> tuple[int, ...]:
    """The field's values, ascending (day-of-week: 0-6, Sunday 0). Lowercase text. `H` terms
    take their value from spread, the job name's hash for the field (see spread_of)."""
    return _values(field, text, spread if is_hashed(text) else 0)


@functools.lru_cache(maxsize=4096)  # a file of 10,000 jobs has a few dozen distinct fields
def _values(field: Field, text: str, spread: int) -> tuple[int, ...]:
    found: set[int] = set()
    for term in text.split(","):
        found.update(_term(field, term, spread))
    if field is DOW:
        return tuple(sorted({v % 7 for v in found}))
    return tuple(sorted(found))


def _term(field: Field, term: str, spread: int) -> list[int]:
    if not term:
        raise CronError(f"{field.name}: empty value")
    base, slash, step_text = term.partition("/")
    step = step_of(field, step_text) if slash else 1
    if base.startswith("h"):
        return _hashed(field, base, step, spread)
    if base == "*":
        return list(range(field.low, (6 if field is DOW else field.high) + 1, step))
    first, dash, second = base.partition("-")
    if dash:
        if not first or not second or "-" in second:
            raise CronError(f"{field.name}: {base!r} is not a range like 1-5")
        return cycle(field, value(field, first), value(field, second))[::step]
    start = value(field, first)
    if not slash:
        return [start]
    # `n/step` runs to the end of the field; day-of-week ends at 6 (7 is only Sunday's alias),
    # so that `1/2` is Mon, Wed, Fri, while `7/2` (Sunday, from 7 to the end) stays Sunday.
    end = field.high if field is not DOW or start == 7 else 6
    return list(range(start, end + 1, step))


def cycle(field: Field, first: int, last: int) -> list[int]:
    """first to last in order, wrapping round the end of the field (`22-2`, `fri-mon`)."""
    if first <= last:
        return list(range(first, last + 1))
    if field is DOW:
        if first == 7:  # Sunday, as at the start of the week: `7-1` is Sun-Mon
            return list(range(0, last + 1))
        return list(range(first, 7)) + list(range(0, last % 7 + 1))
    return list(range(first, field.high + 1)) + list(range(field.low, last + 1))


def step_of(field: Field, text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise CronError(f"{field.name}: step must be a number, got {text!r}")
    step = _int(text)
    if step == 0:
        raise CronError(f"{field.name}: step must be positive, got 0")
    return step


def value(field: Field, text: str) -> int:
    """One number or name of the field, range-checked."""
    for name, number in field.names:
        if text == name:
            return number
    if not _DIGITS.fullmatch(text):
        allowed = f"a number {field.low}-{field.high}"
        if field.names:
            allowed += f" or a name {field.names[0][0]}-{field.names[len(field.names) // 2 - 1][0]}"
        if any(c.isdigit() for c in text):
            allowed += " (cron numbers are ASCII digits 0-9)"
        raise CronError(f"{field.name}: {_show(text)!r} is not {allowed}")
    number = _int(text)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.name} {_show(text)} out of range {field.low}-{field.high}")
    return number


def _int(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _show(text: str) -> str:
    return text if len(text) <= 20 else f"{text[:12]}...({len(text)} characters)"


def spread_of(hash_key: str, field: Field) -> int:
    """The job name's hash for one field: what its `H` terms are spread by (Jenkins' H, so that
    many `H * * * *` jobs do not all fire at :00)."""
    digest = hashlib.sha256(f"{hash_key}\0{field.index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _hashed(field: Field, base: str, step: int, spread: int) -> list[int]:
    low, high = _hash_range(field, base)
    if step == 1:
        return [low + spread % (high - low + 1)]
    start = low + spread % min(step, high - low + 1)
    return list(range(start, high + 1, step))


def _hash_range(field: Field, base: str) -> tuple[int, int]:
    """The range an `H`, `H(a-b)` term (without its step) picks from."""
    low, high = field.low, field.high
    if field is DOM:
        low, high = 1, 28  # as in Jenkins: a day every month has
    elif field is DOW:
        high = 6
    if base != "h":
        inner = base[1:]
        if not (inner.startswith("(") and inner.endswith(")") and "-" in inner):
            raise CronError(f"{field.name}: {base!r} is not H, H(a-b), H/n or H(a-b)/n")
        first, _, second = inner[1:-1].partition("-")
        low, high = value(field, first), value(field, second)
        if high < low:
            raise CronError(f"{field.name}: range {base!r} is backwards")
    return low, high


@functools.lru_cache(maxsize=4096)
def hash_period(field: Field, text: str) -> int:
    """A period of the field's values in its spread: every `H` term uses spread only modulo
    its range's size (or its step), so spread % period gives the same values as spread, and
    jobs whose names hash alike share one parsed field. 0 if the field has no `H` term; an
    invalid one counts 1 (parsing the field fails anyway). The terms are split exactly as
    values(), month_days() and week_days() split them."""
    terms = _hash_terms(field, text)
    period = 1 if terms else 0
    for base, step_text in terms:
        try:
            low, high = _hash_range(field, base)
            step = step_of(field, step_text) if step_text is not None else 1
        except CronError:
            continue
        size = high - low + 1
        period = math.lcm(period, size if step == 1 else min(step, size))
    return period


def _hash_terms(field: Field, text: str) -> list[tuple[str, str | None]]:
    """The `H` terms (base, step text or None) that values() will see for a field's text."""
    texts = [text]
    if field is DOM:  # as month_days(): only plain terms go to values()
        texts = [t for t in text.split(",") if _plain_day(t)]
    elif field is DOW:  # as week_days(): plain terms, and the days of `#` and `L` terms
        texts = [_weekday_part(t) for t in text.split(",")]
    found = []
    for part in texts:
        if not is_hashed(part):
            continue  # values() ignores the spread of a text without `H`
        for term in part.split(","):
            base, slash, step_text = term.partition("/")
            if base.startswith("h"):
                found.append((base, step_text if slash else None))
    return found


# --- day of month -------------------------------------------------------------------------------

# A day counted from the month's end: 0 is `L`, -3 is `L-3` (three days before the last day,
# as in Quartz: the 28th of a 31-day month).
DayRange = tuple[int, int, int]  # first, last, step; an end <= 0 counts from the month's end


@dataclass(frozen=True, slots=True)
class MonthDays:
    """What a day-of-month field allows; which days that is depends on the month."""

    fixed: frozenset[int]  # plain days, `*/2`, `28-3`
    relative: tuple[DayRange, ...]  # `L`, `L-3`, `25-L`, `1-L-3/2`
    nearest: frozenset[int]  # `15W`: the weekday nearest the 15th; 0 is `LW`
    by_length: tuple[frozenset[int], ...]  # fixed and relative days, for months of 28-31 days

    def days(self, last: int) -> frozenset[int]:
        return self.by_length[last - 28]


@functools.lru_cache(maxsize=4096)
def month_days(text: str, spread: int) -> MonthDays:
    """Parse a day-of-month field (lowercase)."""
    plain: list[str] = []
    relative: list[DayRange] = []
    nearest: set[int] = set()
    for term in text.split(","):
        if _plain_day(term):
            plain.append(term)
        elif term == "lw":
            nearest.add(0)
        elif term.endswith("w") or (term.startswith("w") and len(term) > 1):  # `15W`, `W15`
            day = term[:-1] if term.endswith("w") else term[1:]
            if not _DIGITS.fullmatch(day):
                raise CronError(f"day-of-month: {term!r}: W goes with one day, as in 15W or LW")
            nearest.add(value(DOM, day))
        else:
            relative.append(_relative(term))
    fixed = frozenset(values(DOM, ",".join(plain), spread)) if plain else frozenset()
    by_length = tuple(fixed | _resolve(relative, last) for last in range(28, LONGEST + 1))
    return MonthDays(fixed, tuple(sorted(set(relative))), frozenset(nearest), by_length)


def _plain_day(term: str) -> bool:
    """A day-of-month term that is not `LW`, `nW` or counted from the last day (`L`, `L-3`)."""
    nearest = term.endswith("w") or (term.startswith("w") and len(term) > 1)
    return not nearest and ("l" not in term or term.startswith("h"))


def _relative(term: str) -> DayRange:
    base, slash, step_text = term.partition("/")
    step = step_of(DOM, step_text) if slash else 1
    parts = _DAY_RANGE.fullmatch(base)
    if parts is None:
        raise CronError(f"day-of-month: {term!r} is not L, L-n, or a range like 25-L or 1-L-3")
    first = _day(parts[1])
    last = _day(parts[2]) if parts[2] else (0 if slash else first)  # `L-5/2` runs to L
    if first <= 0 < last:
        raise CronError(f"day-of-month: {term!r}: a range from {parts[1].upper()} ends at L or L-n")
    if first <= 0 and last <= 0 and first > last:
        raise CronError(f"day-of-month: range {term!r} is backwards")
    return first, last, step


def _day(text: str) -> int:
    if text == "l":
        return 0
    if text.startswith("l-"):
        back = _int(text[2:])
        if not 1 <= back <= 30:
            raise CronError(f"day-of-month: {text.upper()!r}: n in L-n must be 1-30")
        return -back
    return value(DOM, text)


def _resolve(relative: list[DayRange], last: int) -> frozenset[int]:
    days: set[int] = set()
    for first, end, step in relative:
        a = first if first > 0 else last + first
        b = end if end > 0 else last + end
        days.update(d for d in range(a, b + 1, step) if 1 <= d <= last)
    return frozenset(days)


def nearest_weekday(day: int, last: int, first_weekday: int) -> int:
    """The weekday (Mon-Fri) nearest `day` (0: the last day) in a month, never crossing into
    another month (Quartz's `W`): Saturday the 1st moves to Monday the 3rd, Sunday the last to
    Friday. A day past the month's end means its last day, as croniter reads `31W`."""
    day = last if day == 0 else min(day, last)
    weekday = (first_weekday + day - 1) % 7  # 0 = Sunday
    if weekday == 6:
        return day - 1 if day > 1 else day + 2
    if weekday == 0:
        return day + 1 if day < last else day - 2
    return day


# --- day of week --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeekDays:
    """What a day-of-week field allows (0 = Sunday)."""

    plain: frozenset[int]
    nth: frozenset[tuple[int, int]]  # `fri#2`, `mon-fri#1`: (weekday, n)
    last: frozenset[int]  # `5L` (cronsim, Quartz) or `L5` (croniter): the month's last Friday


@functools.lru_cache(maxsize=4096)
def week_days(text: str, spread: int) -> WeekDays:
    """Parse a day-of-week field (lowercase)."""
    plain: list[str] = []
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    for term in text.split(","):
        if "#" in term:
            days, _, n = term.partition("#")
            if not _DIGITS.fullmatch(n) or not 1 <= _int(n) <= 5:
                raise CronError(f"day-of-week: {term!r}: the week after # must be 1-5")
            nth.update((d, _int(n)) for d in _weekday_term(term, days, spread))
        elif term == "l":
            raise CronError(
                "day-of-week: L alone is not a day (Quartz reads it as Saturday); "
                "write 5L for the last Friday, or L in day-of-month for the last day"
            )
        elif term.endswith("l"):
            last.update(_weekday_term(term, term[:-1], spread))
        elif term.startswith("l"):
            last.update(_weekday_term(term, term[1:], spread))
        else:
            plain.append(term)
    found = frozenset(values(DOW, ",".join(plain), spread)) if plain else frozenset()
    return WeekDays(found, frozenset(nth), frozenset(last))


def _weekday_term(term: str, days: str, spread: int) -> tuple[int, ...]:
    if not days or "," in days:
        raise CronError(f"day-of-week: {term!r}: # and L go with a day or a range, as in 5#2, 5L")
    return values(DOW, days, spread)


def _weekday_part(term: str) -> str:
    """What week_days() hands values() for one term: its days, or the term if plain."""
    if "#" in term:
        return term.partition("#")[0]
    if term != "l" and term.endswith("l"):
        return term[:-1]
    if term.startswith("l"):
        return term[1:]
    return term
