"""What a job's state becomes once the broker has answered for the runs of its plan. Pure.

The cursor moves past each run up to the first one that was lost or nacked: that one and every
run after it are planned and published again (under the same ids), so nothing is skipped and
the state never runs ahead of what the broker confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from beatd.core.jobstate import JobState
from beatd.core.plan import JobPlan
from beatd.core.ports import Outcome

_CONFIRMED, _UNROUTABLE = Outcome.CONFIRMED, Outcome.UNROUTABLE
_TAKEN = (_CONFIRMED, _UNROUTABLE)  # what the broker confirmed


def handled(outcomes: Sequence[Outcome | None]) -> int:
    """How many runs, from the first, are settled: up to the first lost or nacked one."""
    for index, outcome in enumerate(outcomes):
        if outcome is Outcome.LOST or outcome is Outcome.NACKED:
            return index
    return len(outcomes)


def settle(plan: JobPlan, outcomes: Sequence[Outcome | None], now: datetime) -> JobState:
    """The job's state after publishing plan.runs with these outcomes, in order (None: the run
    expired before it could be published; it and a REFUSED one count as missed)."""
    runs, after = plan.runs, plan.state
    if len(runs) == 1 and outcomes[0] is _CONFIRMED:
        # A burst is thousands of these: one run, confirmed. Keep it cheap.
        return JobState(
            after.name, after.fingerprint, after.cursor, after.last_slot, now,
            after.published + 1, after.missed, after.unroutable,
        )  # fmt: skip
    done = handled(outcomes)
    if done == len(runs):
        base = after
    elif done:
        last = runs[done - 1].slot
        base = after._replace(cursor=last, last_slot=last)
    else:
        base = plan.before
    settled = outcomes[:done]
    published = sum(1 for outcome in settled if outcome in _TAKEN)
    unroutable = sum(1 for outcome in settled if outcome is _UNROUTABLE)
    # The last slot is the newest the broker took, not merely the newest handled: a run that
    # expired before it could be published is handled (missed) but was never published.
    last_slot = next(
        (run.slot for run, o in zip(runs[:done][::-1], settled[::-1], strict=True) if o in _TAKEN),
        plan.before.last_slot,
    )
    return JobState(
        base.name,
        base.fingerprint,
        base.cursor,
        last_slot,
        now if published else base.last_published_at,
        base.published + published,
        base.missed + (done - published),
        base.unroutable + unroutable,
    )
