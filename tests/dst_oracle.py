"""A brute-force oracle for Debian cron's daylight-saving rule, applied by definition.

It is slow on purpose (it looks at every minute) and shares no code with beatd: the fields
are read by tests/cron_oracle.py (a term-by-term definition of the dialect), the time-zone rule
is written out below. Only 5-field expressions.

Debian cron (and DESIGN.md):
- A job with a specific minute and hour (neither field starts with `*`) runs once per matching
  wall time: a wall time that happens twice (clocks go back) runs at its first occurrence; one
  that never happens (clocks go forward) runs at the first real minute after the jump.
- Every other job runs at each real minute whose local wall time matches: twice in a repeated
  hour, never in a skipped one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from cron_oracle import Definition

MINUTE = timedelta(minutes=1)
# Wider than any UTC offset change (Lord Howe's is 30 minutes, Troll's two hours).
MARGIN = timedelta(hours=3)


def is_fixed_time(expression: str) -> bool:
    minute, hour = expression.split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


def exists(wall: datetime, zone: tzinfo) -> bool:
    """Whether a naive wall time happens at all in zone (it does not in a spring-forward gap)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def fire_times(expression: str, zone: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in (start, end], in UTC, by Debian cron's rule."""
    assert len(expression.split()) == 5
    matches = Definition(expression).matches

    found: set[datetime] = set()
    if not is_fixed_time(expression):
        moment = start.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
        while moment <= end:
            if matches(moment.astimezone(zone).replace(tzinfo=None)):
                found.add(moment)
            moment += MINUTE
        return sorted(found)

    wall = start.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) - MARGIN
    last = end.astimezone(zone).replace(tzinfo=None) + MARGIN
    while wall <= last:
        if matches(wall):
            real = wall
            while not exists(real, zone):  # skipped: the first real minute after the jump
                real += MINUTE
            # fold=0 is the first occurrence of a repeated wall time.
            moment = real.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if start < moment <= end:
                found.add(moment)
        wall += MINUTE
    return sorted(found)
