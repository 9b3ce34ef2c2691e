"""How one task runs (beatd.worker.runner), without a broker: real processes, real threads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pwd
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from beatd.core.commands import ArgsMode, ArgsPolicy
from beatd.core.config import TaskConfig
from beatd.core.errors import ConfigError
from beatd.worker import runner
from tests.rabbit import wait_until
from tests.workerutil import running_with, unique_sleep

BODY = b'{"v": 1, "id": "job@20261121T053000Z"}'


def invocation(args: list[Any] | None = None, **kwargs: Any) -> runner.Invocation:
    return runner.Invocation(
        run_id="job@20261121T053000Z",
        job="job",
        task="the.task",
        attempt=1,
        scheduled_at=datetime(2026, 11, 21, 5, 30, tzinfo=UTC),
        args=args or [],
        kwargs=kwargs,
        body=BODY,
    )


def command_task(*argv: str, timeout_s: float | None = None, **options: Any) -> runner.Task:
    timeout = timedelta(seconds=timeout_s) if timeout_s is not None else None
    env = MappingProxyType(options.pop("env", {}))
    config = TaskConfig("the.task", command=argv, timeout=timeout, env=env, **options)
    [task] = runner.prepare({"the.task": config}, "w.yaml", os.environ, os.geteuid()).values()
    return task


def call_task(ref: str, timeout_s: float | None = None) -> runner.Task:
    timeout = timedelta(seconds=timeout_s) if timeout_s is not None else None
    config = TaskConfig("the.task", call=ref, timeout=timeout)
    [task] = runner.prepare({"the.task": config}, "w.yaml", os.environ, os.geteuid()).values()
    return task


def run(task: runner.Task, inv: runner.Invocation, env: dict[str, str] | None = None) -> Any:
    return asyncio.run(runner.run(task, inv, env if env is not None else dict(os.environ)))


SHOW = """
import json, os, sys
print(json.dumps({
    "argv": sys.argv[1:],
    "stdin": sys.stdin.read(),
    "cwd": os.getcwd(),
    "env": {k: v for k, v in os.environ.items()
            if k.startswith("BEATD") or k in ("GREETING", "SECRET", "HOME")},
}))
"""


def test_a_command_gets_args_after_the_separator_the_message_on_stdin_and_the_run_env(
    tmp_path: Path,
) -> None:
    task = command_task(sys.executable, "-c", SHOW, "--first", cwd=str(tmp_path),
                        env={"GREETING": "hi"}, args=ArgsPolicy(ArgsMode.APPEND))  # fmt: skip
    result = run(task, invocation([30, "two", True, None, {"a": 1}]), {"SECRET": "x", "HOME": "/h"})
    assert result.status is runner.Status.SUCCEEDED
    assert result.exit_code == 0
    shown = json.loads(result.output)
    assert shown["argv"] == ["--first", "--", "30", "two", "true", "null", '{"a": 1}']
    assert shown["stdin"] == BODY.decode() + "\n"
    assert shown["cwd"] == str(tmp_path)
    assert shown["env"] == {
        "BEATD_JOB": "job",
        "BEATD_TASK": "the.task",
        "BEATD_RUN_ID": "job@20261121T053000Z",
        "BEATD_SCHEDULED_AT": "2026-11-21T05:30:00Z",
        "BEATD_ATTEMPT": "1",
        "GREETING": "hi",
        "HOME": "/h",  # passed on, unlike SECRET: the worker's own environment stays private
    }


def test_a_commands_output_goes_to_the_log_with_the_run_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "beatd.run")
    task = command_task("/bin/sh", "-c", "echo out; echo err >&2")
    result = run(task, invocation())
    assert result.status is runner.Status.SUCCEEDED
    assert "run job@20261121T053000Z stdout: out" in caplog.messages
    assert "run job@20261121T053000Z stderr: err" in caplog.messages
    assert sorted(result.output.splitlines()) == ["err", "out"]


def test_the_output_tail_keeps_the_last_lines() -> None:
    task = command_task("/bin/sh", "-c", "for i in $(seq 1 100); do echo line $i; done")
    result = run(task, invocation())
    lines = result.output.splitlines()
    assert len(lines) == runner.TAIL_LINES
    assert lines[-1] == "line 100"


def test_a_non_zero_exit_is_a_failure_with_its_status() -> None:
    result = run(command_task("/bin/sh", "-c", "echo bad >&2; exit 3"), invocation())
    assert result.status is runner.Status.FAILED
    assert result.exit_code == 3
    assert result.detail == "exit status 3"
    assert result.output == "bad"


def test_a_command_killed_by_a_signal_says_which() -> None:
    result = run(command_task("/bin/sh", "-c", "kill -9 $$"), invocation())
    assert result.status is runner.Status.FAILED
    assert result.detail == "killed by signal SIGKILL"


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = unique_sleep()
    started = tmp_path / "started"
    script = f"sleep {marker} & touch {started}; wait"
    result = run(command_task("/bin/sh", "-c", script, timeout_s=0.5), invocation())
    assert result.status is runner.Status.TIMED_OUT
    assert "timed out after 0.5s" in result.detail
    assert started.exists()
    wait_until(lambda: not running_with(marker), 30, "the grandchild to die")


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "KILL_GRACE_S", 0.2)
    started = tmp_path / "started"
    script = f"trap '' TERM; touch {started}; while :; do sleep 0.05; done"
    result = run(command_task("/bin/sh", "-c", script, timeout_s=0.5), invocation())
    assert result.status is runner.Status.TIMED_OUT
    assert result.exit_code == -9


def test_processes_left_behind_in_the_group_are_stopped() -> None:
    marker = unique_sleep()
    result = run(command_task("/bin/sh", "-c", f"sleep {marker} &"), invocation())
    assert result.status is runner.Status.SUCCEEDED  # the run's own process succeeded
    wait_until(lambda: not running_with(marker), 30, "the leftover to die")


def test_a_command_that_does_not_read_a_large_message_on_stdin_is_fine() -> None:
    big = dataclasses.replace(invocation(), body=b"x" * 1_000_000)  # far more than a pipe holds
    result = run(command_task("/bin/true"), big)
    assert result.status is runner.Status.SUCCEEDED


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_as_root_a_command_runs_as_its_user_with_that_users_groups_and_home() -> None:
    nobody = pwd.getpwnam("nobody")
    task = command_task("/bin/sh", "-c", 'echo "$(id -u) $(id -g) $HOME $USER"', user="nobody")
    result = run(task, invocation())
    assert result.output == f"{nobody.pw_uid} {nobody.pw_gid} {nobody.pw_dir} nobody"


def test_a_callable_is_called_with_args_and_kwargs(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    result = run(call_task("tests.worker_tasks:record"), invocation([str(out), 1], flag=True))
    assert result.status is runner.Status.SUCCEEDED
    assert result.output == "'recorded'"
    assert json.loads(out.read_text()) == {"args": [1], "kwargs": {"flag": True}}


def test_an_exception_in_a_callable_is_a_failure_with_its_traceback() -> None:
    result = run(call_task("tests.worker_tasks:fail"), invocation(["boom"]))
    assert result.status is runner.Status.FAILED
    assert result.detail == "ValueError: boom"
    assert "Traceback" in result.output
    assert result.output.rstrip().endswith("ValueError: boom")


def test_a_callable_that_raises_systemexit_fails_without_stopping_the_worker() -> None:
    result = run(call_task("sys:exit"), invocation([4]))
    assert result.status is runner.Status.FAILED
    assert result.detail == "SystemExit: 4"


def test_a_callable_past_its_timeout_is_timed_out_and_keeps_its_slot_until_it_returns(
    tmp_path: Path,
) -> None:
    started, go = tmp_path / "started", tmp_path / "go"

    async def scenario() -> None:
        task = call_task("tests.worker_tasks:wait_for", timeout_s=0.2)
        result = await runner.run(task, invocation([str(started), str(go)]), {})
        assert result.status is runner.Status.TIMED_OUT
        assert result.lingering is not None
        assert not result.lingering.done()  # the thread is still in there
        go.touch()
        await asyncio.wait_for(result.lingering, 20)

    asyncio.run(scenario())
    wait_until(started.exists)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (TaskConfig("t", call="no_such_module_xyz:f"), "call: cannot import 'no_such_module_xyz'"),
        (TaskConfig("t", call="tests.worker_tasks:nope"), "has no 'nope'"),
        (TaskConfig("t", call="tests.worker_tasks:NOT_CALLABLE"), "is a int, not callable"),
        (TaskConfig("t", command=("/no/such/program",)), "is not an executable file"),
        (TaskConfig("t", command=("no-such-program-xyz",)), "not found on PATH"),
        (TaskConfig("t", command=("/bin/true",), cwd="/no/such/dir"), "is not a directory"),
        (TaskConfig("t", command=("/bin/true",), user="no-such-user-xyz"), "no such user"),
    ],
)
def test_a_task_that_cannot_run_is_a_startup_error_naming_it(
    config: TaskConfig, error: str
) -> None:
    config = dataclasses.replace(config, line=7)
    with pytest.raises(ConfigError) as caught:
        runner.prepare({"t": config}, "w.yaml", {"PATH": "/usr/bin:/bin"}, os.geteuid())
    [problem] = caught.value.problems
    assert str(problem).startswith("w.yaml:7: task 't': ")
    assert error in str(problem)


def test_switching_users_without_root_is_a_startup_error() -> None:
    config = TaskConfig("t", command=("/bin/true",), user="root")
    with pytest.raises(ConfigError, match="needs the worker to run as root"):
        runner.prepare({"t": config}, "w.yaml", {}, euid=1234)


def test_every_broken_task_is_reported_at_once() -> None:
    tasks = {
        "a": TaskConfig("a", call="no_such_module_xyz:f"),
        "b": TaskConfig("b", command=("/no/such/program",)),
        "c": TaskConfig("c", command=("/bin/true",)),
    }
    with pytest.raises(ConfigError) as caught:
        runner.prepare(tasks, "w.yaml", {}, os.geteuid())
    assert len(caught.value.problems) == 2


def test_the_thread_pool_runs_as_many_blocking_calls_at_once_as_its_size() -> None:
    threads = runner.Threads(3)
    release = threading.Event()
    running = threading.Semaphore(0)

    def job() -> None:
        running.release()
        release.wait(20)

    for _ in range(3):
        threads.submit(job)
    try:
        assert all(running.acquire(timeout=20) for _ in range(3))  # all three at once
    finally:
        release.set()
