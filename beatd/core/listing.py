"""`beatd list`: upcoming runs in time order, as a table or JSON. Pure: now is an argument."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from beatd.core.config import Job
from beatd.core.describe import describe
from beatd.core.durations import format_duration, format_left
from beatd.core.jobstate import JobState
from beatd.core.messages import iso_utc
from beatd.core.schedules import Cron


@dataclass(frozen=True, slots=True)
class Run:
    at: datetime | None  # None: the job has no next run (disabled, or a one-off that is done)
    job: Job


def upcoming(
    jobs: Sequence[Job],
    now: datetime,
    count: int | None = None,
    until: datetime | None = None,
) -> Iterator[Run]:
    """Runs after now in time order. With neither count nor until: each enabled job's next run.

    Otherwise every run of the given jobs up to until, at most count of them; the merge is lazy,
    so `--count 10` over 10,000 jobs computes about 10,000 next times, not millions.
    """
    enabled = [job for job in jobs if job.enabled]
    if count is None and until is None:
        firsts = [(job.schedule.next_after(now), job) for job in enabled]
        yield from sorted(
            (Run(at, job) for at, job in firsts if at is not None),
            key=lambda run: (run.at, run.job.name),
        )
        return
    # Runs at the same time come in job-name order, as above (Runs themselves do not compare).
    merged: Iterator[tuple[datetime, str, Run]] = heapq.merge(*(_runs(job, now) for job in enabled))
    if until is not None:
        merged = itertools.takewhile(lambda item: item[0] <= until, merged)
    yield from (run for _, _, run in itertools.islice(merged, count))


def _runs(job: Job, now: datetime) -> Iterator[tuple[datetime, str, Run]]:
    at = job.schedule.next_after(now)
    while at is not None:
        yield at, job.name, Run(at, job)
        at = job.schedule.next_after(at)


def schedule_text(job: Job) -> str:
    """The schedule as written: `*/15 * * * *`, `every 30s`, `at 2027-01-01T00:00:00+01:00`."""
    return job.spec if job.kind == "cron" else f"{job.kind} {job.spec}"


def schedule_words(job: Job) -> str:
    """The schedule with a plain-words description, for the table."""
    notes = []
    if isinstance(job.schedule, Cron):
        notes.append(describe(job.schedule.cron.expr))
        offset = job.schedule.offset
    else:
        offset = getattr(job.schedule, "offset", timedelta(0))
    if job.jitter and offset:
        notes.append(f"+{format_duration(offset)} jitter")
    elif job.jitter and job.kind == "at":
        notes.append("jittered")
    text = schedule_text(job)
    return f"{text} ({', '.join(notes)})" if notes else text


def to_json(runs: Iterable[Run]) -> str:
    rows = [
        {
            "job": run.job.name,
            "task": run.job.task,
            "at": iso_utc(run.at),
            "local": run.at.astimezone(run.job.timezone).isoformat(),
            "schedule": schedule_text(run.job),
        }
        for run in runs
        if run.at is not None
    ]
    return json.dumps(rows, indent=2, ensure_ascii=False)


def table(runs: Iterable[Run], states: Mapping[str, JobState], now: datetime) -> str:
    """A `systemctl list-timers` style table with a count line at the end."""
    header = ("NEXT", "LEFT", "LAST", "JOB", "SCHEDULE", "TASK")
    rows = []
    for run in runs:
        job = run.job
        state = states.get(job.name)
        last = state.last_slot if state else None
        if run.at is not None:
            next_text, left = _local(run.at, job), format_left(run.at - now)
        else:
            next_text, left = "-", "-" if job.enabled else "disabled"
        last_text = _local(last, job) if last else "-"
        rows.append((next_text, left, last_text, job.name, schedule_words(job), job.task))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)  # each cell padded to its column
    lines = [line.format(*row).rstrip() for row in [header, *rows]]
    jobs = len({row[3] for row in rows})
    summary = f"{jobs} {'job' if jobs == 1 else 'jobs'} listed."
    if len(rows) != jobs:
        summary = f"{len(rows)} runs of {summary}"
    return "\n".join([*lines, "", summary])


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _local(moment: datetime, job: Job) -> str:
    """Sat 2026-11-21 06:30:00 CET, in the job's zone (an f-string: strftime is 3x slower)."""
    m = moment.astimezone(job.timezone)
    return (
        f"{_WEEKDAYS[m.weekday()]} {m.year:04d}-{m.month:02d}-{m.day:02d} "
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d} {m.tzname()}"
    )


def with_inactive(runs: list[Run], jobs: Sequence[Job]) -> list[Run]:
    """Append the jobs that have no next run (disabled, or done), so they are not hidden."""
    shown = {run.job.name for run in runs}
    return runs + [Run(None, job) for job in jobs if job.name not in shown]
