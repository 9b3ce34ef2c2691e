"""Callables for `call:` tasks in the worker tests (imported by the worker subprocess)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def record(path: str, *args: Any, **kwargs: Any) -> str:
    """Append what it was called with, one JSON line per call."""
    with Path(path).open("a") as file:
        file.write(json.dumps({"args": list(args), "kwargs": kwargs}) + "\n")
    return "recorded"


def wait_for(started: str, go: str, timeout_s: float = 30.0) -> None:
    """Say it started, then wait until the test says go (bounded)."""
    Path(started).touch()
    deadline = time.monotonic() + timeout_s
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{go} never appeared")
        time.sleep(0.01)


def fail(message: str) -> None:
    raise ValueError(message)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def noop() -> None:
    """The benchmark's trivial task."""


NOT_CALLABLE = 42


def wait_then_record(started: str, go: str, out: str) -> None:
    wait_for(started, go)
    record(out)


def kill_worker() -> None:
    """Take the whole worker down, as a segfaulting extension or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def count(path: str, run_id: str) -> None:
    """One line per execution of run_id (the worker model counts them)."""
    with Path(path).open("a") as file:
        file.write(run_id + "\n")


def count_then_fail(path: str, run_id: str) -> None:
    count(path, run_id)
    raise RuntimeError("failing on purpose")


def count_then_sleep(path: str, run_id: str, seconds: float) -> None:
    count(path, run_id)
    time.sleep(seconds)
