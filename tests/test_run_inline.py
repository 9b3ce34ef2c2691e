"""`beatd worker --run TASK` and beatd.testing.run_task: one run in the foreground, as the
worker runs it, with no broker. Real processes and threads; timeouts of a fraction of a second."""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from beatd.cli import main
from beatd.core.errors import BeatdError, ConfigError
from beatd.core.messages import parse_beatd
from beatd.testing import Result, Status, exit_status, invocation, run_task

PY = sys.executable
READ_STDIN = (
    "import json, sys; m = json.load(sys.stdin); "
    "print(m['v'], m['task'], m['job'], m['args'], m['kwargs'], m['trigger'])"
)


@pytest.fixture
def worker_file(tmp_path: Path) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        tasks:
          echo.args:
            command: [/bin/echo, "days:"]
            args: append
            args_separator: ""
          read.stdin:
            command: [{PY}, -c, "{READ_STDIN}"]
            args: append
          show.env:
            command: [/usr/bin/env]
            env: {{REPORT_FORMAT: pdf}}
          exit.three:
            command: [{PY}, -c, "import sys; print('oops', file=sys.stderr); sys.exit(3)"]
          too.slow:
            command: [/bin/sleep, "5"]
            timeout: 200ms
          py.record:
            call: tests.worker_tasks:record
          py.fail:
            call: tests.worker_tasks:fail
          py.slow:
            call: tests.worker_tasks:sleep
            timeout: 100ms
        """)
    )
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_command_runs_with_its_args_and_output(worker_file: Path, capsys) -> None:
    code, out, err = cli(
        capsys, "worker", "-c", str(worker_file), "--run", "echo.args", "--args", '[30, "x"]'
    )
    assert (code, out, err) == (0, "days: 30 x\n", "")


def test_a_command_reads_the_message_on_stdin(worker_file: Path, capsys) -> None:
    argv = ["--run", "read.stdin", "--args", "[1]", "--kwargs", '{"dry_run": true}']
    code, out, _ = cli(capsys, "worker", "-c", str(worker_file), *argv)
    assert code == 0
    assert out == "1 read.stdin read.stdin [1] {'dry_run': True} manual\n"


def test_the_environment_follows_the_workers_rules(
    worker_file: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEATD_BROKER_URL", "amqp://guest:secret@example/")
    monkeypatch.setenv("LC_TIME", "C")
    code, out, _ = cli(capsys, "worker", "-c", str(worker_file), "--run", "show.env")
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert code == 0
    assert "BEATD_BROKER_URL" not in env  # the worker's secrets stay with the worker
    assert env["REPORT_FORMAT"] == "pdf" and env["LC_TIME"] == "C"
    assert env["BEATD_TASK"] == env["BEATD_JOB"] == "show.env"
    assert env["BEATD_RUN_ID"].startswith("show.env@manual-") and env["BEATD_ATTEMPT"] == "1"


def test_a_failed_command_exits_with_its_own_status(worker_file: Path, capsys) -> None:
    code, out, err = cli(capsys, "worker", "-c", str(worker_file), "--run", "exit.three")
    assert (code, out) == (3, "")
    first, summary = err.splitlines()
    assert first == "oops"
    assert summary.startswith("beatd: run exit.three@manual-")
    assert summary.endswith("(exit status 3)") and "(task exit.three): failed after " in summary


def test_a_timeout_kills_the_command_and_exits_124(worker_file: Path, capsys) -> None:
    code, out, err = cli(capsys, "worker", "-c", str(worker_file), "--run", "too.slow")
    assert (code, out) == (124, "")
    assert "(task too.slow): timed_out after " in err
    assert err.rstrip().endswith("(timed out after 0.2s; process group killed)")


def test_a_callable_prints_what_it_returned(worker_file: Path, tmp_path: Path, capsys) -> None:
    log = tmp_path / "calls.jsonl"
    argv = ["--run", "py.record", "--args", json.dumps([str(log), 1]), "--kwargs", '{"a": 2}']
    code, out, err = cli(capsys, "worker", "-c", str(worker_file), *argv)
    assert (code, out, err) == (0, "'recorded'\n", "")
    assert json.loads(log.read_text()) == {"args": [1], "kwargs": {"a": 2}}


def test_a_callable_that_raises_shows_the_traceback_and_exits_1(worker_file: Path, capsys) -> None:
    argv = ["--run", "py.fail", "--args", '["boom"]']
    code, out, err = cli(capsys, "worker", "-c", str(worker_file), *argv)
    assert (code, out) == (1, "")
    assert "Traceback" in err and "raise ValueError(message)" in err
    summary = err.rstrip().splitlines()[-1]
    assert summary.startswith("beatd: run py.fail@manual-")
    assert "(task py.fail): failed after " in summary and summary.endswith("(ValueError: boom)")


def test_a_callable_past_its_timeout_exits_124(worker_file: Path, capsys) -> None:
    argv = ["--run", "py.slow", "--args", "[0.4]"]
    code, _, err = cli(capsys, "worker", "-c", str(worker_file), *argv)
    assert code == 124
    assert "still running after its 0.1s timeout" in err
    assert err.rstrip().endswith("(timed out after 0.1s)")


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (
            ["--run", "echo.arg"],
            1,
            "beatd: {f}: no task named 'echo.arg' (did you mean 'echo.args'?)",
        ),
        (["--run", "echo.args", "--args", "[1"], 2, "beatd worker: --args: not JSON (Expecting"),
        (
            ["--run", "echo.args", "--args", '{"a": 1}'],
            2,
            "beatd worker: --args: got dict; give a JSON array",
        ),
        (
            ["--run", "echo.args", "--kwargs", "[]"],
            2,
            "beatd worker: --kwargs: got list; give a JSON object",
        ),
        (["--args", "[1]"], 2, "beatd worker: --args and --kwargs go with --run TASK"),
        (
            ["--run", "echo.args", "--args", "[NaN]"],
            1,
            "beatd: run: args: nan at [0] is not valid in JSON",
        ),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(
    worker_file: Path, capsys, argv: list[str], code: int, line: str
) -> None:
    got, out, err = cli(capsys, "worker", "-c", str(worker_file), *argv)
    assert (got, out) == (code, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(line.format(f=worker_file))


def test_a_task_that_cannot_run_is_named_with_its_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(
        "tasks:\n  fine:\n    command: [/bin/true]\n  broken:\n    command: [no-such-program]\n"
    )
    code, _, err = cli(capsys, "worker", "-c", str(path), "--run", "broken")
    assert code == 1
    assert err.startswith(f"{path}:4: task 'broken': command: 'no-such-program' not found on PATH")
    assert cli(capsys, "worker", "-c", str(path), "--run", "fine")[0] == 0  # a broken neighbour


def test_a_file_without_tasks_says_so(tmp_path: Path, capsys) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text("jobs:\n  a:\n    every: 1h\n    task: t\n")
    code, _, err = cli(capsys, "worker", "-c", str(path), "--run", "t")
    assert (code, err) == (
        1,
        f"beatd: {path}: no tasks: a worker runs only the tasks its file defines\n",
    )


# beatd.testing from pytest


def test_run_task_returns_the_workers_result(worker_file: Path, tmp_path: Path) -> None:
    ok = run_task(worker_file, "echo.args", [7])
    assert (ok.status, ok.exit_code, ok.output) == (Status.SUCCEEDED, 0, "days: 7")
    failed = run_task(str(worker_file), "exit.three")
    assert (failed.status, failed.exit_code, failed.detail) == (Status.FAILED, 3, "exit status 3")
    log = tmp_path / "calls.jsonl"
    called = run_task(worker_file, "py.record", (str(log),), {"k": [1, 2]})
    assert (called.status, called.output) == (Status.SUCCEEDED, "'recorded'")
    assert json.loads(log.read_text())["kwargs"] == {"k": [1, 2]}


def test_run_task_reports_bad_input_as_beatd_errors(worker_file: Path) -> None:
    with pytest.raises(BeatdError, match="no task named 'nope'"):
        run_task(worker_file, "nope")
    with pytest.raises(BeatdError, match="run: kwargs: key 1 is not a string"):
        run_task(worker_file, "echo.args", kwargs={1: 2})
    with pytest.raises(ConfigError, match="no such file"):
        run_task(worker_file.with_name("missing.yaml"), "echo.args")


def test_the_stdin_message_is_what_publish_would_send() -> None:
    now = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
    run = invocation("reports.render", [1], {"a": "b"}, now=now)
    body = parse_beatd(run.body)
    assert (body.id, body.job, body.task, body.trigger) == (
        run.run_id,
        "reports.render",
        "reports.render",
        "manual",
    )
    assert (body.args, body.kwargs, body.scheduled_at) == ([1], {"a": "b"}, now)
    assert invocation("odd+name", now=now).job == "inline"  # not a valid job name


@pytest.mark.parametrize(
    ("result", "code"),
    [
        (Result(Status.SUCCEEDED, 0), 0),
        (Result(Status.FAILED, 3), 3),
        (Result(Status.FAILED, -9), 137),  # killed by SIGKILL, as a shell reports it
        (Result(Status.FAILED, None, "ValueError: x"), 1),  # a callable raised
        (Result(Status.TIMED_OUT, -15), 124),
        (Result(Status.TIMED_OUT), 124),
    ],
)
def test_exit_status(result: Result, code: int) -> None:
    assert exit_status(result) == code
