"""A job's progress as the scheduler keeps it: how far its schedule has been handled, the
newest slot the broker confirmed, its schedule's fingerprint and counters. A record only;
runtime/state.py stores it in SQLite."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class JobState(NamedTuple):
    """A NamedTuple, as config.Job is: as immutable as a frozen dataclass and built in a
    quarter of the time (a start reads 100k of them; a burst makes one per run)."""

    name: str
    fingerprint: str
    cursor: datetime  # every slot at or before this is handled (published or dropped)
    last_slot: datetime | None = None  # the newest slot the broker confirmed
    last_published_at: datetime | None = None
    published: int = 0
    missed: int = 0  # dropped by the misfire policy, or expired before it could be published
    unroutable: int = 0  # confirmed but returned: no queue bound for its key
