"""`beatd list`: upcoming runs in time order, streamed as a table or JSON. Pure: now is an argument.

Rows are produced lazily and printed as they come, so memory stays flat however many runs are
asked for; the command caps their number at MAX_ROWS and says so.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, tzinfo
from operator import itemgetter
from typing import Any, Protocol, TypeVar

from beatd.core.calendar import TIME_WIDTH, in_zone, next_fire, wall, zone_name
from beatd.core.config import Job
from beatd.core.describe import describe
from beatd.core.durations import format_duration, format_left
from beatd.core.messages import iso_utc
from beatd.core.schedules import Cron, Schedule

MAX_ROWS = 100_000  # ~15 MB of table: more than anyone reads; the rest is a narrower question
_HEAD = 1000  # rows measured for the column widths before the rest is streamed
# Streamed columns cannot be measured to the end: room for any time, and for "23h 59min".
_LEFT_WIDTH = 9
_END = datetime(MAXYEAR, 12, 31, 23, 59, 59, tzinfo=UTC)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Upcoming:
    at: datetime | None  # None: the job has no next run (disabled, or a one-off that is done)
    job: Job
    note: str = ""  # what daylight saving does to this run, in the job's zone


_Item = tuple[datetime, str, Upcoming]  # sorted by time, then job name (Runs never get compared)


class Progress(Protocol):
    """What the state file says about a job (beatd.runtime.state.JobState)."""

    @property
    def last_slot(self) -> datetime | None: ...
    @property
    def published(self) -> int: ...
    @property
    def missed(self) -> int: ...
    @property
    def unroutable(self) -> int: ...


def upcoming(
    jobs: Sequence[Job],
    now: datetime,
    count: int | None = None,
    until: datetime | None = None,
) -> Iterator[Upcoming]:
    """Runs after now in time order. With neither count nor until: each enabled job's next run.

    Otherwise every run of the given jobs up to until, at most count of them; the merge is lazy
    (one pending run per job), so `--count 10` over 10,000 jobs computes about 10,000 next
    times, and a million runs never sit in memory at once.
    """
    enabled = [job for job in jobs if job.enabled]
    if count is None and until is None:
        yield from _next_runs(enabled, now)
        return
    merged: Iterator[_Item] = heapq.merge(*(_runs(job, now) for job in enabled))
    if until is not None:
        merged = itertools.takewhile(lambda item: item[0] <= until, merged)
    yield from (run for _, _, run in itertools.islice(merged, count))


def _next_runs(jobs: Sequence[Job], now: datetime) -> Iterator[Upcoming]:
    """Each job's next run after now, earliest first. Jobs share schedule objects (most of
    100k jobs share a few thousand), so each schedule's next run is found once; the earliest
    comes before the rest are sorted (`beatd check` asks for that one only)."""
    found: dict[int, tuple[datetime, str] | None] = {}  # id(schedule): its run and DST note
    firsts: list[tuple[datetime, str, Job, str]] = []  # names are unique: jobs never compared
    for job in jobs:
        key = id(job.schedule)  # alive as long as jobs: ids are not reused meanwhile
        if key in found:
            run = found[key]
        else:
            item = _first(job, now)
            run = found[key] = None if item is None else (item[0], item[2].note)
        if run is not None:
            firsts.append((run[0], job.name, job, run[1]))
    if not firsts:
        return
    at, _, job, note = min(firsts)  # unique, so sorting puts it first too
    yield Upcoming(at, job, note)
    firsts.sort()
    yield from (Upcoming(at, job, note) for at, _, job, note in itertools.islice(firsts, 1, None))


def _runs(job: Job, now: datetime) -> Iterator[_Item]:
    item = _first(job, now)
    while item is not None:
        yield item
        item = _first(job, item[0])


def _first(job: Job, t: datetime) -> _Item | None:
    """The job's first run after t (its previous run, or now)."""
    schedule = job.schedule
    if not isinstance(schedule, Cron):
        at = _next(schedule, t)
        return None if at is None else (at, job.name, Upcoming(at, job))
    offset = schedule.offset
    if not offset:  # most jobs: no jitter, no arithmetic
        fire = next_fire(schedule.cron, t)
        return None if fire is None else (fire.at, job.name, Upcoming(fire.at, job, fire.note))
    try:
        fire = next_fire(schedule.cron, t - offset)
        if fire is None:
            return None
        at = fire.at + offset
    except OverflowError:  # jitter pushed it past year 9999: no more runs to show
        return None
    return at, job.name, Upcoming(at, job, fire.note)


def _next(schedule: Schedule, t: datetime) -> datetime | None:
    try:
        return schedule.next_after(t)
    except OverflowError:  # past year 9999: `--now 9999-12-31T23:59:59`
        return None


def window_end(now: datetime, length: timedelta) -> datetime:
    """now + length, or the end of the calendar if that is later."""
    return now + length if _END - now > length else _END


def with_inactive(runs: list[Upcoming], jobs: Sequence[Job]) -> list[Upcoming]:
    """Append the jobs that have no next run (disabled, or done), so they are not hidden."""
    shown = {run.job.name for run in runs}
    return runs + [Upcoming(None, job) for job in jobs if job.name not in shown]


class Bounded:
    """At most limit runs; after iterating, `cut` says whether more were left out."""

    def __init__(self, runs: Iterator[Upcoming], limit: int) -> None:
        self._runs = runs
        self.limit = limit
        self.cut = False

    def __iter__(self) -> Iterator[Upcoming]:
        yield from itertools.islice(self._runs, self.limit)
        self.cut = next(self._runs, None) is not None


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


def json_chunks(
    runs: Iterable[Upcoming],
    states: Mapping[str, Progress],
    outcomes: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """One JSON array, one object per line, produced as the runs come; with outcomes (the run
    history's), each has its job's `last_outcome` too."""
    encode = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps would make one per run
    # As in table: times worked out once per instant (and zone), the last slots' once each.
    times_of = _per_instant(lambda at, zone: (iso_utc(at), in_zone(at, zone).isoformat()))
    lasts: dict[datetime, str] = {}  # bounded by the file
    separator = "[\n"
    for run in runs:
        job, at = run.job, run.at
        times: tuple[str | None, str | None] = (
            (None, None) if at is None else times_of(at, job.timezone)
        )
        state = states.get(job.name)
        last = state.last_slot if state else None
        last_text = (
            None if last is None else lasts.get(last) or lasts.setdefault(last, iso_utc(last))
        )
        record = _record(run, state, *times, last_text)
        if outcomes is not None:
            record["last_outcome"] = outcomes.get(job.name)
        yield separator + encode(record)
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"


def _per_instant(make: Callable[[datetime, tzinfo], _T]) -> Callable[[datetime, tzinfo], _T]:
    """make(at, zone), remembered for one instant at a time, per zone object: runs come in time
    order, so the jobs due at one instant are adjacent (zones by id: tzinfo equality ignores a
    fixed offset's name, which the texts show)."""
    instant: datetime | None = None
    made: dict[int, _T] = {}

    def remembered(at: datetime, zone: tzinfo) -> _T:
        nonlocal instant, made
        if at != instant:
            instant, made = at, {}
        found = made.get(id(zone))
        if found is None:
            found = made[id(zone)] = make(at, zone)
        return found

    return remembered


def _record(
    run: Upcoming, state: Progress | None, at: str | None, local: str | None, last: str | None
) -> dict[str, Any]:
    job = run.job
    return {
        "job": job.name,
        "task": job.task,
        "at": at,
        "local": local,
        "zone": zone_name(job.timezone),
        "schedule": schedule_text(job),
        "enabled": job.enabled,
        "dst": run.note or None,
        "last": last,
        "published": state.published if state else 0,
        "missed": state.missed if state else 0,
        "unroutable": state.unroutable if state else 0,
    }


def table(
    runs: Iterable[Upcoming],
    states: Mapping[str, Progress],
    now: datetime,
    zone: tzinfo | None,
    *,
    jobs: Sequence[Job] = (),
    stream: bool = False,
    outcomes: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A `systemctl list-timers` style table, line by line, with a count line at the end.

    Times are in zone (None: each job's own). With outcomes (the run history's), a LAST
    OUTCOME column follows LAST. Unless stream, every row is measured before the first is
    printed; streamed, the first _HEAD rows are, and if more follow, the cells of every one of
    jobs and room for any time and countdown too.
    """
    where = "each job's zone" if zone is None else zone_name(zone)
    outcome_head = () if outcomes is None else ("LAST OUTCOME",)
    header = (f"NEXT ({where})", "LEFT", "LAST", *outcome_head, "JOB", "SCHEDULE", "TASK", "")
    fixed: dict[str, tuple[str, ...]] = {}  # per job: bounded by the file
    # Texts many jobs share, worked out once; both bounded by the file, and gone with the table.
    # Zones by id: tzinfo equality ignores a fixed offset's name, which the texts show.
    lasts: dict[tuple[datetime, int], str] = {}  # the state file shares its last slots
    words: dict[tuple[int, str, str, bool], str] = {}  # per shared schedule object
    counts: Counter[str] = Counter()

    def static(job: Job) -> tuple[str, ...]:
        """The cells that are the same in each of the job's rows (none are in fixed yet)."""
        name = job.name
        state = states.get(name)
        last = state.last_slot if state else None
        if last is None:
            last_text = "-"
        else:
            place = zone or job.timezone
            when = (last, id(place))
            last_text = lasts.get(when) or lasts.setdefault(when, wall(last, place))
        outcome = () if outcomes is None else (outcomes.get(name) or "-",)
        # The text depends on nothing else (schedule_words); the schedule object is alive as
        # long as the job, so its id is not reused meanwhile.
        key = (id(job.schedule), job.kind, job.spec, not job.jitter)
        described = words.get(key) or words.setdefault(key, schedule_words(job))
        cells = fixed[name] = (last_text, *outcome, name, described, job.task)
        return cells

    next_texts = _per_instant(lambda at, place: (wall(at, place), format_left(at - now)))

    def row(run: Upcoming) -> tuple[str, ...]:
        job = run.job
        name = job.name
        counts[name] = counts.get(name, 0) + 1
        at = run.at
        if at is not None:
            times = next_texts(at, zone or job.timezone)
        else:
            times = ("-", "-" if job.enabled else "disabled")
        note = run.note
        if note and zone is not None and zone_name(zone) != zone_name(job.timezone):
            note = note.replace("DST:", f"DST in {zone_name(job.timezone)}:", 1)
        return (*times, *(fixed.get(name) or static(job)), note)

    rows = map(row, runs)
    head = list(itertools.islice(rows, _HEAD + 1)) if stream else list(rows)
    measured: list[Sequence[str]] = [header, *head]  # for NEXT and LEFT, each row's first cells
    if len(head) > _HEAD:  # more follow: make room for any job's cells and any time
        for job in jobs:
            if job.name not in fixed:
                static(job)
        measured.append(("x" * TIME_WIDTH, "x" * _LEFT_WIDTH))
    # Column by column, so that the loops over 100k rows are map's and max's, not Python's; the
    # other cells are measured once per job: fixed holds those of every row so far.
    widths = [max(map(len, map(itemgetter(i), measured))) for i in (0, 1)]
    widths += [max(map(len, column)) for column in zip(header[2:-1], *fixed.values(), strict=True)]
    del measured
    line = "  ".join(f"{{:<{width}}}" for width in widths)  # each cell padded to its column
    for cells in itertools.chain([header], head, rows):
        text = line.format(*cells)  # the note, cells[-1], is not in the format: left out
        yield f"{text}  {cells[-1]}" if cells[-1] else text.rstrip()
    yield ""
    yield _summary(counts)


def _summary(counts: Counter[str]) -> str:
    jobs, rows = len(counts), sum(counts.values())
    text = f"{jobs} {'job' if jobs == 1 else 'jobs'} listed"
    if rows == jobs:
        return text + "."
    text = f"{rows} runs of {text}"
    name, most = counts.most_common(1)[0]
    if jobs > 1 and most * 2 > rows:  # say who fills the table: `--job` shows the others
        return f"{text} ({most} of them {name})."
    return text + "."
