"""settle(plan, outcomes, now): a job's state once the broker answered, for every outcome mix."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from beatd.core import plan
from beatd.core.jobstate import JobState
from beatd.core.ports import Outcome
from beatd.core.settle import handled, settle
from tests.clock import utc
from tests.test_plan import job

T0 = utc(2026, 11, 21, 5, 30)
NOW = T0 + timedelta(minutes=3, seconds=1)
C, U, N, L = Outcome.CONFIRMED, Outcome.UNROUTABLE, Outcome.NACKED, Outcome.LOST
R = Outcome.REFUSED


def three_runs() -> plan.JobPlan:
    """`misfire: all` after 3 minutes down: runs at 05:31, 05:32, 05:33 (05:33 on time)."""
    j = job("every: 1m", misfire="all")
    before = JobState(j.name, j.fingerprint, cursor=T0, last_slot=T0, published=7, missed=1)
    p = plan.plan_job(j, before, NOW)
    assert [r.slot for r in p.runs] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    return p


def test_all_confirmed_moves_the_cursor_to_the_newest_run_and_counts_each() -> None:
    p = three_runs()
    after = settle(p, [C, C, C], NOW)
    assert after.cursor == after.last_slot == T0 + timedelta(minutes=3)
    assert (after.published, after.unroutable, after.missed) == (10, 0, 1)
    assert after.last_published_at == NOW


def test_the_cursor_stops_before_the_first_lost_run_even_if_later_ones_were_confirmed() -> None:
    p = three_runs()
    after = settle(p, [C, L, C], NOW)
    assert after.cursor == after.last_slot == T0 + timedelta(minutes=1)
    assert after.published == 8, "only the run before the loss counts; the rest go again"
    assert handled([C, L, C]) == 1


def test_a_nack_first_leaves_the_state_as_it_was_before_the_plan() -> None:
    p = three_runs()
    assert settle(p, [N, C, C], NOW) == p.before


def test_an_unroutable_run_is_handled_and_counted_but_the_cursor_moves_on() -> None:
    p = three_runs()
    after = settle(p, [U, C, C], NOW)
    assert after.cursor == T0 + timedelta(minutes=3)
    assert (after.published, after.unroutable) == (10, 1)


def test_a_run_expired_before_publishing_counts_as_missed_not_published() -> None:
    p = three_runs()
    after = settle(p, [None, C, C], NOW)
    assert (after.published, after.missed) == (9, 2)
    assert after.cursor == T0 + timedelta(minutes=3)


def test_all_expired_publishes_nothing_and_keeps_the_last_publish_time() -> None:
    p = three_runs()
    after = settle(p, [None, None, None], NOW)
    assert after.published == 7
    assert after.last_published_at is None
    assert after.missed == 4


@pytest.mark.parametrize("outcomes", list(itertools.product([None, C, U, N, L, R], repeat=3)))
def test_every_mix_keeps_the_cursor_at_the_last_settled_run_and_never_ahead(
    outcomes: tuple[Outcome | None, ...],
) -> None:
    p = three_runs()
    after = settle(p, outcomes, NOW)
    done = handled(outcomes)
    expected_cursor = p.before.cursor if done == 0 else p.runs[done - 1].slot
    assert after.cursor == expected_cursor
    settled = outcomes[:done]
    published = sum(o in (C, U) for o in settled)
    assert after.published == p.before.published + published
    assert after.unroutable == sum(o is U for o in settled)
    assert after.missed == p.before.missed + (done - published)
    assert after.fingerprint == p.before.fingerprint


def test_the_last_slot_is_the_newest_published_not_the_newest_expired() -> None:
    # Issue 9, item 4: `beatd list` showed as LAST a slot that expired before publishing.
    p = three_runs()
    assert settle(p, [C, None, None], NOW).last_slot == T0 + timedelta(minutes=1)
    assert settle(p, [None, None, None], NOW).last_slot == p.before.last_slot
