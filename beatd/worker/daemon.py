"""`beatd worker` as a process: load the file and its tasks, open the run-id store, consume
until SIGTERM/SIGINT, then drain. Signal handlers and the file watcher only set flags; the
consuming itself is worker.worker."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from beatd.core.config import Config, read_config
from beatd.core.durations import format_duration, parse_duration
from beatd.core.errors import BeatdError, ConfigError, Problem
from beatd.core.ports import Clock, Connector, RunStore
from beatd.runtime.clock import system_clock
from beatd.runtime.lifecycle import (
    EXIT_FAILED,
    EXIT_OK,
    Lifecycle,
    cannot_start,
    reload_failed,
)
from beatd.runtime.metrics import WorkerMetrics
from beatd.runtime.rabbitmq import Link
from beatd.runtime.seen import SeenStore
from beatd.runtime.systemd import Notifier
from beatd.worker import runner
from beatd.worker.worker import Worker

log = logging.getLogger("beatd.worker")

STATUS_EVERY_S = 1.0  # systemd STATUS= at most this often: runs can finish by the thousand
# RabbitMQ's default consumer_timeout: a delivery unacked for longer closes its channel and
# goes back to the queue, to run again on another worker. The broker's setting cannot be read
# over AMQP; BEATD_CONSUMER_TIMEOUT tells the worker what it was raised to.
CONSUMER_TIMEOUT = timedelta(minutes=30)


def run(path: str, env: Mapping[str, str]) -> int:
    """Entry point for `beatd worker`; returns the exit code."""
    try:
        config, tasks = load(path, env)
        store = SeenStore(store_path(config), config.worker.dedupe_size)
    except BeatdError as exc:
        return cannot_start(log, path, exc)
    try:
        return asyncio.run(WorkerDaemon(path, env, config, tasks, store).run())
    finally:
        store.close()


def load(path: str, env: Mapping[str, str]) -> tuple[Config, dict[str, runner.Task]]:
    """Read a worker's file and resolve its tasks; ConfigError names every problem."""
    config = read_config(path, env)
    if not config.tasks:
        raise ConfigError(
            [Problem(path, None, "no tasks: a worker runs only the tasks its file defines")]
        )
    return config, runner.prepare(config.tasks, path, env, os.geteuid())


def observed(worker: Worker, metrics: WorkerMetrics) -> WorkerMetrics:
    """Count the worker's outcomes, durations, runs in flight and broker state into metrics."""
    worker.counts = metrics.tally()
    worker.on_finished = metrics.finished
    metrics.watch(lambda: worker.link.state == "up", lambda: worker.slots.busy)
    return metrics


def store_path(config: Config) -> Path:
    """The run-id store: `worker.state`, else beside the scheduler's state, per queue."""
    if config.worker.state is not None:
        return config.worker.state
    return config.state.parent / f"worker-{config.worker.queue}.db"


class WorkerDaemon:
    def __init__(
        self,
        path: str,
        env: Mapping[str, str],
        config: Config,
        tasks: dict[str, runner.Task],
        store: RunStore,
        *,
        connect: Connector = Link,
        clock: Clock = system_clock,
        notifier: Notifier | None = None,
        watch_file: bool = True,
    ) -> None:
        self.path = path
        self.env = env
        self.notifier = notifier or Notifier(env)
        self.lifecycle = Lifecycle(path, self.notifier, watch_file=watch_file)
        self.lifecycle.on_second_stop = self._force_stop
        self.worker = Worker(
            config,
            tasks,
            store,
            connect,
            env=env,
            clock=clock,
            on_status=self._status_soon,
            on_ready=self._ready,
            on_fatal=self._fail,
        )
        self._status_timer: asyncio.TimerHandle | None = None
        self._exit_code = EXIT_OK
        self.metrics: WorkerMetrics | None = None
        if config.metrics is not None:
            self.metrics = observed(self.worker, WorkerMetrics())

    async def run(self) -> int:
        """Consume until SIGTERM/SIGINT, then drain; return the exit code."""
        worker, life = self.worker, self.lifecycle
        if self.metrics is not None and worker.config.metrics is not None:
            try:
                self.metrics.serve(worker.config.metrics)
            except BeatdError as exc:
                return cannot_start(log, self.path, exc)
        with life:
            worker.start()
            log.info(
                "worker for queue %r: %d tasks from %s, %d at once (run ids: %s)",
                worker.config.worker.queue,
                len(worker.tasks),
                self.path,
                worker.slots.size,
                store_path(worker.config),
            )
            warn_long_tasks(worker.tasks, self.env)
            drain: asyncio.Task[None] | None = None
            try:
                while drain is None or not drain.done():
                    await life.sleep(None)
                    if life.stops and drain is None:
                        drain = asyncio.create_task(self._drain())
                        drain.add_done_callback(lambda _t: life.wake.set())
                    if life.take_reload():
                        self._reload_tasks()
                drain.result()
            finally:
                await worker.close()
                counts = ", ".join(f"{n} {k}" for k, n in sorted(worker.counts.items()))
                dropped = worker.outbox.events_dropped
                events = f"; {dropped} events dropped while the broker was away" if dropped else ""
                log.info("stopped; %s%s", counts or "nothing ran", events)
                if self.metrics is not None:
                    self.metrics.close()
                self.notifier.send(STATUS="stopped")
        return self._exit_code

    def request_stop(self) -> None:
        self.lifecycle.request_stop()

    def _fail(self, error: BeatdError) -> None:
        """Stop (gracefully) with exit code 1, so systemd restarts the worker."""
        log.critical("stopping: %s", error)
        self._exit_code = EXIT_FAILED
        if not self.lifecycle.stops:
            self.lifecycle.request_stop()

    async def _drain(self) -> None:
        self.notifier.send(STOPPING=1)
        log.info("stopping: taking no new runs; waiting for %d running", self.worker.running)
        _left_behind(self.worker)
        await self.worker.drain()

    def _force_stop(self) -> None:
        log.warning("stopping now: interrupting %d run(s), to run again later", self.worker.running)
        self._exit_code = EXIT_FAILED
        self.worker.interrupt()

    def _reload_tasks(self) -> None:
        worker = self.worker
        self.notifier.reloading()
        try:
            config, tasks = load(self.path, self.env)
        except ConfigError as exc:
            reload_failed(
                log,
                exc,
                f"reload failed; still running the {len(worker.tasks)} tasks loaded before",
            )
            self.notifier.send(READY=1, STATUS=self._status())
            return
        if (config.broker, config.worker) != (worker.config.broker, worker.config.worker):
            log.warning("changes to broker: and worker: take effect when the worker restarts")
        added = sorted(tasks.keys() - worker.tasks.keys())
        removed = sorted(worker.tasks.keys() - tasks.keys())
        worker.tasks = tasks
        warn_long_tasks(tasks, self.env)
        log.info(
            "reloaded %s: %d tasks (added: %s; removed: %s)",
            self.path,
            len(tasks),
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )
        self.notifier.send(READY=1, STATUS=self._status())

    # systemd

    def _ready(self) -> None:
        w = self.worker.config.worker
        log.info("consuming %r (bindings: %s)", w.queue, ", ".join(w.bindings))
        self.notifier.send(READY=1, STATUS=self._status())

    def _status(self) -> str:
        worker = self.worker
        c = worker.counts
        return (
            f"broker {worker.link.state}; {worker.slots.busy}/{worker.slots.size} running; "
            f"{c['succeeded']} succeeded, {c['failed'] + c['timed_out']} failed, "
            f"{c['duplicate']} duplicates"
        )

    def _status_soon(self) -> None:
        if self._status_timer is None:
            loop = asyncio.get_running_loop()
            self._status_timer = loop.call_later(STATUS_EVERY_S, self._send_status)

    def _send_status(self) -> None:
        self._status_timer = None
        self.notifier.send(STATUS=self._status())


def _left_behind(worker: Worker) -> None:
    if worker.lingering:
        log.warning(
            "%d call(s) past their timeout, already settled, are left to their threads: "
            "they end with the worker",
            worker.lingering,
        )


def warn_long_tasks(tasks: Mapping[str, runner.Task], env: Mapping[str, str]) -> list[str]:
    """Warn (one line) about tasks whose timeout exceeds the broker's consumer timeout: such a
    run is handed to a second worker while it still runs here (issue 9 item 17)."""
    limit = CONSUMER_TIMEOUT
    if raw := env.get("BEATD_CONSUMER_TIMEOUT"):
        try:
            limit = parse_duration(raw)
        except ValueError as exc:
            log.warning("BEATD_CONSUMER_TIMEOUT ignored (%s); assuming 30m", exc)
    long = sorted(
        name
        for name, task in tasks.items()
        if task.config.timeout is not None and task.config.timeout > limit
    )
    if long:
        log.warning(
            "task(s) %s may run longer than the broker's consumer timeout (%s%s): RabbitMQ would "
            "then hand the run to another worker while it still runs here. Raise it for the "
            "queue (a policy with consumer-timeout, RabbitMQ 3.12+) and set "
            "BEATD_CONSUMER_TIMEOUT, or keep task timeouts below it",
            ", ".join(long),
            format_duration(limit),
            "" if limit is not CONSUMER_TIMEOUT else ", RabbitMQ's default",
        )
    return long
