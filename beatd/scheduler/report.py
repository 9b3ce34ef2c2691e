"""What the scheduler tells the operator after each step: a log line per published, missed or
unroutable run (a summary instead above PER_RUN_LINES runs in a step, so a 10,000-job burst
writes a few lines, not 10,000), and the same facts to any other sinks (metrics, the run
history on the broker). Called once per step, after the broker's confirms: never before a
publish, so it cannot delay one."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from beatd.core.messages import Run, Trigger, iso_utc
from beatd.core.plan import JobPlan
from beatd.core.ports import Outcome

log = logging.getLogger("beatd.scheduler")

# Above this many runs of one kind in a step, one summary line replaces the per-run lines
# (10,000 INFO lines cost ~0.2 s of a 2-core machine, and bury everything else).
PER_RUN_LINES = 100
NAMES_SHOWN = 10  # jobs named in a summary or a reload line before "and N more"


class Sink(Protocol):
    """Something else told about each step (metrics, history)."""

    def step(
        self, plans: Sequence[JobPlan], outcomes: Sequence[Outcome | None], now: datetime
    ) -> None: ...


def names(items: Sequence[str]) -> str:
    """Up to NAMES_SHOWN names, quoted, then "and N more"."""
    shown = ", ".join(repr(name) for name in items[:NAMES_SHOWN])
    if len(items) > NAMES_SHOWN:
        shown += f" and {len(items) - NAMES_SHOWN} more"
    return shown or "none"


def lateness_s(run: Run, now: datetime) -> float:
    """How late a run went out: from its slot to the step that published it."""
    return max(0.0, (now - run.slot).total_seconds())


class Report:
    def __init__(self, exchange: Callable[[], str], sinks: Sequence[Sink] = ()) -> None:
        self.exchange = exchange  # the default exchange (for unroutable lines), as reloaded
        self.sinks = list(sinks)

    def step(
        self, plans: Sequence[JobPlan], outcomes: Sequence[Outcome | None], now: datetime
    ) -> None:
        """Report one step: plans in order, outcomes one per run of each plan, in order."""
        published: list[Run] = []
        unroutable: list[Run] = []
        position = 0
        for job_plan in plans:
            if job_plan.dropped is not None:
                self._dropped(job_plan)
            for run in job_plan.runs:
                outcome = outcomes[position]
                position += 1
                if outcome is Outcome.CONFIRMED:
                    published.append(run)
                elif outcome is Outcome.UNROUTABLE:
                    unroutable.append(run)
        self._published(published, now)
        self._unroutable(unroutable, now)
        for sink in self.sinks:
            sink.step(plans, outcomes, now)

    def _dropped(self, job_plan: JobPlan) -> None:
        dropped, job = job_plan.dropped, job_plan.job
        assert dropped is not None
        log.info(
            "missed %d slot(s) of job %r up to %s; not published (misfire: %s)",
            dropped.count,
            job.name,
            iso_utc(dropped.last),
            job.misfire.value,
            extra={"job": job.name},
        )

    def _published(self, runs: list[Run], now: datetime) -> None:
        if len(runs) > PER_RUN_LINES:
            self._summary("published", logging.INFO, runs, now)
            return
        for run in runs:
            log.info(
                "published %s (%s at %s, %.3fs late)",
                run.id,
                "missed slot" if run.trigger is Trigger.CATCHUP else "scheduled",
                iso_utc(run.slot),
                lateness_s(run, now),
                extra={"job": run.job.name, "run_id": run.id},
            )

    def _unroutable(self, runs: list[Run], now: datetime) -> None:
        if len(runs) > PER_RUN_LINES:
            self._summary("unroutable (no queue bound)", logging.WARNING, runs, now)
            return
        for run in runs:
            log.warning(
                "unroutable %s: no queue is bound to exchange %r for key %r; not delivered",
                run.id,
                run.job.exchange or self.exchange(),
                run.job.routing_key or run.job.task,
                extra={"job": run.job.name, "run_id": run.id},
            )

    def _summary(self, what: str, level: int, runs: list[Run], now: datetime) -> None:
        jobs = sorted({run.job.name for run in runs})
        kinds = Counter(run.trigger.value for run in runs)
        late = [lateness_s(run, now) for run in runs]
        log.log(
            level,
            "%s %d runs of %d jobs (%s) at %s, up to %.3fs late: %s "
            "(one line per run up to %d a step)",
            what,
            len(runs),
            len(jobs),
            ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
            iso_utc(now),
            max(late),
            names(jobs),
            PER_RUN_LINES,
        )


def log_reload(
    path: str, jobs: int, added: list[str], removed: list[str], changed: list[str]
) -> None:
    """One line for a reload, naming the jobs it added, removed and changed."""
    if not (added or removed or changed):
        log.info("reloaded %s: %d jobs, none changed", path, jobs)
        return
    parts = [
        f"{label} {names(sorted(group))}"
        for label, group in (("added", added), ("removed", removed), ("changed", changed))
        if group
    ]
    log.info("reloaded %s: %d jobs; %s", path, jobs, "; ".join(parts))
