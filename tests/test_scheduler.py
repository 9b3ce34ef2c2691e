"""`beatd run` in-process against the real RabbitMQ, with an injected clock: message format,
misfire policies, unroutable runs, channel errors, reloads, heartbeats while asleep."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd.runtime.state import read_states
from beatd.runtime.systemd import Notifier
from beatd.scheduler.daemon import SchedulerDaemon
from tests.clock import FakeClock, utc
from tests.rabbit import Rabbit, TcpProxy, async_wait_until

T0 = utc(2026, 11, 21, 5, 30)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config(tmp_path: Path, rabbit: Rabbit, jobs: str, *, broker: str = "") -> Path:
    rabbit.exchanges.append(rabbit.name("x"))  # the scheduler declares it; delete it after
    text = (
        f"broker:\n  exchange: {rabbit.name('x')}\n{broker}"
        f"state: {tmp_path / 'state.db'}\njobs:\n{jobs}"
    )
    return write(tmp_path / "beatd.yaml", text)


async def running(
    path: Path,
    clock: FakeClock,
    body: Callable[[SchedulerDaemon], Awaitable[None]],
    *,
    watch: bool = False,
    up: bool = True,
) -> int:
    scheduler = SchedulerDaemon(str(path), {}, clock=clock, notifier=Notifier({}), watch_file=watch)
    task = asyncio.create_task(scheduler.run())
    try:
        if up:
            await async_wait_until(
                lambda: scheduler.scheduler is not None and scheduler.scheduler.link.state == "up"
            )
        await body(scheduler)
    finally:
        scheduler.request_stop()
    return await asyncio.wait_for(task, 30)


async def advance(scheduler: SchedulerDaemon, clock: FakeClock, **delta: float) -> None:
    clock.advance(**delta)
    scheduler.wake()
    await asyncio.sleep(0)


def messages(rabbit: Rabbit, queue: str, count: int) -> Awaitable[list[Any]]:
    return asyncio.to_thread(rabbit.wait_for, queue, count)


def test_a_due_run_is_published_with_the_documented_properties_and_body(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    jobs = """  cleanup-sessions:
    every: 15m
    task: sessions.cleanup
    args: [30]
    kwargs: {dry_run: false}
    priority: 5
    expires: 10m
"""
    path = config(tmp_path, rabbit, jobs)
    queue = rabbit.queue(rabbit.name("x"), "sessions.#")
    clock = FakeClock(T0 - timedelta(seconds=1))
    got: list[Any] = []

    async def body(s: SchedulerDaemon) -> None:
        await advance(s, clock, seconds=1)
        got.extend(await messages(rabbit, queue, 1))

    assert asyncio.run(running(path, clock, body)) == 0
    [m] = got
    assert m.routing_key == "sessions.cleanup"
    assert m.json == {
        "v": 1,
        "id": "cleanup-sessions@20261121T053000Z",
        "job": "cleanup-sessions",
        "task": "sessions.cleanup",
        "args": [30],
        "kwargs": {"dry_run": False},
        "scheduled_at": "2026-11-21T05:30:00Z",
        "published_at": "2026-11-21T05:30:00.000Z",
        "expires_at": "2026-11-21T05:40:00Z",
        "trigger": "schedule",
    }
    p = m.properties
    assert (p.content_type, p.delivery_mode, p.app_id, p.type) == (
        "application/json",
        2,
        "beatd",
        "sessions.cleanup",
    )
    assert (p.message_id, p.priority, p.expiration) == (
        "cleanup-sessions@20261121T053000Z",
        5,
        "600000",
    )
    assert p.timestamp == int(T0.timestamp())
    assert p.headers == {
        "beatd-job": "cleanup-sessions",
        "beatd-scheduled-at": "2026-11-21T05:30:00Z",
        "beatd-format": 1,
    }
    assert read_states(tmp_path / "state.db")["cleanup-sessions"].last_slot == T0


def test_the_next_slot_after_a_publish_is_the_following_one_and_nothing_early(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    path = config(tmp_path, rabbit, "  tick:\n    every: 1m\n    task: t.tick\n")
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    ids: list[str] = []

    async def body(s: SchedulerDaemon) -> None:
        for _ in range(3):
            await advance(s, clock, minutes=1)
            ids.extend(m.properties.message_id for m in await messages(rabbit, queue, 1))
        await advance(s, clock, seconds=0.9)  # 05:32:59.9: 05:33 is not due yet
        await asyncio.sleep(0.3)
        assert rabbit.drain(queue) == []

    asyncio.run(running(path, clock, body))
    assert ids == ["tick@20261121T053000Z", "tick@20261121T053100Z", "tick@20261121T053200Z"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("once", [("job@20261121T054000Z", "catchup")]),
        ("skip", []),
        (
            "all",
            [
                ("job@20261121T053000Z", "catchup"),
                ("job@20261121T053500Z", "catchup"),
                ("job@20261121T054000Z", "catchup"),
            ],
        ),
    ],
)
def test_slots_missed_while_the_scheduler_was_down_follow_the_misfire_policy(
    tmp_path: Path, rabbit: Rabbit, policy: str, expected: list[tuple[str, str]]
) -> None:
    jobs = f"  job:\n    every: 5m\n    task: t.job\n    misfire: {policy}\n    grace: 60s\n"
    path = config(tmp_path, rabbit, jobs)
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))

    async def first_life(s: SchedulerDaemon) -> None:
        await asyncio.sleep(0.1)

    asyncio.run(running(path, clock, first_life))
    clock.advance(minutes=12)  # down from 05:29:59 to 05:41:59: 05:30, 05:35, 05:40 missed
    got: list[tuple[str, str]] = []

    async def second_life(s: SchedulerDaemon) -> None:
        if expected:
            found = await messages(rabbit, queue, len(expected))
            got.extend((m.properties.message_id, m.json["trigger"]) for m in found)
        await asyncio.sleep(0.3)
        got.extend((m.properties.message_id, m.json["trigger"]) for m in rabbit.drain(queue))
        await advance(s, clock, minutes=3, seconds=1)  # 05:45 is on time again
        got.extend(
            (m.properties.message_id, m.json["trigger"]) for m in await messages(rabbit, queue, 1)
        )

    asyncio.run(running(path, clock, second_life))
    assert got == [*expected, ("job@20261121T054500Z", "schedule")]
    state = read_states(tmp_path / "state.db")["job"]
    assert state.missed == 3 - len(expected)


def test_an_unroutable_run_is_logged_with_its_job_and_counted(
    tmp_path: Path, rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    path = config(tmp_path, rabbit, "  lonely:\n    every: 1m\n    task: nobody.listens\n")
    rabbit.queue(rabbit.name("x"), "other.key")
    clock = FakeClock(T0 - timedelta(seconds=1))

    async def body(s: SchedulerDaemon) -> None:
        await advance(s, clock, seconds=1)
        await async_wait_until(lambda: s.scheduler.counters.unroutable == 1)
        await advance(s, clock, minutes=1)
        await async_wait_until(lambda: s.scheduler.counters.unroutable == 2)

    with caplog.at_level(logging.WARNING, logger="beatd.scheduler"):
        asyncio.run(running(path, clock, body))
    state = read_states(tmp_path / "state.db")["lonely"]
    assert (state.unroutable, state.last_slot) == (2, T0 + timedelta(minutes=1))
    unroutable = [r for r in caplog.records if "unroutable" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in unroutable] == [
        "unroutable lonely@20261121T053000Z",
        "unroutable lonely@20261121T053100Z",
    ], "one line per run"
    assert "nobody.listens" in unroutable[0].getMessage()
    assert [getattr(r, "job", None) for r in unroutable] == ["lonely", "lonely"]


def test_a_run_lost_to_a_channel_the_broker_closed_is_published_again_with_the_same_id(
    tmp_path: Path, rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = rabbit.name("x")
    path = config(tmp_path, rabbit, "  job:\n    every: 1m\n    task: t.job\n")
    queue = rabbit.queue(exchange)
    clock = FakeClock(T0 - timedelta(seconds=1))
    got: list[Any] = []

    async def body(s: SchedulerDaemon) -> None:
        channel = s.scheduler.link.channel_now()
        rabbit.delete_exchange(exchange)  # the next publish gets a 404: channel closed
        await advance(s, clock, seconds=1)
        await async_wait_until(lambda: s.scheduler.link.channel_now() not in (None, channel))
        rabbit.queue(exchange, name=queue)  # rebind: deleting the exchange dropped the binding
        await advance(s, clock, seconds=2)  # past the 1 s retry
        got.extend(await messages(rabbit, queue, 1))

    with caplog.at_level(logging.WARNING):
        asyncio.run(running(path, clock, body))
    assert [m.properties.message_id for m in got] == ["job@20261121T053000Z"]
    assert any("NOT_FOUND" in r.getMessage() for r in caplog.records)


def test_an_exchange_declared_differently_is_reported_and_recovered_from(
    tmp_path: Path, rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    exchange = rabbit.name("x")
    with rabbit.channel() as ch:
        ch.exchange_declare(exchange, "fanout", durable=True)
    rabbit.exchanges.append(exchange)
    path = config(tmp_path, rabbit, "  job:\n    every: 1m\n    task: t.job\n")
    clock = FakeClock(T0 - timedelta(seconds=1))

    async def body(s: SchedulerDaemon) -> None:
        await async_wait_until(
            lambda: s.scheduler is not None and s.scheduler.link.state == "error"
        )
        rabbit.delete_exchange(exchange)
        await async_wait_until(lambda: s.scheduler.link.state == "up", timeout=30)

    with caplog.at_level(logging.ERROR, logger="beatd.broker"):
        asyncio.run(running(path, clock, body, up=False))
    assert any("PRECONDITION_FAILED" in r.getMessage() for r in caplog.records)
    assert rabbit.exchange_exists(exchange)


def test_heartbeats_are_answered_while_the_scheduler_sleeps(tmp_path: Path, rabbit: Rabbit) -> None:
    # heartbeat 1 s: a connection that missed two would be closed by RabbitMQ within ~3 s.
    jobs = "  job:\n    every: 30m\n    task: t.job\n"
    path = config(tmp_path, rabbit, jobs, broker="  heartbeat: 1s\n")
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    states: list[str] = []

    async def body(s: SchedulerDaemon) -> None:
        original = s.scheduler.link.on_state

        def record(state: str) -> None:
            states.append(state)
            original(state)

        s.scheduler.link.on_state = record
        await asyncio.sleep(4)  # asleep: the next slot is an hour away on its clock
        await advance(s, clock, seconds=1)
        assert len(await messages(rabbit, queue, 1)) == 1

    asyncio.run(running(path, clock, body))
    assert "down" not in states


def test_reload_adds_removes_and_reschedules_jobs_without_a_surprise_run(
    tmp_path: Path, rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    first = (
        "  keep:\n    every: 5m\n    task: t.keep\n"
        "  drop:\n    every: 5m\n    task: t.drop\n"
        "  move:\n    every: 5m\n    task: t.move\n"
    )
    second = (
        "  keep:\n    every: 5m\n    task: t.keep\n"
        "  move:\n    cron: '50 5 * * *'\n    task: t.move\n"
        "  new:\n    every: 5m\n    task: t.new\n"
    )
    path = config(tmp_path, rabbit, first)
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    before: list[str] = []
    after: list[str] = []

    async def body(s: SchedulerDaemon) -> None:
        await advance(s, clock, minutes=1)  # 05:30:59: 05:30 is on time for all three
        before.extend(m.properties.message_id for m in await messages(rabbit, queue, 3))
        clock.advance(minutes=10)  # 05:40:59, no wake: 05:35 was missed, 05:40 is on time
        config(tmp_path, rabbit, second)
        os.kill(os.getpid(), signal.SIGHUP)
        await async_wait_until(lambda: "new" in s.scheduler.jobs)
        after.extend(m.properties.message_id for m in await messages(rabbit, queue, 1))
        await asyncio.sleep(0.3)
        after.extend(m.properties.message_id for m in rabbit.drain(queue))

    with caplog.at_level(logging.INFO, logger="beatd.scheduler"):
        asyncio.run(running(path, clock, body))
    assert sorted(before) == [
        "drop@20261121T053000Z",
        "keep@20261121T053000Z",
        "move@20261121T053000Z",
    ]
    assert after == ["keep@20261121T054000Z"], "a changed or new job has nothing to catch up"
    states = read_states(tmp_path / "state.db")
    assert {name for name, s in states.items() if s.fingerprint} == {"keep", "move", "new"}
    assert states["drop"].fingerprint == "", "set aside, so a restored job keeps its counters"
    assert states["move"].cursor == T0 + timedelta(minutes=10, seconds=59)
    assert any(
        r.getMessage().endswith("3 jobs; added 'new'; removed 'drop'; changed 'move'")
        for r in caplog.records
    )


def test_a_reload_of_a_broken_file_keeps_the_running_schedule(
    tmp_path: Path, rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    path = config(tmp_path, rabbit, "  keep:\n    every: 1m\n    task: t.keep\n")
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))

    async def body(s: SchedulerDaemon) -> None:
        path.write_text(path.read_text() + "  broken:\n    cron: '61 * * * *'\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await async_wait_until(
            lambda: any("reload failed" in r.getMessage() for r in caplog.records)
        )
        await advance(s, clock, seconds=1)
        assert [m.properties.message_id for m in await messages(rabbit, queue, 1)] == [
            "keep@20261121T053000Z"
        ]

    with caplog.at_level(logging.ERROR, logger="beatd.scheduler"):
        asyncio.run(running(path, clock, body))
    assert any("minute 61 out of range 0-59" in r.getMessage() for r in caplog.records)


def test_an_edit_of_the_file_is_picked_up_without_a_signal(tmp_path: Path, rabbit: Rabbit) -> None:
    path = config(tmp_path, rabbit, "  a:\n    every: 1m\n    task: t.a\n")
    clock = FakeClock(T0 - timedelta(seconds=1))

    async def body(s: SchedulerDaemon) -> None:
        replacement = tmp_path / "beatd.yaml.new"
        replacement.write_text(path.read_text() + "  b:\n    every: 1m\n    task: t.b\n")
        replacement.replace(path)  # how editors and config managers save
        await async_wait_until(lambda: "b" in s.scheduler.jobs, timeout=2.5)

    asyncio.run(running(path, clock, body, watch=True))


def test_the_scheduler_does_not_start_from_an_invalid_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "bad.yaml", "jobs:\n  a:\n    every: 0s\n    task: t.a\n")
    clock = FakeClock(T0)
    with caplog.at_level(logging.ERROR):
        code = asyncio.run(running(path, clock, lambda s: asyncio.sleep(0), up=False))
    assert code == 78
    assert any("every: '0s' must be positive" in r.getMessage() for r in caplog.records)


def test_a_burst_drafted_before_its_slot_waits_for_it_and_a_reload_redrafts_it(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    path = config(tmp_path, rabbit, "  a:\n    every: 1m\n    task: t.a\n    args: [1]\n")
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(milliseconds=200))  # within PREPARE_AHEAD_S of 05:30
    got: list[Any] = []

    async def body(s: SchedulerDaemon) -> None:
        await async_wait_until(lambda: s.scheduler._prepared is not None)
        await asyncio.sleep(0.3)
        assert rabbit.drain(queue) == [], "drafted, not sent: the slot has not come"
        config(tmp_path, rabbit, "  a:\n    every: 1m\n    task: t.a\n    args: [2]\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await async_wait_until(lambda: s.scheduler.jobs["a"].args == (2,))
        await advance(s, clock, seconds=0.2)
        got.extend(await messages(rabbit, queue, 1))

    asyncio.run(running(path, clock, body))
    assert [(m.properties.message_id, m.json["args"]) for m in got] == [("a@20261121T053000Z", [2])]
    assert got[0].json["published_at"] == "2026-11-21T05:30:00.000Z", "stamped when sent"


def test_a_drafted_burst_is_kept_for_later_when_the_broker_is_gone_at_its_slot(
    tmp_path: Path, rabbit: Rabbit, proxy: TcpProxy
) -> None:
    path = config(tmp_path, rabbit, "  a:\n    every: 1m\n    task: t.a\n")
    path.write_text(path.read_text().replace("broker:\n", f"broker:\n  url: {proxy.url}\n"))
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(milliseconds=200))

    async def body(s: SchedulerDaemon) -> None:
        await async_wait_until(lambda: s.scheduler._prepared is not None)
        proxy.cut()
        await async_wait_until(lambda: s.scheduler.link.state == "down")
        await advance(s, clock, seconds=0.2)  # due, nowhere to send it
        await asyncio.sleep(0.3)
        proxy.restore()
        [m] = await messages(rabbit, queue, 1)
        assert m.properties.message_id == "a@20261121T053000Z"

    asyncio.run(running(path, clock, body))
