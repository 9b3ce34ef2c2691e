"""High availability (`ha:`) step by step over the in-memory broker: election, standbys that
publish nothing, a takeover that resumes from the progress on the broker (and follows the
misfire policy past grace exactly as a restart does), and fencing of a paused leader."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

import pytest

from beatd.core import progress
from beatd.core.config import Config, HaConfig
from beatd.core.errors import ConfigError
from beatd.core.jobstate import JobState
from beatd.scheduler.scheduler import Scheduler
from tests.clock import utc
from tests.fakebroker import FakeBroker
from tests.steps import Beat, driven, quiet, schedule

T0 = utc(2026, 11, 21, 5, 30)
HA = "ha:\n  poll: 60s\n"  # the tests elect by hand: the background loop tries once
TICK = "  tick:\n    every: 1s\n    task: t.tick\n"


def slot(seconds: int) -> str:
    return f"tick@{(T0 + timedelta(seconds=seconds)).strftime('%Y%m%dT%H%M%SZ')}"


def runs(broker: FakeBroker) -> list[str]:
    """The ids of the runs the broker accepted (not the progress snapshots), in order."""
    return [m.properties.message_id for m in broker.accepted if m.exchange == "beatd"]


async def started(config: Config, broker: FakeBroker) -> Beat:
    """An instance, connected: the first one gets the token, so the lock, and leads."""
    beat = Beat(config, T0, broker)
    await beat.start()
    await quiet()
    return beat


def sched(beat: Beat) -> Scheduler:
    assert beat.scheduler is not None
    return beat.scheduler


@driven
async def test_only_the_elected_instance_publishes() -> None:
    broker = FakeBroker()
    config = schedule(TICK, extra=HA)
    a = await started(config, broker)
    b = await started(config, broker)
    assert (sched(a).leadership.role, sched(b).leadership.role) == ("leader", "standby")
    for beat in (a, b):
        await beat.run_until(T0 + timedelta(seconds=5))
    assert runs(broker) == [slot(s) for s in range(1, 6)]
    assert sched(b).next_wake() is None, "a standby sleeps until the election wakes it"
    assert "ha leader since 2026-11-21T05:30:00Z" in sched(a).status()
    b.clock.now = T0 + timedelta(seconds=70)  # the standby reads who leads now and then
    await sched(b).leadership.elect()
    assert f"ha standby (leader: {sched(a).leadership.me})" in sched(b).status()


@driven
async def test_a_standby_takes_over_from_the_last_slot_the_leader_confirmed() -> None:
    broker = FakeBroker()
    config = schedule(TICK, extra=HA)
    a = await started(config, broker)
    b = await started(config, broker)
    await a.run_until(T0 + timedelta(seconds=5))
    b.clock.now = T0 + timedelta(seconds=5, milliseconds=300)
    await a.crash()  # its connection closes: the broker frees the lock and passes the token
    await quiet()
    assert sched(b).leadership.leading, "the token's new holder took the lock at once"
    await b.run_until(T0 + timedelta(seconds=10))
    assert runs(broker) == [slot(s) for s in range(1, 11)], "each slot once, none lost"
    assert b.store.rows["tick"].last_slot == T0 + timedelta(seconds=10)


MISFIRE_JOBS = "".join(
    f"  {policy}:\n    every: 1m\n    task: t.{policy}\n    misfire: {policy}\n    grace: 10s\n"
    for policy in ("once", "skip", "all")
)


@driven
async def test_a_takeover_after_grace_follows_the_misfire_policy_exactly_as_a_restart() -> None:
    gone = T0 + timedelta(seconds=255)  # 05:34:15: 05:32, 05:33 and 05:34 went past grace
    # One instance that dies and restarts at `gone`, with its own state file...
    single = Beat(schedule(MISFIRE_JOBS), T0)
    await single.start()
    await single.run_until(T0 + timedelta(seconds=60))
    await single.crash()
    single.clock.now = gone
    await single.start()
    await single.run_until(gone)
    # ...and a leader that dies, replaced at `gone` by a standby that never published.
    broker = FakeBroker()
    config = schedule(MISFIRE_JOBS, extra=HA)
    a = await started(config, broker)
    b = await started(config, broker)
    await a.run_until(T0 + timedelta(seconds=60))
    b.clock.now = gone
    await a.crash()
    await quiet()
    await b.run_until(gone)
    assert runs(broker) == single.published()
    assert runs(broker) == [
        "all@20261121T053100Z", "once@20261121T053100Z", "skip@20261121T053100Z",
        "all@20261121T053200Z", "all@20261121T053300Z", "all@20261121T053400Z",
        "once@20261121T053400Z",  # the newest missed slot only; skip: none
    ]  # fmt: skip


@driven
async def test_a_paused_leader_gets_nothing_confirmed_and_becomes_a_standby(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    config = schedule(TICK, extra=HA)
    a = await started(config, broker)
    b = await started(config, broker)
    await a.run_until(T0 + timedelta(seconds=2))
    # SIGSTOP: the broker closes a's connection after missed heartbeats; a has not noticed.
    a_link = sched(a).link
    b.clock.now = T0 + timedelta(seconds=2, milliseconds=500)
    a_link.sever()  # type: ignore[attr-defined]
    await quiet()
    assert sched(b).leadership.leading
    # SIGCONT: a still believes it leads and publishes its due slot on the dead connection.
    with caplog.at_level(logging.WARNING):
        await a.step(T0 + timedelta(seconds=3))
        await b.run_until(T0 + timedelta(seconds=4))
        a_link.drop("missed heartbeats")  # type: ignore[attr-defined]
        await quiet()
    assert runs(broker) == [slot(s) for s in range(1, 5)], "the fenced leader added nothing"
    assert "lost the leadership" in caplog.text
    await sched(a).leadership.elect()
    assert sched(a).leadership.role == "standby"
    await a.run_until(T0 + timedelta(seconds=6))
    assert runs(broker) == [slot(s) for s in range(1, 5)]


@driven
async def test_after_a_broker_restart_exactly_one_instance_leads_and_no_slot_is_lost() -> None:
    broker = FakeBroker()
    config = schedule(TICK, extra=HA)
    beats = [await started(config, broker) for _ in range(3)]
    await beats[0].run_until(T0 + timedelta(seconds=3))
    broker.stop()
    await quiet()
    assert all(sched(beat).leadership.role == "standby" for beat in beats)
    for beat in beats:
        beat.clock.now = T0 + timedelta(seconds=6)
    broker.start()
    await quiet()
    roles = Counter(sched(beat).leadership.role for beat in beats)
    assert roles == {"leader": 1, "standby": 2}
    for beat in beats:
        await beat.run_until(T0 + timedelta(seconds=8))
    counts = Counter(runs(broker))
    assert sorted(counts) == [slot(s) for s in range(1, 9)] and set(counts.values()) == {1}


@driven
async def test_a_token_held_by_a_standby_moves_on_until_the_leader_holds_it() -> None:
    broker = FakeBroker()
    config = schedule(TICK, extra=HA)
    a, b, c = [await started(config, broker) for _ in range(3)]
    token = sched(a).leadership._token
    assert token is not None and sched(a).leadership.leading
    token.ack()  # every token is lost (say, someone purged the queue)
    assert config.ha is not None
    broker.queues[config.ha.token_queue].ready.clear()  # the spare one b put in
    await a.crash()
    await quiet()
    assert not sched(b).leadership.leading and not sched(c).leadership.leading
    await sched(c).leadership.elect()  # what the fallback does every 30 s
    assert sched(c).leadership.leading
    await started(config, broker)  # a new instance finds no token and puts one in
    await quiet()  # b, first in line, gets it, is refused and passes it on, to c
    assert sched(c).leadership._token is not None and sched(b).leadership._token is None
    assert not sched(b).leadership.leading


@driven
async def test_a_standby_with_a_changed_job_says_so_when_it_takes_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    a = await started(schedule(TICK, extra=HA), broker)
    changed = schedule(TICK.replace("1s", "2s"), extra=HA)
    b = await started(changed, broker)
    await a.run_until(T0 + timedelta(seconds=3))
    b.clock.now = T0 + timedelta(seconds=70)  # a standby reads the leader's progress now and
    with caplog.at_level(logging.WARNING):  # then; it had none when b started
        await sched(b).leadership.elect()
    assert "1 job(s) differ from the schedule the leader runs: they would start afresh on" in (
        caplog.text
    )
    with caplog.at_level(logging.WARNING):
        await a.crash()
        await quiet()
    assert (
        "1 job(s) differ from the schedule the previous leader ran: they start afresh ('tick')"
    ) in caplog.text
    assert sched(b).leadership.leading


@driven
async def test_with_ha_off_an_instance_always_leads_and_writes_no_progress() -> None:
    beat = Beat(schedule(TICK), T0)
    scheduler = await beat.start()
    await beat.run_until(T0 + timedelta(seconds=3))
    assert scheduler.leadership.role == "single" and "ha" not in scheduler.status()
    assert runs(beat.broker) == [slot(s) for s in range(1, 4)]
    assert not [q for q in beat.broker.queues if q.startswith("beatd.ha.")]


def test_the_ha_section_is_off_by_default_and_validated() -> None:
    assert schedule(TICK).ha is None
    assert schedule(TICK, extra="ha:\n").ha == HaConfig()
    assert schedule(TICK, extra="ha:\n  enabled: false\n").ha is None
    ha = schedule(TICK, extra="ha:\n  name: prod\n  poll: 500ms\n  queue_type: quorum\n").ha
    assert ha == HaConfig("prod", timedelta(milliseconds=500), "quorum")
    assert ha.lock_queue == "beatd.ha.prod.lock"
    with pytest.raises(ConfigError) as bad:
        schedule(TICK, extra="ha:\n  pol: 1s\n  poll: 10ms\n  queue_type: stream\n")
    text = str(bad.value)
    assert "ha: unknown key 'pol' (did you mean 'poll'?)" in text
    assert "ha: poll: must be between 100ms and 60s, got '10ms'" in text
    assert "ha: queue_type: 'stream' is not one of classic, quorum" in text


def test_a_progress_snapshot_round_trips_and_merges_to_the_further_state() -> None:
    config = schedule(TICK + "  other:\n    every: 1m\n    task: t.o\n")
    tick, other = config.jobs
    theirs = JobState("tick", tick.fingerprint, T0 + timedelta(seconds=9), T0, T0, 9, 1, 0)
    raw = progress.encode("host pid 1", T0, [theirs])
    snapshot = progress.decode(raw)
    assert snapshot.states == {"tick": theirs} and snapshot.leader == "host pid 1"
    mine = {
        "tick": JobState("tick", tick.fingerprint, T0),
        "other": JobState("other", other.fingerprint, T0 + timedelta(minutes=5)),
    }
    merged, differing = progress.merge(mine, snapshot.states, config.jobs)
    assert merged == {"tick": theirs, "other": mine["other"]} and differing == []
    stale = {"tick": JobState("tick", "old-fingerprint", T0 + timedelta(hours=1))}
    merged, differing = progress.merge(mine, stale, config.jobs)
    assert merged["tick"] == mine["tick"] and differing == ["tick"]
    with pytest.raises(ValueError, match="unreadable progress snapshot"):
        progress.decode(b'{"v": 1, "jobs": {"tick": [1]}}')


@driven
async def test_a_reload_keeps_the_ha_section_until_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = FakeBroker()
    a = await started(schedule(TICK, extra=HA), broker)
    with caplog.at_level(logging.WARNING):
        await sched(a).reload(schedule(TICK), T0)
    assert "changes to ha: take effect when the scheduler restarts" in caplog.text
    assert sched(a).config.ha == HaConfig(poll=timedelta(seconds=60))
    assert "ha leader since" in sched(a).status()
