"""The real clock: the one place the wall clock is read for the daemons."""

from __future__ import annotations

from datetime import UTC, datetime


def system_clock() -> datetime:
    return datetime.now(UTC)
