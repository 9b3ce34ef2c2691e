"""`beatd run`: the scheduler as a process. Loads the file, opens the state store and the
broker link, then loops: step the Scheduler at the wall clock's now, sleep until its next
wake-up (or a signal, an edit of the file, a reconnect). Signal handlers only set flags."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import replace

from beatd.core.config import Config, read_config
from beatd.core.errors import BeatdError, ConfigError
from beatd.core.ports import Clock, Connector
from beatd.runtime import collector
from beatd.runtime.clock import system_clock
from beatd.runtime.lifecycle import EXIT_OK, Lifecycle, cannot_start, reload_failed
from beatd.runtime.rabbitmq import Link
from beatd.runtime.state import State
from beatd.runtime.systemd import Notifier
from beatd.scheduler import codecs
from beatd.scheduler.scheduler import Scheduler

log = logging.getLogger("beatd.scheduler")

MAX_SLEEP_S = 60.0  # re-read the wall clock at least this often, so a clock step is noticed
SHUTDOWN_GRACE_S = 10.0  # how long SIGTERM waits for confirms of the batch in flight


def load_schedule(path: str, env: Mapping[str, str]) -> Config:
    """Read and validate a schedule file, including what only its codecs can check."""
    config = read_config(path, env)
    problems = codecs.check(config, path)
    if problems:
        raise ConfigError(problems)
    return config


class SchedulerDaemon:
    def __init__(
        self,
        path: str,
        env: Mapping[str, str],
        *,
        connect: Connector = Link,
        clock: Clock = system_clock,
        notifier: Notifier | None = None,
        watch_file: bool = True,
    ) -> None:
        self.path = path
        self.env = env
        self.connect = connect
        self.clock = clock
        self.notifier = notifier or Notifier(env)
        self.lifecycle = Lifecycle(path, self.notifier, watch_file=watch_file)
        self.scheduler: Scheduler | None = None  # once the file is loaded

    def request_stop(self) -> None:
        self.lifecycle.request_stop()

    def request_reload(self) -> None:
        self.lifecycle.request_reload()

    def wake(self) -> None:
        """Re-read the clock and publish whatever is due (tests with a fake clock use this)."""
        self.lifecycle.wake.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit code."""
        try:
            with collector.paused():  # start-up: no other thread runs yet
                config = load_schedule(self.path, self.env)
                store = State(config.state)
                scheduler = Scheduler(
                    config, store, self.connect, clock=self.clock, on_change=self._on_change
                )
        except BeatdError as exc:
            return cannot_start(log, self.path, exc)
        collector.settle()
        self.scheduler = scheduler
        with self.lifecycle:
            scheduler.start()
            log.info(
                "scheduling %d jobs from %s (state: %s)",
                len(scheduler.jobs),
                self.path,
                config.state,
            )
            self.notifier.send(READY=1, STATUS=scheduler.status())
            try:
                await self._loop(scheduler)
            finally:
                self.notifier.send(STOPPING=1)
                await scheduler.close()
                log.info("stopped; %s", scheduler.summary())
        return EXIT_OK

    def _on_change(self) -> None:
        if self.scheduler is not None:
            self.notifier.send(STATUS=self.scheduler.status())
        self.lifecycle.wake.set()

    async def _loop(self, scheduler: Scheduler) -> None:
        life = self.lifecycle
        while not life.stops:
            if life.take_reload():
                await self.reload(scheduler)
            await self._step(scheduler)
            self.notifier.send(STATUS=scheduler.status())
            if life.stops:
                break
            scheduler.prepare(self.clock())
            timeout = MAX_SLEEP_S
            wake_at = scheduler.next_wake()
            if wake_at is not None:
                timeout = min(timeout, (wake_at - self.clock()).total_seconds())
            await life.sleep(timeout)

    async def _step(self, scheduler: Scheduler) -> None:
        """One step; if SIGTERM comes meanwhile, give the batch in flight a few seconds to be
        confirmed, then abandon it (unrecorded slots are published again after a restart)."""
        task = asyncio.create_task(scheduler.step(self.clock()))
        stopping = asyncio.create_task(self.lifecycle.stopping.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                done, _ = await asyncio.wait([task], timeout=SHUTDOWN_GRACE_S)
                if not done:
                    log.warning("stopping without confirms for the batch in flight")
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return
        finally:
            stopping.cancel()
        task.result()

    async def reload(self, scheduler: Scheduler) -> None:
        """Read the file again and adopt it, or keep the running schedule and say why."""
        self.notifier.reloading()
        try:
            config = load_schedule(self.path, self.env)
        except ConfigError as exc:
            reload_failed(
                log,
                exc,
                f"reload failed: keeping the running schedule ({len(scheduler.jobs)} jobs)",
            )
            self.notifier.send(READY=1, STATUS=scheduler.status())
            return
        before = {name: job.fingerprint for name, job in scheduler.jobs.items()}
        if config.state != scheduler.config.state:
            log.warning(
                "changing the state file needs a restart; keeping %s", scheduler.config.state
            )
            config = replace(config, state=scheduler.config.state)
        await scheduler.reload(config, self.clock())
        added = [name for name in scheduler.jobs if name not in before]
        removed = [name for name in before if name not in scheduler.jobs]
        changed = [
            n for n, j in scheduler.jobs.items() if n in before and before[n] != j.fingerprint
        ]
        log.info(
            "reloaded %s: %d jobs (%d added, %d removed, %d rescheduled)",
            self.path,
            len(scheduler.jobs),
            len(added),
            len(removed),
            len(changed),
        )
        self.notifier.send(READY=1, STATUS=scheduler.status())


def run(path: str, env: Mapping[str, str]) -> int:
    """Entry point for `beatd run`."""
    return asyncio.run(SchedulerDaemon(path, env).run())
