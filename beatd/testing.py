"""Run one task from a worker file in the foreground, exactly as `beatd worker` runs it (the
same resolution, environment rules, stdin message and timeout), without a broker: from pytest
(`run_task`) and for operators (`beatd worker --run`).

    from beatd.testing import run_task
    result = run_task("config/worker.yaml", "reports.nightly", args=[30])
    assert result.status is Status.SUCCEEDED, result.detail
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from beatd.client import runs
from beatd.client.aio import load_config
from beatd.core.config import JOB_NAME, Config
from beatd.core.errors import BeatdError
from beatd.core.ports import Clock
from beatd.runtime.clock import system_clock
from beatd.worker import runner
from beatd.worker.runner import Result, Status

__all__ = ["Result", "Status", "echoed", "exit_status", "invocation", "load_task", "run_task"]

# Exit status for a run that overran its timeout: what GNU timeout(1) uses, so shell scripts
# and systemd units that already know it need nothing new.
EXIT_TIMED_OUT = 124
INLINE_JOB = "inline"  # the job name for a task whose name is not a valid job name


def load_task(
    config: str | Path | Config, name: str, env: Mapping[str, str] | None = None
) -> runner.Task:
    """Read the worker file and resolve task name as the worker does at startup (imports a
    `call`, finds a `command` on PATH, checks `user`); BeatdError says what is wrong."""
    env = os.environ if env is None else env
    loaded = load_config(config, env)
    if not loaded.tasks:
        raise BeatdError(f"{loaded.path}: no tasks: a worker runs only the tasks its file defines")
    task = loaded.tasks.get(name)
    if task is None:
        hint = difflib.get_close_matches(name, list(loaded.tasks), n=1)
        also = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise BeatdError(f"{loaded.path}: no task named {name!r}{also}")
    # Only this task: a broken neighbour stops the worker, but should not stop a test of it.
    return runner.prepare({name: task}, loaded.path, env, os.geteuid())[name]


def invocation(
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    now: datetime,
) -> runner.Invocation:
    """One run of task, with the stdin message `beatd.client.publish` would have sent."""
    job = task if JOB_NAME.match(task) else INLINE_JOB
    one_off = runs.task_job(task, args, kwargs, job=job, now=now, where="run")
    outgoing = runs.message(Config(path="-"), one_off, now)
    return runner.Invocation(
        run_id=outgoing.run.id,
        job=one_off.name,
        task=task,
        attempt=1,
        scheduled_at=now,
        args=list(one_off.args),
        kwargs=dict(one_off.kwargs),
        body=outgoing.body,
    )


def run_task(
    config: str | Path | Config,
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    clock: Clock = system_clock,
) -> Result:
    """Run task once, to its end or its timeout, and return the Result (status, exit code,
    detail, the tail of its output or the callable's return value or traceback).

    Not from inside a running event loop: there, await runner.run(load_task(...), ...).
    """
    env = os.environ if env is None else env
    prepared = load_task(config, task, env)
    one_run = invocation(task, args, kwargs, now=clock().astimezone(UTC))
    return asyncio.run(runner.run(prepared, one_run, env, runner.Threads(1)))


def exit_status(result: Result) -> int:
    """The exit status `beatd worker --run` ends with: 0, the command's own status (128+N
    when killed by signal N, like a shell), 1 for a callable that raised or a command that
    could not start, 124 after a timeout."""
    if result.status is Status.SUCCEEDED:
        return 0
    if result.status is Status.TIMED_OUT:
        return EXIT_TIMED_OUT
    code = result.exit_code
    if code is None or code == 0:
        return 1
    return 128 - code if code < 0 else code


class _Echo(logging.Handler):
    """Prints a command's output as the runner reads it (it logs each line as
    "run <id> stdout: <line>"), and the runner's own warnings as `beatd: ...` lines."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        super().__init__(logging.INFO)
        self.streams = {"stdout": stdout, "stderr": stderr}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            record.msg == "run %s %s: %s"
            and isinstance(args, tuple)
            and len(args) == 3
            and args[1] in self.streams
        ):
            stream = self.streams[str(args[1])]
            print(args[2], file=stream, flush=True)
        elif record.levelno >= logging.WARNING:
            print(f"beatd: {record.getMessage()}", file=self.streams["stderr"], flush=True)


@contextlib.contextmanager
def echoed(stdout: TextIO, stderr: TextIO) -> Iterator[None]:
    """While inside, a command's output goes to stdout/stderr line by line, unadorned."""
    logger = logging.getLogger(runner.log.name)
    handler = _Echo(stdout, stderr)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # each output line is an INFO record
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
