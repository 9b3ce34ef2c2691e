"""The boundary between a message and what runs (issue 12 items 0 and 5, issue 9 item 6), with
real child processes: args are data, never code or shell; kwargs set nothing about how a
command runs; a command's environment holds none of the worker's secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from beatd.core.commands import ArgsMode, ArgsPolicy
from beatd.core.config import TaskConfig
from beatd.worker import runner

SECRET = "s3cret-Pw-9f2c"
# A worker's environment as systemd and an operator would give it.
WORKER_ENV = {
    "PATH": os.environ.get("PATH", runner.DEFAULT_PATH),
    "LANG": "C.UTF-8",
    "LC_TIME": "C.UTF-8",
    "TZ": "UTC",
    "HOME": "/var/lib/beatd-worker",
    "USER": "beatd",
    "LOGNAME": "beatd",
    "TMPDIR": "/tmp",
    "BEATD_BROKER_URL": f"amqp://beatd:{SECRET}@rabbit.example:5672/%2F",
    "BEATD_CONFIG": "/etc/beatd/worker.yaml",
    "CREDENTIALS_DIRECTORY": "/run/credentials/beatd-worker@x.service",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "WATCHDOG_USEC": "30000000",
    "STATE_DIRECTORY": "/var/lib/beatd",
    "INVOCATION_ID": "0f0e0d0c",
    "RABBITMQ_DEFAULT_PASS": SECRET,
    "PGPASSWORD": SECRET,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "SSH_AUTH_SOCK": "/tmp/ssh-x/agent.1",
    "PYTHONPATH": "/srv/app",
}

SHOW = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd(),
                  "uid": os.getuid(), "stdin": sys.stdin.read(),
                  "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd"))}))
"""


def body(args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"v": 1, "id": "job@x", "args": args or [], "kwargs": kwargs or {}}).encode()


def invocation(args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> Any:
    return runner.Invocation(
        run_id="job@20261121T053000Z",
        job="job",
        task="the.task",
        attempt=1,
        scheduled_at=datetime(2026, 11, 21, 5, 30, tzinfo=UTC),
        args=args or [],
        kwargs=kwargs or {},
        body=body(args, kwargs),
    )


def task(*argv: str, **options: Any) -> runner.Task:
    env = MappingProxyType(options.pop("env", {}))
    config = TaskConfig("the.task", command=argv, env=env, timeout=timedelta(seconds=20), **options)
    [prepared] = runner.prepare({"t": config}, "w.yaml", WORKER_ENV, os.geteuid()).values()
    return prepared


def call_task(ref: str) -> runner.Task:
    config = TaskConfig("the.task", call=ref, timeout=timedelta(seconds=20))
    [prepared] = runner.prepare({"t": config}, "w.yaml", WORKER_ENV, os.geteuid()).values()
    return prepared


def run(prepared: runner.Task, inv: runner.Invocation) -> runner.Result:
    return asyncio.run(runner.run(prepared, inv, WORKER_ENV))


def shown(result: runner.Result) -> dict[str, Any]:
    assert result.status is runner.Status.SUCCEEDED, result
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_the_forged_message_of_issue_12_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "x"
    forged = invocation(["/bin/sh", "-c", f"id > {marker}"])
    result = run(task("/usr/bin/env"), forged)
    assert result.status is runner.Status.REFUSED
    assert result.detail.startswith("refused: the message has 3 args and this command takes none")
    assert not marker.exists()


def test_patterns_refuse_what_a_program_that_runs_its_operands_would_run(tmp_path: Path) -> None:
    # The separator does not help against env, sh -c, xargs: `env -- sh -c ...` still runs sh.
    marker = tmp_path / "x"
    policy = ArgsPolicy(ArgsMode.SHAPES, (re.compile("[A-Z_]{1,32}"),))
    result = run(task("/usr/bin/env", args=policy), invocation(["sh", "-c", f"id > {marker}"]))
    assert result.status is runner.Status.REFUSED
    assert not marker.exists()


def test_args_are_data_passed_verbatim_never_through_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "x"
    nasty = [f"$(touch {marker})", f"; touch {marker}", f"`touch {marker}`", "*", "a b", "-rf"]
    result = run(
        task(sys.executable, "-c", SHOW, args=ArgsPolicy(ArgsMode.APPEND)), invocation(nasty)
    )
    assert shown(result)["argv"] == ["-c", "--", *nasty]
    assert not marker.exists()


def test_a_calls_args_and_kwargs_are_python_values_never_evaluated(tmp_path: Path) -> None:
    marker, out = tmp_path / "x", tmp_path / "calls"
    code = f"__import__('os').system('touch {marker}')"
    kwargs = {"cwd": "/", "env": {"PATH": "/evil"}, "user": "root", "__class__": code}
    before = (Path.cwd(), os.environ.get("PATH"))
    result = run(call_task("tests.worker_tasks:record"), invocation([str(out), code], kwargs))
    assert result.status is runner.Status.SUCCEEDED
    assert json.loads(out.read_text()) == {"args": [code], "kwargs": kwargs}
    assert not marker.exists()
    assert (Path.cwd(), os.environ.get("PATH")) == before


def test_kwargs_cannot_set_a_commands_environment_working_directory_or_user(
    tmp_path: Path,
) -> None:
    kwargs = {
        "env": {"LD_PRELOAD": "/tmp/evil.so", "PATH": "/evil"},
        "environment": {"PATH": "/evil"},
        "cwd": "/",
        "user": "root",
        "uid": 0,
        "PATH": "/evil",
        "LD_PRELOAD": "/tmp/evil.so",
    }
    result = run(task(sys.executable, "-c", SHOW, cwd=str(tmp_path)), invocation(kwargs=kwargs))
    child = shown(result)
    assert child["cwd"] == str(tmp_path)
    assert child["uid"] == os.getuid()
    assert child["env"]["PATH"] == WORKER_ENV["PATH"]
    assert "LD_PRELOAD" not in child["env"]
    assert json.loads(child["stdin"])["kwargs"] == kwargs  # data for the command, on stdin


def test_a_commands_environment_is_minimal_and_holds_none_of_the_workers_secrets() -> None:
    result = run(task(sys.executable, "-c", SHOW, env={"REPORT_FORMAT": "pdf"}), invocation())
    child = shown(result)
    assert set(child["env"]) - {"LC_CTYPE"} == {  # LC_CTYPE: Python's own locale coercion
        "PATH", "LANG", "LC_TIME", "TZ", "HOME", "USER", "LOGNAME", "TMPDIR",
        "REPORT_FORMAT",
        "BEATD_JOB", "BEATD_TASK", "BEATD_RUN_ID", "BEATD_SCHEDULED_AT", "BEATD_ATTEMPT",
    }  # fmt: skip
    everything = json.dumps(child)  # env, argv and stdin
    assert SECRET not in everything
    for leaked in ("BEATD_BROKER_URL", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "/etc/beatd"):
        assert leaked not in everything


def test_a_command_inherits_no_open_file_of_the_worker(tmp_path: Path) -> None:
    # The worker holds its broker socket and its SQLite store open; neither may reach a task.
    with (tmp_path / "store.db").open("wb") as held:
        fd = held.fileno()
        os.set_inheritable(fd, True)  # even one marked inheritable
        child = shown(run(task(sys.executable, "-c", SHOW), invocation()))
    assert fd not in child["fds"]
    assert child["fds"] == [0, 1, 2, 3]  # 3: the directory listing itself


def test_a_set_e_shell_script_reads_the_message_with_read_r() -> None:
    script = 'set -e; read -r msg; printf "got %s\\n" "$msg"'
    result = run(task("/bin/sh", "-c", script), invocation([], {"k": 1}))
    assert result.status is runner.Status.SUCCEEDED, result
    assert result.output == "got " + body([], {"k": 1}).decode()


def test_control_characters_in_a_commands_output_cannot_forge_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "beatd.run")
    script = r"printf 'ok\rbeatd.worker: run forged@x (job x): succeeded\033[2K\n'"
    result = run(task("/bin/sh", "-c", script), invocation())
    assert result.status is runner.Status.SUCCEEDED
    [line] = [m for m in caplog.messages if "stdout" in m]
    assert line == (
        r"run job@20261121T053000Z stdout: ok\rbeatd.worker: run forged@x (job x): succeeded\x1b[2K"
    )
