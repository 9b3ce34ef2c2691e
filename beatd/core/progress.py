"""The leader's progress as it is kept on the broker, so that a new leader resumes where the
old one stopped: one snapshot of every job's state, encoded as JSON, and how a new leader
merges it with its own. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from beatd.core.config import Job
from beatd.core.jobstate import JobState

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a leader had confirmed, per job, when it wrote this."""

    leader: str  # "host pid", as the status line shows it
    written_at: datetime
    states: Mapping[str, JobState]


def encode(leader: str, now: datetime, states: Iterable[JobState]) -> bytes:
    """A snapshot as compact JSON (about 150 bytes a job)."""
    jobs = {
        s.name: [
            s.fingerprint,
            s.cursor.isoformat(),
            _iso(s.last_slot),
            _iso(s.last_published_at),
            s.published,
            s.missed,
            s.unroutable,
        ]
        for s in states
    }
    body = {"v": FORMAT, "leader": leader, "at": now.isoformat(), "jobs": jobs}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(raw: bytes) -> Snapshot:
    """Parse a snapshot; ValueError says what is wrong with it."""
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != FORMAT:
            raise ValueError(f"not a version {FORMAT} snapshot")
        states = {}
        for name, row in body["jobs"].items():
            fingerprint, cursor, last, published_at, published, missed, unroutable = row
            states[name] = JobState(
                name=str(name),
                fingerprint=str(fingerprint),
                cursor=datetime.fromisoformat(cursor),
                last_slot=_time(last),
                last_published_at=_time(published_at),
                published=int(published),
                missed=int(missed),
                unroutable=int(unroutable),
            )
        return Snapshot(str(body["leader"]), datetime.fromisoformat(body["at"]), states)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable progress snapshot: {exc}") from None


def merge(
    local: Mapping[str, JobState], remote: Mapping[str, JobState], jobs: Iterable[Job]
) -> tuple[dict[str, JobState], list[str]]:
    """Each job's state for a new leader: the further of its own and the snapshot's, when both
    are for the same schedule. Returns the states and the jobs whose schedule differs from the
    one the old leader ran (those keep their own state: a changed schedule starts afresh)."""
    merged: dict[str, JobState] = {}
    differing: list[str] = []
    for job in jobs:
        mine, theirs = local.get(job.name), remote.get(job.name)
        if theirs is None:
            if mine is not None:
                merged[job.name] = mine
            continue
        if theirs.fingerprint != job.fingerprint:
            differing.append(job.name)
            if mine is not None:
                merged[job.name] = mine
            continue
        if mine is None or mine.fingerprint != job.fingerprint or theirs.cursor >= mine.cursor:
            merged[job.name] = theirs
        else:
            merged[job.name] = mine
    return merged, differing


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))
