"""`beatd run` and `beatd trigger` as real processes: SIGTERM, SIGKILL mid-burst and restart,
the systemd notify protocol, and the trigger command's exit codes."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from beatd.cli import main
from beatd.runtime.state import read_states
from tests.rabbit import Rabbit, wait_until


def start(path: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "BEATD_LOG_LEVEL": "INFO", **env},
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(timeout=20)


def write_config(tmp_path: Path, rabbit: Rabbit, jobs: str) -> Path:
    rabbit.exchanges.append(rabbit.name("x"))  # the scheduler declares it; delete it after
    path = tmp_path / "beatd.yaml"
    path.write_text(
        f"broker:\n  exchange: {rabbit.name('x')}\nstate: {tmp_path / 'state.db'}\njobs:\n{jobs}"
    )
    return path


def slot_of(message_id: str) -> datetime:
    return datetime.strptime(message_id.split("@")[1], "%Y%m%dT%H%M%SZ")


def test_sigterm_finishes_flushes_state_and_exits_zero(tmp_path: Path, rabbit: Rabbit) -> None:
    path = write_config(tmp_path, rabbit, "  fast:\n    every: 500ms\n    task: t.fast\n")
    queue = rabbit.queue(rabbit.name("x"))
    log = tmp_path / "beatd.log"
    process = start(path, log)
    try:
        got = rabbit.wait_for(queue, 3)
    finally:
        code = stop(process)
    assert code == 0, log.read_text()
    got += rabbit.drain(queue)
    newest = max(datetime.fromisoformat(m.json["scheduled_at"]) for m in got)
    state = read_states(tmp_path / "state.db")["fast"]
    assert state.last_slot == newest, "the state holds the last slot the broker confirmed"
    assert "stopped; published" in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_signal_mid_burst_and_a_restart_lose_no_slot(
    tmp_path: Path, rabbit: Rabbit, sig: signal.Signals
) -> None:
    jobs = "".join(f"  j{i:04d}:\n    every: 2s\n    task: t.burst\n" for i in range(2000))
    path = write_config(tmp_path, rabbit, jobs)
    queue = rabbit.queue(rabbit.name("x"))
    log = tmp_path / "beatd.log"
    process = start(path, log)
    try:
        wait_until(lambda: rabbit.depth(queue) >= 2000, what="the first burst")
        boundary = (int(time.time()) // 2 + 1) * 2
        time.sleep(max(0.0, boundary - time.time()) + 0.03)  # the next burst is under way
        process.send_signal(sig)
        first_exit = process.wait(timeout=20)
        process = start(path, log)
        time.sleep(5)
    finally:
        code = stop(process)
    assert code == 0, log.read_text()[-3000:]
    assert first_exit == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    ids = Counter(m.properties.message_id for m in rabbit.drain(queue))
    slots = sorted({slot_of(i) for i in ids})
    assert len(slots) >= 4
    expected = {
        f"j{i:04d}@{slot.strftime('%Y%m%dT%H%M%SZ')}" for i in range(2000) for slot in slots
    }
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(slots)), slots
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} slots lost, e.g. {sorted(missing)[:3]}"
    assert set(ids) == expected, "nothing but the expected ids"


def test_the_notify_protocol_reports_ready_status_and_watchdog(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    path = write_config(tmp_path, rabbit, "  slow:\n    every: 1h\n    task: t.slow\n")
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(10)
    process = start(
        path, tmp_path / "beatd.log", NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="1000000"
    )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            not any("READY=1" in m for m in messages)
            or sum("WATCHDOG=1" in m for m in messages) < 2
            or not any("broker up" in m for m in messages)
        ):
            messages.append(sock.recv(4096).decode())
    finally:
        assert stop(process) == 0
        sock.settimeout(1)  # everything it sent is queued by now: drain, then stop waiting
        with pytest.raises(TimeoutError):
            while True:
                messages.append(sock.recv(4096).decode())
        sock.close()
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=1 jobs" in ready
    assert any("next slow at" in m for m in messages)
    assert sum("WATCHDOG=1" in m for m in messages) >= 2, "pinged from the loop while idle"
    assert any("STOPPING=1" in m for m in messages)


def test_trigger_publishes_one_manual_run_and_exits_zero_once_confirmed(
    tmp_path: Path, rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        tmp_path,
        rabbit,
        "  report:\n    cron: '30 2 * * *'\n    task: reports.nightly\n    args: [1]\n",
    )
    queue = rabbit.queue(rabbit.name("x"), "reports.#")
    assert main(["trigger", "-c", str(path), "report"]) == 0
    out = capsys.readouterr().out.strip()
    [m] = rabbit.wait_for(queue, 1)
    assert out == f"published {m.properties.message_id}"
    assert m.properties.message_id.startswith("report@manual-")
    assert (m.json["trigger"], m.json["args"], m.json["task"]) == ("manual", [1], "reports.nightly")


def test_trigger_of_an_unknown_job_is_a_one_line_error(
    tmp_path: Path, rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, rabbit, "  report:\n    every: 1h\n    task: t.r\n")
    assert main(["trigger", "-c", str(path), "reprot"]) == 1
    err = capsys.readouterr().err
    assert err == f"beatd: {path}: no job named 'reprot' (did you mean 'report'?)\n"


def test_trigger_with_an_unreachable_broker_fails_clearly_without_the_password(
    tmp_path: Path, rabbit: Rabbit, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, rabbit, "  report:\n    every: 1h\n    task: t.r\n")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = {**os.environ, "BEATD_BROKER_URL": f"amqp://guest:hunter2@127.0.0.1:{port}/%2F"}
    result = subprocess.run(
        [sys.executable, "-m", "beatd", "trigger", "-c", str(path), "report"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("beatd: amqp://guest:***@127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_trigger_of_a_run_nobody_receives_says_so(
    tmp_path: Path, rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, rabbit, "  report:\n    every: 1h\n    task: nobody.home\n")
    rabbit.exchanges.append(rabbit.name("x"))
    assert main(["trigger", "-c", str(path), "report"]) == 1
    assert "unroutable" in capsys.readouterr().err


def test_list_shows_last_from_the_state_the_daemon_wrote(
    tmp_path: Path, rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, rabbit, "  fast:\n    every: 500ms\n    task: t.fast\n")
    queue = rabbit.queue(rabbit.name("x"))
    process = start(path, tmp_path / "beatd.log")
    try:
        rabbit.wait_for(queue, 2)
    finally:
        assert stop(process) == 0
    assert main(["list", "-c", str(path), "--json"]) == 0
    capsys.readouterr()
    assert main(["list", "-c", str(path)]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.count(" UTC") == 2, "NEXT and LAST are both times: " + row


def test_trigger_of_a_celery_job_uses_the_queue_as_the_workers_declared_it(
    tmp_path: Path, rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = rabbit.name("celeryq")
    with rabbit.channel() as ch:  # as a worker with task_queue_max_priority=10 would
        ch.queue_declare(queue, durable=True, arguments={"x-max-priority": 10})
    rabbit.queues.append(queue)
    jobs = (
        f"  report:\n    every: 1h\n    task: proj.report\n    format: celery\n    queue: {queue}\n"
    )
    path = write_config(tmp_path, rabbit, jobs)
    assert main(["trigger", "-c", str(path), "report"]) == 0, capsys.readouterr().err
    [m] = rabbit.wait_for(queue, 1)
    assert m.properties.headers["task"] == "proj.report"


def test_trigger_of_a_celery_job_creates_a_missing_queue_as_celery_would(
    tmp_path: Path, rabbit: Rabbit, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = rabbit.name("fresh")
    rabbit.queues.append(queue)
    rabbit.exchanges.append(queue)
    jobs = (
        f"  report:\n    every: 1h\n    task: proj.report\n    format: celery\n    queue: {queue}\n"
    )
    path = write_config(tmp_path, rabbit, jobs)
    assert main(["trigger", "-c", str(path), "report"]) == 0, capsys.readouterr().err
    assert rabbit.depth(queue) == 1
    assert rabbit.exchange_exists(queue), "Celery's same-named direct exchange"
