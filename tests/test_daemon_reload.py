"""A reload is read in a thread: the daemon's loop goes on publishing while a big file parses.
Driven over the in-memory broker with a fake clock; the read is held on an Event, not timed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from beatd.core.config import Config
from beatd.scheduler import daemon as daemon_module
from beatd.scheduler.daemon import READ_AFTER_BURST_S, READ_AROUND_RUNS, SchedulerDaemon
from tests.clock import FakeClock, utc
from tests.fakebroker import FakeBroker, Queue
from tests.steps import driven

T0 = utc(2026, 11, 21, 5, 30)
TICK = "  tick:\n    every: 1m\n    task: t.tick\n"
NEW = "  new:\n    every: 1h\n    task: t.new\n"


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):  # bounded: 5 s of real time at most
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


class HeldReads:
    """load_schedule, with every read after the first (start-up) held until released."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.real = daemon_module.load_schedule
        self.broker: FakeBroker | None = None
        self.published_before = 0  # when the last read began

    def __call__(self, path: str, env: Mapping[str, str]) -> Config:
        self.calls += 1
        self.published_before = len(self.broker.accepted) if self.broker else 0
        if self.calls > 1:
            self.reading.set()
            self.release.wait(5)
        return self.real(path, env)


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeBroker, HeldReads]:
    path = tmp_path / "beatd.yaml"
    path.write_text(f"state: {tmp_path / 's.db'}\njobs:\n{TICK}")
    broker = FakeBroker()
    broker.exchanges["beatd"] = "topic"
    broker.queues["q"] = Queue("q", {})
    broker.bindings.add(("beatd", "q", "#"))
    held = HeldReads()
    monkeypatch.setattr(daemon_module, "load_schedule", held)
    return path, broker, held


def published(broker: FakeBroker) -> list[str]:
    return [m.properties.message_id for m in broker.accepted]


async def started(
    path: Path, broker: FakeBroker, clock: FakeClock
) -> tuple[SchedulerDaemon, asyncio.Task[int]]:
    """The daemon of path, running on the fake broker and clock, with its schedule loaded."""
    daemon = SchedulerDaemon(str(path), {}, connect=broker.connect, clock=clock, watch_file=False)
    running = asyncio.create_task(daemon.run())
    await until(lambda: daemon.scheduler is not None, "started")
    return daemon, running


@driven
async def test_a_slot_due_while_a_reload_is_read_is_published_without_waiting_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, broker, held = setup(tmp_path, monkeypatch)
    clock = FakeClock(T0 - timedelta(seconds=30))
    daemon, running = await started(path, broker, clock)
    path.write_text(path.read_text() + NEW)
    daemon.request_reload()
    await asyncio.to_thread(held.reading.wait, 5)
    clock.now = T0 + timedelta(seconds=1)
    daemon.wake()
    await until(lambda: published(broker) == ["tick@20261121T053000Z"], "05:30 published")
    assert daemon.scheduler is not None
    assert "new" not in daemon.scheduler.jobs, "published while the file was still being read"
    held.release.set()
    await until(lambda: "new" in daemon.scheduler.jobs, "the reload adopted")  # type: ignore[union-attr]
    daemon.request_stop()
    assert await running == 0


@driven
async def test_a_slot_already_due_when_the_reload_is_asked_for_goes_by_the_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, broker, held = setup(tmp_path, monkeypatch)
    clock = FakeClock(T0 - timedelta(seconds=30))
    daemon, running = await started(path, broker, clock)
    await asyncio.sleep(0.05)  # the loop is asleep until 05:29:59.5
    clock.now = T0 + timedelta(seconds=1)  # 05:30 is due, and then the file is edited
    path.write_text(f"state: {tmp_path / 's.db'}\njobs:\n{NEW}")  # tick removed
    daemon.request_reload()
    await asyncio.to_thread(held.reading.wait, 5)
    await asyncio.sleep(0.05)
    assert published(broker) == [], "waits for the file that removes it"
    held.release.set()
    await until(lambda: "tick" not in daemon.scheduler.jobs, "the reload adopted")  # type: ignore[union-attr]
    await asyncio.sleep(0.05)
    assert published(broker) == []
    daemon.request_stop()
    assert await running == 0


@driven
async def test_stopping_while_a_reload_is_read_exits_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, broker, held = setup(tmp_path, monkeypatch)
    clock = FakeClock(T0 - timedelta(seconds=30))
    daemon, running = await started(path, broker, clock)
    daemon.request_reload()
    await asyncio.to_thread(held.reading.wait, 5)
    daemon.request_stop()
    held.release.set()
    assert await running == 0


@driven
async def test_a_reload_asked_for_just_before_a_big_burst_is_read_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Read beside the burst, the parse would take half the interpreter from it; read at once
    # after it, the CPU the broker still needs to deliver the burst's tail.
    path, broker, held = setup(tmp_path, monkeypatch)
    held.broker = broker
    many = "".join(f"  j{i}:\n    every: 1m\n    task: t.j\n" for i in range(READ_AROUND_RUNS))
    path.write_text(f"state: {tmp_path / 's.db'}\njobs:\n{many}")
    clock = FakeClock(T0 - timedelta(seconds=0.4))
    daemon, running = await started(path, broker, clock)
    await until(lambda: daemon.scheduler._prepared is not None, "05:30 drafted")  # type: ignore[union-attr]
    path.write_text(path.read_text() + NEW)
    daemon.request_reload()
    await until(lambda: daemon._waiting_since is not None, "the reload asked for")
    await asyncio.sleep(0.05)
    assert not held.reading.is_set(), "the read waits for the burst due at 05:30"
    clock.now = T0 + timedelta(seconds=0.1)
    daemon.wake()
    await until(lambda: len(published(broker)) == READ_AROUND_RUNS, "the burst published")
    await asyncio.sleep(0.05)
    assert not held.reading.is_set(), "the broker is still delivering the burst's tail"
    clock.now += timedelta(seconds=READ_AFTER_BURST_S)
    daemon.wake()
    assert await asyncio.to_thread(held.reading.wait, 5), "read once the burst is out"
    assert held.published_before == READ_AROUND_RUNS, "the read began after the burst"
    held.release.set()
    await until(lambda: "new" in daemon.scheduler.jobs, "the reload adopted")  # type: ignore[union-attr]
    daemon.request_stop()
    assert await running == 0
