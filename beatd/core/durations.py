"""Durations as written in schedule files (500ms, 30s, 1h30m, 2d): parsing and printing, no I/O."""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*")
EXAMPLES = "e.g. 500ms, 30s, 5m, 1h30m, 2d"
_LONGEST_MS = 36_500 * _UNITS_MS["d"]


def parse_duration(value: object, *, allow_zero: bool = False) -> timedelta:
    """Parse a duration; a bare number means seconds, as in systemd. Raise ValueError."""
    if isinstance(value, bool):  # YAML's `yes` is an int subclass; never a duration
        raise ValueError(f"{value!r} is not a duration ({EXAMPLES})")
    if isinstance(value, int):  # exact: math.isfinite() of a 310-digit int overflows
        total_ms = value * 1000
    elif isinstance(value, float) and math.isfinite(value):
        total_ms = round(value * 1000)
    elif isinstance(value, str):
        total_ms = _parse_text(value)
    else:
        raise ValueError(f"{value!r} is not a duration ({EXAMPLES})")
    if total_ms < 0 or (total_ms == 0 and not allow_zero):
        raise ValueError(f"{value!r} must be {'zero or more' if allow_zero else 'positive'}")
    # Longer would overflow datetime arithmetic near the end of the calendar.
    if total_ms > _LONGEST_MS:
        raise ValueError(f"{value!r} is too long (at most 36500d, about 100 years)")
    return timedelta(milliseconds=total_ms)


@functools.lru_cache(maxsize=1024)  # a big file says `every: 5m` thousands of times
def _parse_text(text: str) -> int:
    pos, total, seen = 0, 0.0, False
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match:
            raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
        total += float(match[1]) * _UNITS_MS[match[2]]
        pos, seen = match.end(), True
    if not seen:
        raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
    return round(total) if math.isfinite(total) else _LONGEST_MS + 1  # the caller: too long


def format_duration(delta: timedelta) -> str:
    """Print a duration the way it is written in a schedule file: 1h30m, 500ms, 2d."""
    ms = round(delta.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    parts = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNITS_MS[unit]
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return sign + "".join(parts)


def format_left(delta: timedelta) -> str:
    """Print time remaining like `systemctl list-timers`: the two largest units, '4min 3s'."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "now"
    if seconds == 0:
        return f"{delta.microseconds // 1000}ms" if delta.microseconds else "now"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])
