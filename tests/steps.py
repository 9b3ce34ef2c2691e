"""Driving the Scheduler one step at a time over the in-memory broker, with a fake clock:
what the daemon's loop does, without a process, a RabbitMQ or a sleep."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, ParamSpec

from beatd.core.config import Config, parse_config
from beatd.scheduler.scheduler import Scheduler
from tests.clock import FakeClock
from tests.fakebroker import FakeBroker, MemoryStore

P = ParamSpec("P")
MAX_STEPS = 100_000  # a harness loop that does not end is a bug in the scheduler: fail


def schedule(jobs: str, *, extra: str = "") -> Config:
    """A schedule file with these jobs (YAML, indented under `jobs:`) on exchange `beatd`."""
    text = f"broker:\n  exchange: beatd\n{extra}jobs:\n{jobs}"
    return parse_config(text, "test.yaml", {})


async def quiet() -> None:
    """Let the links and consumers run until nothing is left to do right now."""
    for _ in range(20):
        await asyncio.sleep(0)


class Beat:
    """A Scheduler, its broker, store and clock; `run_until` is the daemon's loop."""

    def __init__(self, config: Config, now: datetime, broker: FakeBroker | None = None) -> None:
        self.config = config
        self.clock = FakeClock(now)
        self.broker = broker or FakeBroker()
        self.store = MemoryStore()
        self.scheduler: Scheduler | None = None
        self.step_counts: Counter[str] = Counter()  # runs per job in the busiest step
        self.broker.exchanges.setdefault("beatd", "topic")

    async def start(self) -> Scheduler:
        self.scheduler = Scheduler(self.config, self.store, self.broker.connect, clock=self.clock)
        self.scheduler.start()
        await quiet()
        return self.scheduler

    async def crash(self) -> None:
        """The process dies: nothing more is saved; the store keeps what was saved."""
        assert self.scheduler is not None
        await self.scheduler.link.close()
        self.scheduler = None

    async def step(self, now: datetime | None = None) -> None:
        """One turn of the daemon's loop at now: step, then draft the next burst."""
        assert self.scheduler is not None
        if now is not None:
            self.clock.now = now
        before = len(self.broker.accepted)
        await self.scheduler.step(self.clock())
        this_step = Counter(
            str(m.properties.headers.get("beatd-job")) for m in self.broker.accepted[before:]
        )
        for job, count in this_step.items():
            self.step_counts[job] = max(self.step_counts[job], count)
        await quiet()
        self.scheduler.prepare(self.clock())

    async def run_until(self, end: datetime) -> None:
        """Step at every wake-up the scheduler asks for, up to end; the clock ends at end."""
        assert self.scheduler is not None
        for _ in range(MAX_STEPS):
            await self.step()
            wake = self.scheduler.next_wake()
            if wake is None or wake > end:
                self.clock.now = max(self.clock.now, end)
                return
            self.clock.now = max(self.clock.now, wake)
        raise AssertionError(f"no rest in {MAX_STEPS} steps: the scheduler spins")

    def published(self) -> list[str]:
        """The id of every run the broker accepted, in order."""
        return [m.properties.message_id for m in self.broker.accepted]


def driven(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run
