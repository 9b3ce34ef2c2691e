"""`beatd run`: the scheduler as a process. Loads the file, opens the state store and the
broker link, then loops: step the Scheduler at the wall clock's now, sleep until its next
wake-up (or a signal, an edit of the file, a reconnect). Signal handlers only set flags."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beatd.core.config import Config, read_config
from beatd.core.errors import BeatdError, ConfigError
from beatd.core.messages import iso_utc
from beatd.core.ports import Clock, Connector
from beatd.runtime import collector, control, pauses
from beatd.runtime.clock import system_clock
from beatd.runtime.lifecycle import EXIT_OK, Lifecycle, cannot_start, reload_failed
from beatd.runtime.rabbitmq import Link
from beatd.runtime.state import State
from beatd.runtime.systemd import Notifier
from beatd.scheduler import codecs, report
from beatd.scheduler.changes import Changes, compare
from beatd.scheduler.history import HistorySink
from beatd.scheduler.remote import RemoteControl
from beatd.scheduler.report import Sink
from beatd.scheduler.scheduler import Scheduler

if TYPE_CHECKING:  # imported with a metrics: section only (prometheus-client: 40 ms)
    from beatd.runtime.metrics import SchedulerMetrics

log = logging.getLogger("beatd.scheduler")

MAX_SLEEP_S = 60.0  # re-read the wall clock at least this often, so a clock step is noticed
# A read in a thread shares the interpreter with the loop: a burst published meanwhile takes
# twice as long (a 10k burst during a 100k-job read: seconds). A reload therefore waits for
# the gap after a burst of this many runs or more due before the read would end...
READ_AROUND_RUNS = 1000
READ_S_PER_JOB_FIRST = 100e-6  # (the read's length: the last read's; the first, guessed)
MAX_READ_WAIT_S = 60.0  # ...but for no longer than this; then it reads all the same
# ...and begins this long after the burst's confirms: the broker is still delivering its tail,
# which a read begun at once made 100-250 ms later (burst_bench reload, 2 cores).
READ_AFTER_BURST_S = 1.0
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
        self._file_digest = ""  # of the file the running schedule came from
        self.metrics: SchedulerMetrics | None = None  # with a metrics: section
        self._reading: asyncio.Task[Reading] | None = None  # a reload's read, in a thread
        self._asked_at = clock()  # when the reload being read was asked for
        self._waiting_since: datetime | None = None  # a reload asked for, not read yet
        self._told_waiting = False  # that it waits for the gap after a burst (see above)
        self._read_s: float | None = None  # how long the last read took
        self._burst_at: datetime | None = None  # when the last burst's step ended
        self.remote: RemoteControl | None = None  # answers beatd status through the broker

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
                metrics = _metrics(self.clock) if config.metrics else None
                sinks: list[Sink] = [metrics] if metrics else []
                if config.history is not None:
                    sinks.append(HistorySink(config.history, lambda: scheduler.link))
                store = State(config.state)
                scheduler = Scheduler(
                    config,
                    store,
                    self.connect,
                    clock=self.clock,
                    on_change=self._on_change,
                    sinks=sinks,
                    paused=pauses.read_pauses(config.state),
                )
            if metrics is not None and config.metrics is not None:
                metrics.watch(
                    lambda: scheduler.link.state == "up",
                    lambda: sum(1 for job in scheduler.jobs.values() if job.enabled),
                )
                metrics.serve(config.metrics)
        except BeatdError as exc:
            return cannot_start(log, self.path, exc)
        self.scheduler, self.metrics = scheduler, metrics
        server = control.ControlServer(config.state, self._control)
        self.remote = remote = RemoteControl(scheduler, self._control, clock=self.clock)
        self._file_digest = _digest(self.path)
        with self.lifecycle:
            scheduler.start()
            remote.start()
            await server.start()
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
                await remote.close()
                await server.stop()
                await scheduler.close()
                if metrics is not None:
                    metrics.close()
                log.info("stopped; %s", scheduler.summary())
        return EXIT_OK

    def _control(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer `beatd status`, `pause` and `resume`, from the local socket or the broker
        (on the event loop, so a pause takes effect before the next step). Every answer says
        which instance gave it: with `ha:` several do."""
        scheduler = self.scheduler
        assert scheduler is not None
        who = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "leading": scheduler.leadership.leading,
        }
        return {**who, **self._answer(scheduler, request)}

    def _answer(self, scheduler: Scheduler, request: Mapping[str, Any]) -> dict[str, Any]:
        command, job = request.get("command"), request.get("job")
        if command == "status":
            return {
                "running": True,
                "file": self.path,
                "file_differs": _digest(self.path) != self._file_digest,
                "state": str(scheduler.config.state),
                **scheduler.snapshot(),
            }
        if command not in ("pause", "resume"):
            return {"error": f"unknown command {command!r}"}
        if not isinstance(job, str) or job not in scheduler.jobs:
            return {"error": f"no job named {job!r} in the running schedule"}
        if command == "pause":
            note = str(request.get("note") or "")[:500]
            scheduler.pause(job, note)
            log.info("job %r paused: %s", job, note or "(no note)")
        else:
            scheduler.resume(job)
            log.info("job %r resumed", job)
        try:
            pauses.write_pauses(scheduler.config.state, scheduler.paused)
        except BeatdError as exc:
            log.error("%s", exc)
            return {"ok": True, "warning": f"{exc} (it holds until the scheduler restarts)"}
        self.lifecycle.wake.set()
        return {"ok": True}

    def _on_change(self) -> None:
        if self.scheduler is not None:
            self.notifier.send(STATUS=self.scheduler.status())
        if self.remote is not None:
            self.remote.wake()  # a new connection needs its control queue
        self.lifecycle.wake.set()

    async def _loop(self, scheduler: Scheduler) -> None:
        life = self.lifecycle
        try:
            while not life.stops:
                await self._reload_step(scheduler)
                published = scheduler.counters.published
                await self._step(scheduler)
                if scheduler.counters.published - published >= READ_AROUND_RUNS:
                    self._burst_at = self.clock()
                if self._waiting_since is not None:  # for the burst just published, maybe
                    await self._reload_step(scheduler)
                self.notifier.send(STATUS=scheduler.status())
                if life.stops:
                    break
                scheduler.prepare(self.clock())
                timeout = MAX_SLEEP_S
                wake_at = scheduler.next_wake()
                if self._waiting_since is not None and self._burst_at is not None:
                    after_burst = self._burst_at + timedelta(seconds=READ_AFTER_BURST_S)
                    wake_at = after_burst if wake_at is None else min(wake_at, after_burst)
                if wake_at is not None:
                    timeout = min(timeout, (wake_at - self.clock()).total_seconds())
                await life.sleep(timeout)
        finally:
            if self._reading is not None:  # stopping mid-read: the thread ends on its own
                self._reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConfigError):
                    await self._reading

    async def _reload_step(self, scheduler: Scheduler) -> None:
        """Start reading the file in a thread when a reload is asked for, and adopt what was
        read once it is done; meanwhile the loop goes on stepping (a 100k-job file takes
        seconds to parse, and a burst due meanwhile must not wait for it). Slots already due
        (or being drafted) when the reload was asked for wait for it, so they go by the new
        file. A reload asked for during a read is taken after it: the file is read again."""
        if self._reading is not None and not self._reading.done():
            wake = scheduler.next_wake()
            if wake is not None and wake <= self._asked_at:
                await asyncio.wait([self._reading])
        if self._reading is not None and self._reading.done():
            reading, self._reading = self._reading, None
            read = self._read_outcome(reading, scheduler)
            if read is not None:
                await self._adopt(scheduler, read)
        if self._reading is None and self._waiting_since is None and self.lifecycle.take_reload():
            self.notifier.reloading()
            self._waiting_since = self.clock()
        if self._reading is None and self._waiting_since is not None:
            asked_at = self._waiting_since
            if self._wait_for_a_gap(scheduler, asked_at):
                return
            self._waiting_since, self._told_waiting = None, False
            self._asked_at = asked_at
            self._reading = asyncio.create_task(self._read(scheduler))
            self._reading.add_done_callback(lambda _: self.lifecycle.wake.set())
            await self._reload_step(scheduler)  # what is due already waits for the file

    def _wait_for_a_gap(self, scheduler: Scheduler, asked_at: datetime) -> bool:
        """Whether a reload asked for at asked_at should wait: a burst of READ_AROUND_RUNS
        or more, due after asked_at, is still to be published before the read would end (it
        goes by the running schedule, as it would have during the read; a slot due already
        when the reload was asked for waits for the file, as ever), and the reload has not
        waited MAX_READ_WAIT_S yet; or such a burst ended less than READ_AFTER_BURST_S ago.
        The loop wakes for the burst and after it; the read starts then."""
        now = self.clock()
        read_s = self._read_s
        if read_s is None:
            read_s = READ_S_PER_JOB_FIRST * len(scheduler.jobs)
        runs, at = scheduler.biggest_burst(asked_at, now + timedelta(seconds=1.5 * read_s + 1))
        waited_s = (now - asked_at).total_seconds()
        burst_at = self._burst_at
        tail = burst_at is not None and 0 <= (now - burst_at).total_seconds() < READ_AFTER_BURST_S
        if runs < READ_AROUND_RUNS:
            return tail  # waits quietly: a second at most
        if not 0 <= waited_s < MAX_READ_WAIT_S:
            log.warning("reload: reading the file now, beside a burst of %d runs", runs)
            return False
        if not self._told_waiting:
            self._told_waiting = True
            log.info(
                "reload: reading the file after the burst of %d runs due at %s",
                runs,
                iso_utc(at or now),
            )
        return True

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
        reading = asyncio.create_task(self._read(scheduler))
        await asyncio.wait([reading])
        read = self._read_outcome(reading, scheduler)
        if read is not None:
            await self._adopt(scheduler, read)

    async def _read(self, scheduler: Scheduler) -> Reading:
        """Read and validate the file in a thread (pure work: the loop stays free), and
        compare it there with the running jobs, so that the loop only applies what changed.
        The collector is paused meanwhile: its full passes over a growing 100k-job tree hold
        the GIL for 300 ms each, which the loop would wait out. The daemon is the only one to
        pause it, from the loop's thread; garbage of a few seconds waits, bounded by the read."""
        running = scheduler.jobs  # replaced, never changed in place: safe to read from a thread

        def read() -> Reading:
            config = load_schedule(self.path, self.env)
            return Reading(
                config, compare(running, config, self.clock(), slots=True), _digest(self.path)
            )

        started = self.clock()
        try:
            with collector.paused():
                return await asyncio.to_thread(read)
        finally:
            self._read_s = max(0.0, (self.clock() - started).total_seconds())

    def _read_outcome(self, reading: asyncio.Task[Reading], scheduler: Scheduler) -> Reading | None:
        """What was read, or None when it was refused (logged; the schedule runs on)."""
        try:
            return reading.result()
        except ConfigError as exc:
            reload_failed(
                log,
                exc,
                f"reload failed: keeping the running schedule ({len(scheduler.jobs)} jobs)",
            )
            self.notifier.send(READY=1, STATUS=scheduler.status())
            return None

    async def _adopt(self, scheduler: Scheduler, read: Reading) -> None:
        config, changes = read.config, read.changes
        if config.state != scheduler.config.state:
            log.warning(
                "changing the state file needs a restart; keeping %s", scheduler.config.state
            )
            config = replace(config, state=scheduler.config.state)
        if (config.metrics, config.history) != (scheduler.config.metrics, scheduler.config.history):
            log.warning("changes to metrics: and history: take effect when the scheduler restarts")
            config = replace(
                config, metrics=scheduler.config.metrics, history=scheduler.config.history
            )
        if changes.base is not scheduler.jobs:  # adopted since the read began
            changes = compare(scheduler.jobs, config, self.clock())
        await scheduler.reload(config, self.clock(), changes)
        self._file_digest = read.digest
        report.log_reload(
            self.path, len(scheduler.jobs), changes.added, changes.removed, changes.changed
        )
        self.notifier.send(READY=1, STATUS=scheduler.status())


@dataclass(frozen=True)
class Reading:
    """A reload's read: the config, how it differs from the running jobs, the file's hash."""

    config: Config
    changes: Changes
    digest: str


def _metrics(clock: Clock) -> SchedulerMetrics:
    from beatd.runtime.metrics import SchedulerMetrics  # noqa: PLC0415  (see above)

    return SchedulerMetrics(clock)


def run(path: str, env: Mapping[str, str]) -> int:
    """Entry point for `beatd run`."""
    return asyncio.run(SchedulerDaemon(path, env).run())


def _digest(path: str) -> str:
    """The file's content hash, to tell whether the file on disk differs from what runs."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""
