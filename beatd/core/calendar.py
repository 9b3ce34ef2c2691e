"""Fire times of one cron schedule with notes on what daylight saving does to them, for
`beatd calendar` and `beatd list`. Pure: no I/O, no clock; "now" is always an argument.

No peer says this: systemd-analyze, croniter and APScheduler list the times and leave the
reader to notice that 02:30 became 03:00, or that 01:30 came round twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple

from beatd.core.cron import SEARCH_YEARS, CronExpr, CronSchedule
from beatd.core.describe import describe
from beatd.core.messages import iso_utc

# DST transitions are months apart, so within a week before a run there is at most one; looking
# no further back keeps a yearly job from comparing offsets across two of them.
_GAP_SEARCH = timedelta(days=7)
# "Sat 2026-11-21 07:24:00 " and the longest zone abbreviations ("+0545", "CHAST").
TIME_WIDTH = 29


class Fire(NamedTuple):  # a tuple: built once per listed run, and 4x faster than a dataclass
    """One fire time in UTC, and what DST did to it ('' when nothing)."""

    at: datetime
    note: str = ""


def fires(schedule: CronSchedule, now: datetime) -> Iterator[Fire]:
    """Yield every fire time after now, oldest first; the caller bounds how many it takes.

    Ends quietly at the end of the calendar (year 9999) or after 50 years without a match.
    """
    fire = next_fire(schedule, now)
    while fire is not None:
        yield fire
        fire = next_fire(schedule, fire.at)


def next_fire(schedule: CronSchedule, t: datetime) -> Fire | None:
    """The first fire time after t (the one before, or now), with its DST note."""
    at = _next(schedule, t)
    return None if at is None else Fire(at, dst_note(schedule, t, at))


def _next(schedule: CronSchedule, t: datetime) -> datetime | None:
    try:
        return schedule.next_after(t)
    # Past year 9999: a zone's offset overflows, or (cron.first_at_or_after, when its month
    # search wraps from December 9999) datetime refuses year 10000 with a ValueError.
    except (OverflowError, ValueError):
        return None


def dst_note(schedule: CronSchedule, prev: datetime, at: datetime) -> str:
    """Say what DST did to the fire time at (the one before it, or now, is prev); '' if nothing.

    As in Debian cron (see beatd.core.cron): a specific time in a skipped hour runs once right
    after the jump, one in a repeated hour runs at its first occurrence only, and wildcard
    jobs run at each real matching instant, so none in a skipped hour.
    """
    zone, expr = schedule.zone, schedule.expr
    prev = max(prev, at - _GAP_SEARCH)
    if zone is UTC or _steady(zone, min(prev, at - _SHIFT), at + _SHIFT):
        return ""
    try:
        local = at.astimezone(zone)
        before = prev.astimezone(zone).utcoffset()
    except OverflowError:
        return ""
    after = local.utcoffset()
    if local.replace(fold=1 - local.fold).utcoffset() != after:
        if expr.fixed_time:
            return f"DST: {clock(local)} comes twice, runs at the first only"
        return f"DST: repeated hour, {'second' if local.fold else 'first'} time"
    if before is None or after is None or after <= before:
        return ""
    jump = transition(zone, prev, at)
    gap_end = jump.astimezone(zone).replace(tzinfo=None)
    gap_start = gap_end - (after - before)
    skipped = _first_between(expr, gap_start, gap_end)
    if skipped is None:
        return ""
    if expr.fixed_time and at == jump:
        return f"DST: {clock(skipped)} skipped, runs at {clock(gap_end)}"
    return f"DST: {clock(gap_start)}-{clock(gap_end)} skipped, no runs in it"


# Wider than any DST shift (Troll's is two hours): a wall time within this of a change of
# offset may be in a repeated hour.
_SHIFT = timedelta(hours=3)
_YEAR = timedelta(days=366)
# Per zone, a span in which its UTC offset is constant: most runs fall in the one around now,
# so `beatd list` of 10,000 jobs asks the zone database twice per zone, not thrice per run.
_STEADY: dict[tzinfo, tuple[datetime, datetime]] = {}


def _steady(zone: tzinfo, lo: datetime, hi: datetime) -> bool:
    """Whether zone's UTC offset is the same from lo to hi."""
    span = _STEADY.get(zone)
    if span is None or not span[0] <= lo < span[1]:
        try:
            span = _STEADY[zone] = _steady_span(zone, lo)
        except OverflowError:  # near year 1 or 9999: let the exact checks decide
            return False
    return hi < span[1]


def _steady_span(zone: tzinfo, t: datetime) -> tuple[datetime, datetime]:
    """From t to the next change of zone's offset, or a year on if none comes sooner."""
    offset = t.astimezone(zone).utcoffset()
    end = t
    # Weekly steps: no zone changes its offset and back within a week (Morocco's Ramadan
    # break, the shortest, is about a month).
    while end < t + _YEAR:
        step = end + _GAP_SEARCH
        if step.astimezone(zone).utcoffset() != offset:
            return t, transition(zone, end, step)
        end = step
    return t, end


def _first_between(expr: CronExpr, start: datetime, end: datetime) -> datetime | None:
    match = expr.first_at_or_after(start)
    return match if match is not None and match < end else None


def transition(zone: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The first whole second in (lo, hi] whose UTC offset differs from lo's (one must)."""
    a, b = int(lo.timestamp()), -int(-hi.timestamp() // 1)
    offset = datetime.fromtimestamp(a, zone).utcoffset()
    while b - a > 1:  # about 20 steps for a week
        mid = (a + b) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset:
            a = mid
        else:
            b = mid
    return datetime.fromtimestamp(b, UTC)


def clock(moment: datetime) -> str:
    """02:30, or 02:30:15 when the seconds matter."""
    text = f"{moment.hour:02d}:{moment.minute:02d}"
    return f"{text}:{moment.second:02d}" if moment.second else text


def zone_name(zone: tzinfo) -> str:
    """Europe/Berlin, or UTC."""
    return str(getattr(zone, "key", None) or zone)


def preview(schedule: CronSchedule, now: datetime, count: int) -> Iterator[str]:
    """`beatd calendar`: a heading, then the next count fire times in the zone and in UTC."""
    expr, zone = schedule.expr, schedule.zone
    yield f"{expr.text} ({describe(expr)}) in {zone_name(zone)}, after {wall(now, zone)}:"
    width = len(str(count))
    shown = 0
    for shown, fire in enumerate(itertools.islice(fires(schedule, now), count), 1):
        text = f"  {shown:>{width}}  {wall(fire.at, zone):<{TIME_WIDTH}}  {iso_utc(fire.at)}"
        yield f"{text}  {fire.note}" if fire.note else text
    if shown < count:
        yield f"  no more fire times (none within {SEARCH_YEARS} years, or past year 9999)"


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def wall(moment: datetime, zone: tzinfo) -> str:
    """Sat 2026-11-21 06:30:00 CET (an f-string: strftime is 3x slower)."""
    try:
        m = moment.astimezone(zone)
    except OverflowError:  # see in_zone
        m = moment.astimezone(UTC)
    return (
        f"{_WEEKDAYS[m.weekday()]} {m.year:04d}-{m.month:02d}-{m.day:02d} "
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d} {m.tzname()}"
    )


def in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """moment in zone, or in UTC if that zone's wall clock would be past year 9999."""
    try:
        return moment.astimezone(zone)
    except OverflowError:
        return moment.astimezone(UTC)
