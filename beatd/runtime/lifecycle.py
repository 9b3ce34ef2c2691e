"""What both daemons share about being a process: exit codes, signal handlers that only set
flags and wake the loop, the file watcher, a sleep bounded by the systemd watchdog, and how a
file that cannot be loaded is reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from beatd.core.errors import BeatdError, ConfigError
from beatd.runtime.systemd import Notifier
from beatd.runtime.watch import FileWatch

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 78


def cannot_start(log: logging.Logger, path: str, error: BeatdError) -> int:
    """Log why a daemon cannot start from its file; return EX_CONFIG for systemd."""
    if isinstance(error, ConfigError):
        for problem in error.problems:
            log.error("%s", problem)
        log.error("cannot start: %s is invalid", path)
    else:
        log.error("cannot start: %s", error)
    return EXIT_CONFIG


def reload_failed(log: logging.Logger, error: ConfigError, outcome: str) -> None:
    """Log every problem of a rejected reload, then what the daemon does instead."""
    for problem in error.problems:
        log.error("%s", problem)
    log.error("%s", outcome)


class Lifecycle:
    """Stop and reload requests (SIGTERM/SIGINT, SIGHUP, an edit of the file) as flags, and
    the loop's wait for them. Use as `with lifecycle:` inside the running event loop."""

    def __init__(self, path: str | Path, notifier: Notifier, *, watch_file: bool = True) -> None:
        self.notifier = notifier
        self.stops = 0  # how many stop requests: a second one means "now"
        self.reload = False
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self._watch = FileWatch(path, self.request_reload) if watch_file else None
        self._signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        self.on_second_stop: Callable[[], None] = lambda: None

    def __enter__(self) -> Lifecycle:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if self._watch is not None:
            self._watch.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._watch is not None:
            self._watch.stop()
        loop = asyncio.get_running_loop()
        for signum in self._signals:
            loop.remove_signal_handler(signum)

    def request_stop(self) -> None:
        self.stops += 1
        self.stopping.set()
        if self.stops == 2:
            self.on_second_stop()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload = True
        self.wake.set()

    def take_reload(self) -> bool:
        wanted, self.reload = self.reload, False
        return wanted

    async def sleep(self, timeout_s: float | None) -> None:
        """Wait until woken or timeout_s passes (None: no limit), at most half the watchdog
        interval; tell the watchdog we are alive either way."""
        if self.notifier.watchdog_s:
            half = self.notifier.watchdog_s / 2
            timeout_s = half if timeout_s is None else min(timeout_s, half)
        if timeout_s is None or timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout_s)
        self.wake.clear()
        if self.notifier.watchdog_s:
            self.notifier.send(WATCHDOG=1)
