"""Time for tests: aware UTC datetimes in one call, and a settable clock to inject."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


class FakeClock:
    """A settable clock for the scheduler: tests move time, then wake the loop."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
