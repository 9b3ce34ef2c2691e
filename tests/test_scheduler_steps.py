"""The scheduler driven step by step over the in-memory broker with a fake clock: no RabbitMQ,
no sleeping. (tests/test_scheduler.py proves the same daemon over the real RabbitMQ.)"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from beatd.core.ports import Outcome
from beatd.scheduler.daemon import SchedulerDaemon
from tests.clock import utc
from tests.fakebroker import LOSE, NACK
from tests.steps import Beat, driven, quiet, schedule

T0 = utc(2026, 11, 21, 5, 30)
EVERY_MINUTE = "  tick:\n    every: 1m\n    task: t.tick\n"
EVERY_SECOND = "  tick:\n    every: 1s\n    task: t.tick\n"


def bound(beat: Beat, key: str = "#") -> str:
    """A queue bound to the beatd exchange, so runs are routable."""
    name = f"q.{key}"
    channel_broker = beat.broker
    from tests.fakebroker import Queue

    channel_broker.queues[name] = Queue(name, {})
    channel_broker.bindings.add(("beatd", name, key))
    return name


@driven
async def test_a_due_run_is_published_at_its_slot_and_not_before() -> None:
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=30))
    queue = bound(beat)
    await beat.start()
    await beat.run_until(T0 - timedelta(milliseconds=1))
    assert beat.published() == []
    await beat.run_until(T0 + timedelta(seconds=1))
    assert beat.published() == ["tick@20261121T053000Z"]
    [message] = beat.broker.messages(queue)
    body = json.loads(message.body)
    assert (body["id"], body["scheduled_at"], body["trigger"]) == (
        "tick@20261121T053000Z",
        "2026-11-21T05:30:00Z",
        "schedule",
    )
    assert message.properties.headers["beatd-job"] == "tick"


@driven
async def test_the_fall_back_night_publishes_02_30_once_even_across_a_reload() -> None:
    # Europe/Berlin leaves CEST at 2026-10-25 01:00 UTC: 02:30 local is 00:30 UTC (CEST) and
    # 01:30 UTC (CET). Debian's rule: a fixed time in the repeated hour runs once, the first.
    job = '  nightly:\n    cron: "30 2 * * *"\n    timezone: Europe/Berlin\n    task: t.n\n'
    beat = Beat(schedule(job), utc(2026, 10, 24, 22))
    bound(beat)
    await beat.start()
    await beat.run_until(utc(2026, 10, 25, 1))  # inside the repeated hour
    assert beat.scheduler is not None
    await beat.scheduler.reload(schedule(job), beat.clock())
    await beat.run_until(utc(2026, 10, 26, 3))
    assert beat.published() == ["nightly@20261025T003000Z", "nightly@20261026T013000Z"]


@driven
async def test_a_run_lost_with_the_connection_is_published_again_under_the_same_id() -> None:
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=1))
    bound(beat)
    scheduler = await beat.start()
    beat.broker.faults.append(LOSE)
    await beat.step(T0)
    assert beat.published() == [], "lost, not confirmed"
    assert beat.store.rows["tick"].last_slot is None, "the state never runs ahead of confirms"
    await quiet()  # the link reconnects
    await beat.run_until(T0 + timedelta(seconds=30))
    assert beat.published() == ["tick@20261121T053000Z"]
    assert scheduler.states["tick"].last_slot == T0


@driven
async def test_a_nacked_run_is_retried_with_backoff_then_confirmed() -> None:
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=1))
    bound(beat)
    scheduler = await beat.start()
    beat.broker.faults.extend([NACK, NACK])
    await beat.step(T0)
    await beat.step(T0 + timedelta(seconds=1))  # first retry after 1 s: nacked again
    await beat.step(T0 + timedelta(seconds=2))  # backoff doubled: not yet
    assert beat.published() == []
    await beat.step(T0 + timedelta(seconds=3))
    assert beat.published() == ["tick@20261121T053000Z"]
    assert scheduler.counters.published == 1


@driven
async def test_an_unroutable_run_is_confirmed_and_counted_as_unroutable() -> None:
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=1))
    scheduler = await beat.start()
    await beat.run_until(T0 + timedelta(seconds=1))
    assert beat.published() == ["tick@20261121T053000Z"]
    assert (scheduler.counters.unroutable, scheduler.states["tick"].unroutable) == (1, 1)


@pytest.mark.parametrize(
    ("misfire", "expected"),
    [
        ("skip", ["tick@20261121T053500Z"]),
        ("once", ["tick@20261121T053500Z"]),
        ("all", [f"tick@20261121T053{m}00Z" for m in range(1, 6)]),
    ],
)
@driven
async def test_slots_missed_while_the_broker_was_away_follow_the_misfire_policy(
    misfire: str, expected: list[str]
) -> None:
    job = EVERY_MINUTE + f"    misfire: {misfire}\n"
    beat = Beat(schedule(job), T0 + timedelta(seconds=1))
    bound(beat)
    await beat.start()
    beat.broker.stop()
    await beat.run_until(T0 + timedelta(minutes=5, seconds=1))  # 05:31 .. 05:35 come due
    assert beat.published() == []
    beat.broker.start()
    await quiet()
    await beat.run_until(T0 + timedelta(minutes=5, seconds=2))
    assert beat.published() == expected


@driven
async def test_a_restart_publishes_nothing_twice_and_misses_nothing_within_grace() -> None:
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=1))
    bound(beat)
    await beat.start()
    await beat.run_until(T0 + timedelta(minutes=2, seconds=1))
    await beat.crash()
    await beat.start()
    await beat.run_until(T0 + timedelta(minutes=4, seconds=1))
    ids = beat.published()
    assert ids == [f"tick@20261121T053{m}00Z" for m in range(5)]


@driven
async def test_the_in_memory_broker_reports_each_outcome_like_rabbitmq() -> None:
    beat = Beat(schedule(EVERY_MINUTE), T0)
    bound(beat, "t.*")
    scheduler = await beat.start()
    channel = scheduler.link.channel_now()
    assert channel is not None
    beat.broker.faults.extend([NACK])
    from beatd.core.messages import Properties

    props = Properties(message_id="m")
    assert await channel.send("beatd", "t.x", b"{}", props) is Outcome.NACKED
    assert await channel.send("beatd", "t.x", b"{}", props) is Outcome.CONFIRMED
    assert await channel.send("beatd", "u.x", b"{}", props) is Outcome.UNROUTABLE
    assert await channel.send("nowhere", "t.x", b"{}", props) is Outcome.LOST
    assert not channel.is_open, "a 404 closes the channel (the link opens another)"


@driven
async def test_a_broken_edit_saved_inside_the_drafting_window_keeps_the_drafted_burst(
    tmp_path: Path,
) -> None:
    # Issue 9, item 1: the burst was drafted (its jobs taken off the timetable), the reload
    # failed, and nothing put the jobs back: `every: 1s` was never published again.
    path = tmp_path / "beatd.yaml"
    path.write_text("broker:\n  exchange: beatd\njobs:\n" + EVERY_SECOND)
    beat = Beat(schedule(EVERY_SECOND), T0 - timedelta(seconds=0.3))
    bound(beat)
    scheduler = await beat.start()
    scheduler.prepare(beat.clock())  # 0.3 s before 05:30:00: drafted
    daemon = SchedulerDaemon(
        str(path), {}, connect=beat.broker.connect, clock=beat.clock, watch_file=False
    )
    path.write_text("jobs:\n  tick: [every: 1s\n")
    await daemon.reload(scheduler)
    await beat.run_until(T0 + timedelta(seconds=2))
    assert beat.published() == [f"tick@20261121T05300{s}Z" for s in range(3)]


@driven
async def test_a_wall_clock_stepped_back_resets_the_cursors_instead_of_stalling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 9, item 13: stepping the clock back 1 h stalled every job for that hour.
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=1))
    bound(beat)
    await beat.start()
    await beat.run_until(T0 + timedelta(minutes=2, seconds=1))
    beat.clock.now -= timedelta(hours=1)
    await beat.run_until(beat.clock() + timedelta(minutes=2))
    assert beat.published()[-2:] == ["tick@20261121T043300Z", "tick@20261121T043400Z"]
    assert "the wall clock is 3599s behind where 1 job(s) got to" in caplog.text


@driven
async def test_a_job_removed_and_restored_keeps_its_counters_and_misses_nothing_meanwhile() -> None:
    # Issue 11: removing a job in one save and restoring it in the next wiped LAST and counters.
    beat = Beat(schedule(EVERY_MINUTE), T0 - timedelta(seconds=1))
    bound(beat)
    scheduler = await beat.start()
    await beat.run_until(T0 + timedelta(minutes=2, seconds=1))
    assert scheduler.states["tick"].published == 3
    other = "  other:\n    every: 1h\n    task: t.o\n"
    await scheduler.reload(schedule(other), beat.clock())
    await beat.run_until(T0 + timedelta(minutes=10, seconds=1))
    await scheduler.reload(schedule(EVERY_MINUTE + other), beat.clock())
    await beat.run_until(T0 + timedelta(minutes=11, seconds=1))
    state = scheduler.states["tick"]
    assert (state.published, state.last_slot) == (4, T0 + timedelta(minutes=11))
    assert state.missed == 0, "the time it was gone is not missed runs"
    assert [i for i in beat.published() if i.startswith("tick@")][-1] == "tick@20261121T054100Z"


@driven
async def test_a_burst_that_was_slow_to_draft_is_drafted_that_much_earlier_next_time() -> None:
    # Drafting overran the slot on a busy machine: the whole burst left that late. The next
    # burst of the same size is drafted twice as long ahead as drafting took.
    jobs = "".join(f"  j{i}:\n    every: 1m\n    task: t.j\n" for i in range(100))
    beat = Beat(schedule(jobs), T0 - timedelta(seconds=30))
    bound(beat)
    scheduler = await beat.start()
    first_wake = scheduler.next_wake()
    assert first_wake is not None and first_wake <= T0 - timedelta(seconds=0.5)
    beat.clock.now = T0 - timedelta(seconds=0.5)
    real_clock = beat.clock
    calls = iter([T0 + timedelta(seconds=0.5)])  # the clock read once drafting is done
    scheduler.clock = lambda: next(calls, real_clock())
    scheduler.prepare(T0 - timedelta(seconds=0.5))
    scheduler.clock = real_clock
    assert scheduler._prepared is not None and len(scheduler._prepared.drafts) == 100
    await beat.step(T0 + timedelta(seconds=0.5))
    assert len(beat.published()) == 100
    # 1 s for 100 runs: the next burst of 100 is drafted 0.5 s + 2 x 1 s before its slot.
    assert scheduler.next_wake() == T0 + timedelta(minutes=1) - timedelta(seconds=2.5)
