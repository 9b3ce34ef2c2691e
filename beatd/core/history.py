"""The run history (pure, no I/O): the scheduler's events as JSON batches, and `beatd history`'s
view of events read back from the stream: one row per run, joining what the scheduler did
(nominal slot, publish time, lateness) with what the worker did (outcome, duration, host)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beatd.core.messages import Run, iso_utc

BATCH_RUNS = 1000  # scheduler events per message: a 10,000-run burst is 10 messages
SCHEDULER_TYPE = "beatd.scheduler"  # the AMQP type of a scheduler batch
MARKER_TYPE = "beatd.marker"  # `beatd history` appends one to know where the stream ended
_json = json.JSONDecoder().decode


def scheduler_event(kind: str, run: Run, now: datetime, *, count: int = 1) -> dict[str, Any]:
    """One thing the scheduler did about a run: published, unroutable or missed (count slots
    up to run.slot, none published)."""
    event: dict[str, Any] = {
        "event": kind,
        "job": run.job.name,
        "task": run.job.task,
        "run_id": run.id,
        "trigger": run.trigger.value,
        "scheduled_at": iso_utc(run.slot),
        "published_at": None if kind == "missed" else iso_utc(now, millis=True),
        "lateness_s": round(max(0.0, (now - run.slot).total_seconds()), 3),
    }
    if kind == "missed":
        event["count"] = count
    return event


def batches(events: Sequence[dict[str, Any]]) -> Iterator[bytes]:
    """Message bodies of at most BATCH_RUNS events each."""
    for start in range(0, len(events), BATCH_RUNS):
        chunk = events[start : start + BATCH_RUNS]
        yield json.dumps({"v": 1, "events": chunk}, separators=(",", ":")).encode()


def decode(kind: str, body: bytes) -> list[dict[str, Any]]:
    """The events in one message from the stream: a scheduler batch or one worker event;
    nothing for a marker or something unreadable (the stream is shared; never fail on it)."""
    if kind == MARKER_TYPE:
        return []
    try:
        data = _json(body.decode())  # not json.loads: it sniffs the encoding of bytes first
    except ValueError:  # UnicodeDecodeError too
        return []
    if not isinstance(data, dict):
        return []
    if kind == SCHEDULER_TYPE:
        return [e for e in data.get("events", ()) if isinstance(e, dict) and "run_id" in e]
    return [data] if isinstance(data.get("event"), str) and "run_id" in data else []


def since_text(since: datetime) -> str:
    """since as the events write their times, to the second: 2026-11-21T05:30:00."""
    return iso_utc(since)[:19]


def is_since(event: dict[str, Any], since: str) -> bool:
    """Whether an event happened at or after since (since_text): by the worker's `at` or the
    scheduler's `published_at`, all UTC ISO 8601 and so in text order. A missed slot has
    neither and is kept: the stream offset it was read from already bounds it."""
    moment = event.get("at") or event.get("published_at")
    return not isinstance(moment, str) or moment[:19] >= since


@dataclass
class Row:
    """One run as `beatd history` shows it."""

    run_id: str
    job: str
    scheduled_at: str | None = None
    published_at: str | None = None
    lateness_s: float | None = None
    outcome: str = "-"
    duration_s: float | None = None
    worker: str | None = None
    attempts: int = 0
    missed: int = 0
    seen: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "scheduled_at": self.scheduled_at,
            "published_at": self.published_at,
            "lateness_s": self.lateness_s,
            "outcome": self.outcome,
            "duration_s": self.duration_s,
            "worker": self.worker,
            "attempts": self.attempts,
            "missed": self.missed,
        }


def _worker_outcome(event: dict[str, Any]) -> str:
    kind = str(event["event"])
    if kind in ("failed", "timed_out") and event.get("retry_in_s") is not None:
        return f"{kind}, retrying"
    if kind in ("failed", "timed_out", "rejected", "expired"):
        return f"{kind}, dead-lettered"
    return kind


def fold(events: Iterable[dict[str, Any]], job: str | None = None) -> list[Row]:
    """One row per run, in the order each run was first seen; the outcome is the newest."""
    rows: dict[str, Row] = {}
    for event in events:
        if job is not None and event.get("job") != job:
            continue
        run_id = str(event["run_id"])
        row = rows.get(run_id)
        if row is None:
            row = rows[run_id] = Row(run_id, str(event.get("job", "?")))
        kind = str(event.get("event"))
        row.seen.append(kind)
        if event.get("scheduled_at") and row.scheduled_at is None:
            row.scheduled_at = str(event["scheduled_at"])
        if kind in ("published", "unroutable", "missed"):
            # The scheduler's word on the slot wins (a worker's event may arrive first: the
            # scheduler sends its batch only after the broker's confirms).
            row.scheduled_at = event.get("scheduled_at") or row.scheduled_at
            row.published_at = event.get("published_at")
            row.lateness_s = event.get("lateness_s")
            if kind == "missed":
                row.missed = int(event.get("count", 1))
                row.outcome = f"missed ({row.missed} slots, not published)"
            elif row.outcome == "-" or kind == "unroutable":
                row.outcome = "unroutable (no queue)" if kind == "unroutable" else "published"
            continue
        if kind == "duplicate" and row.outcome not in ("-", "published"):
            continue  # a second copy, skipped: the first copy's outcome stands
        row.outcome = _worker_outcome(event)
        row.worker = event.get("worker") or row.worker
        if event.get("duration_s") is not None:
            row.duration_s = float(event["duration_s"])
        if kind == "started":
            row.attempts = max(row.attempts, int(event.get("attempt") or 1))
    return list(rows.values())


def _short(iso: str | None) -> str:
    """2026-11-21T05:30:00.004Z as 2026-11-21 05:30:00 (UTC, to the second)."""
    return "-" if not iso else iso[:19].replace("T", " ")


def table(rows: Sequence[Row]) -> list[str]:
    """`beatd history` as text: times in UTC."""
    head = ("SCHEDULED (UTC)", "PUBLISHED", "LATE", "OUTCOME", "DURATION", "WORKER", "JOB")
    body = [
        (
            _short(r.scheduled_at),
            _short(r.published_at),
            "-" if r.lateness_s is None else f"{r.lateness_s:.3f}s",
            r.outcome,
            "-" if r.duration_s is None else f"{r.duration_s:.3f}s",
            r.worker or "-",
            r.job,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [head, *body]
    ]


def last_outcomes(rows: Iterable[Row]) -> dict[str, str]:
    """Per job, the outcome of its newest run: the latest slot, else the last seen (a read
    that begins mid-stream can first see an older run by its late events). `published` while
    no worker has said anything of it yet."""
    newest: dict[str, tuple[str, Row]] = {}
    for row in rows:
        slot = (row.scheduled_at or "")[:19]  # the worker writes milliseconds, the scheduler not
        if slot >= newest.get(row.job, ("", row))[0]:
            newest[row.job] = (slot, row)
    return {job: row.outcome for job, (_, row) in newest.items()}
