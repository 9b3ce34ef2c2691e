"""A definition of beatd's cron dialect, by brute force: does a wall-clock time match?

Shares no code with beatd and precomputes nothing: each term is read as the README defines it
and tried against one value (answers are memoised, nothing more). No `H` (its values are beatd's
hash).

- A field is a list of terms; a term is `*`, a value, `a-b` (wrapping past the field's end when
  b < a), any of those with `/step` (every step-th value walking from the start; a lone value
  with a step walks to the field's end), or a name (`jan`, `january`, `mon`, `monday`).
- Day of week: Sunday is 0 or 7; `*` is each day once; `x#n` the n-th such weekday of the month,
  `xL` or `Lx` the last one.
- Day of month: `L` the last day, `L-n` n days before it, either as a range end (`25-L`,
  `1-L-3`, `L-3-L`); `nW` (or `Wn`) the weekday of the same month nearest day n (the last day if
  the month is shorter), `LW` the last weekday.
- `?` is `*` in a day field. Day-of-month and day-of-week: both must match when either field
  starts with `*`, else either may (Debian).
"""

from __future__ import annotations

import calendar
import functools
from datetime import date, datetime, time, timedelta

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
FULL_MONTHS = (
    "january february march april may june july august september october november december"
)
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
FULL_DAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
MONTH_NAMES = {n: i + 1 for i, n in enumerate(MONTHS)} | {
    n: i + 1 for i, n in enumerate(FULL_MONTHS.split())
}
DAY_NAMES = {n: i for i, n in enumerate(DAYS)} | {n: i for i, n in enumerate(FULL_DAYS)}
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def number(text: str, names: dict[str, int]) -> int:
    if text in names:
        return names[text]
    assert text.isascii() and text.isdigit(), text
    return int(text)


def in_term(term: str, v: int, low: int, high: int, names: dict[str, int], dow: bool) -> bool:
    """Walk the term's values one by one from its start and see whether v comes up."""
    base, slash, step_text = term.partition("/")
    step = int(step_text) if slash else 1
    if base == "*":
        first, last = low, 6 if dow else high
    elif "-" in base:
        a, b = base.split("-")
        first, last = number(a, names), number(b, names)
    else:
        first = number(base, names)
        last = first if not slash else (7 if dow and first == 7 else (6 if dow else high))
    if dow and first == 7 and last < 7:
        first = 0  # Sunday starting a week: `7-1` is Sun-Mon
    wrap_to = 0 if dow else low
    wrap_at = 6 if dow and first > last else high
    x, i = first, 0
    for _ in range(high - low + 3):
        if i % step == 0 and (x % 7 == v if dow else x == v):
            return True
        if x == last:
            return False
        x, i = (wrap_to if x == wrap_at else x + 1), i + 1
    raise AssertionError(f"walked past the end of {term!r}")


def nearest_weekday(target: int, wall: datetime) -> int:
    last = calendar.monthrange(wall.year, wall.month)[1]
    target = min(target, last)
    weekdays = [d for d in range(1, last + 1) if calendar.weekday(wall.year, wall.month, d) < 5]
    return min(weekdays, key=lambda d: abs(d - target))


def in_dom_term(term: str, wall: datetime) -> bool:
    last = calendar.monthrange(wall.year, wall.month)[1]
    if term == "lw":
        return wall.day == nearest_weekday(last, wall)
    if term.endswith("w") or term.startswith("w"):
        return wall.day == nearest_weekday(int(term.strip("w")), wall)
    if "l" not in term:
        return in_term(term, wall.day, 1, 31, {}, dow=False)
    base, slash, step_text = term.partition("/")
    step = int(step_text) if slash else 1
    ends: list[int] = []
    rest = base
    while rest:  # read `L-3-L`, `25-L-3`, `1-L` left to right
        if rest.startswith("l-") and rest[2:3].isdigit():
            digits = rest[2:].split("-")[0]
            ends.append(last - int(digits))
            rest = rest[2 + len(digits) :]
        elif rest.startswith("l"):
            ends.append(last)
            rest = rest[1:]
        else:
            digits = rest.split("-")[0]
            ends.append(int(digits))
            rest = rest[len(digits) :]
        rest = rest.removeprefix("-")
    first = ends[0]
    end = ends[1] if len(ends) > 1 else (last if slash else first)
    return wall.day in range(first, end + 1, step)


def in_dow_term(term: str, wall: datetime) -> bool:
    weekday = (wall.weekday() + 1) % 7
    last = calendar.monthrange(wall.year, wall.month)[1]
    if "#" in term:
        days, n = term.split("#")
        return (wall.day - 1) // 7 + 1 == int(n) and in_term(days, weekday, 0, 7, DAY_NAMES, True)
    if term.endswith("l") or term.startswith("l"):
        days = term.strip("l")
        return wall.day + 7 > last and in_term(days, weekday, 0, 7, DAY_NAMES, True)
    return in_term(term, weekday, 0, 7, DAY_NAMES, dow=True)


class Definition:
    """An expression read term by term, asked about one value or one time at a time."""

    def __init__(self, expression: str) -> None:
        text = expression.lower()
        parts = MACROS.get(text, text).split()
        self.with_seconds = len(parts) == 6
        if len(parts) == 5:
            parts.insert(0, "0")
        self.sec, self.min, self.hr, dom, self.mon, dow = parts
        self.dom, self.dow = ("*" if f == "?" else f for f in (dom, dow))
        self.both = self.dom.startswith("*") or self.dow.startswith("*")
        # Memoised: a time zone's brute-force search asks about the same values over and over.
        self.second = functools.cache(self.second)  # type: ignore[method-assign]
        self.minute = functools.cache(self.minute)  # type: ignore[method-assign]
        self.hour = functools.cache(self.hour)  # type: ignore[method-assign]
        self.day = functools.cache(self.day)  # type: ignore[method-assign]

    def second(self, v: int) -> bool:
        return _field(self.sec, v, 0, 59)

    def minute(self, v: int) -> bool:
        return _field(self.min, v, 0, 59)

    def hour(self, v: int) -> bool:
        return _field(self.hr, v, 0, 23)

    def day(self, day: date) -> bool:
        if not _field(self.mon, day.month, 1, 12, MONTH_NAMES):
            return False
        wall = datetime.combine(day, time())
        by_dom = any(in_dom_term(t, wall) for t in self.dom.split(","))
        by_dow = any(in_dow_term(t, wall) for t in self.dow.split(","))
        return (by_dom and by_dow) if self.both else (by_dom or by_dow)

    def matches(self, wall: datetime) -> bool:
        return (
            self.second(wall.second)
            and self.minute(wall.minute)
            and self.hour(wall.hour)
            and self.day(wall.date())
        )

    def fires(self, start: datetime, count: int, days: int = 366 * 30) -> list[datetime]:
        """The first `count` matching naive wall times after start, within `days` days."""
        seconds = [s for s in range(60) if self.second(s)]
        minutes = [m for m in range(60) if self.minute(m)]
        hours = [h for h in range(24) if self.hour(h)]
        found: list[datetime] = []
        day = start.date()
        for _ in range(days):
            if self.day(day):
                for h in hours:
                    for m in minutes:
                        for s in seconds:
                            wall = datetime.combine(day, time(h, m, s))
                            if wall > start:
                                found.append(wall)
                                if len(found) == count:
                                    return found
            day += timedelta(days=1)
        return found


def _field(text: str, v: int, low: int, high: int, names: dict[str, int] | None = None) -> bool:
    return any(in_term(t, v, low, high, names or {}, dow=False) for t in text.split(","))
