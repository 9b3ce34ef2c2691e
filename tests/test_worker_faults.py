"""`beatd worker` under real faults: a timeout with a grandchild, SIGTERM mid-job, a forced
stop, the broker closing the connection mid-job, a task that kills the worker, and the
whole path from `beatd run` publishing to `beatd worker` running a command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from beatd.core.verdicts import MAX_STARTS
from tests.rabbit import AMQP_URL, Rabbit, TcpProxy, wait_until
from tests.workerutil import (
    ROOT,
    Names,
    close_connection,
    connection_count,
    dead_letters,
    header,
    message,
    publish,
    python_command,
    queue_counts,
    running_with,
    running_worker,
    unique_sleep,
    wait_for_file,
    worker_file,
)


@pytest.fixture
def names(rabbit: Rabbit) -> Names:
    return Names.fresh(rabbit)


def test_a_timeout_kills_the_whole_process_group_grandchildren_included(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    marker, started = unique_sleep(), tmp_path / "started"
    script = f"sleep {marker} & touch {started}; wait"
    tasks = {"slow": {"command": ["/bin/sh", "-c", script], "timeout": "500ms"}}
    config = worker_file(tmp_path, names, tasks)
    with running_worker(config, tmp_path):
        [run_id] = publish(rabbit, names, message("slow"))
        [dead] = dead_letters(rabbit, names, 1)
    assert header(dead, "beatd-reason") == "timed_out"
    assert dead.properties.message_id == run_id
    assert started.exists()
    wait_until(lambda: not running_with(marker), 5, "the grandchild to die")


def test_sigterm_mid_job_lets_it_finish_acks_it_and_leaves_the_rest_queued(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    started, go, out = tmp_path / "started", tmp_path / "go", tmp_path / "out"
    tasks = {"wait": {"call": "tests.worker_tasks:wait_then_record"}}
    config = worker_file(tmp_path, names, tasks, concurrency=1)
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, message("wait", args=[str(started), str(go), str(out)]))
        wait_until(started.exists, what="the first run to start")
        later = [message("wait", args=[str(tmp_path / f"s{n}"), str(go), str(out)]) for n in (1, 2)]
        publish(rabbit, names, *later)
        worker.signal(signal.SIGTERM)
        worker.wait_log("stopping: taking no new runs; waiting for 1 running")
        assert worker.process.poll() is None  # still waiting for the run in flight
        go.touch()
        assert worker.process.wait(30) == 0
    assert len(out.read_text().splitlines()) == 1
    assert queue_counts(names.queue) == (2, 0)  # the two that never started are still there
    assert rabbit.depth(names.dlq) == 0


def test_a_second_sigterm_stops_at_once_and_the_interrupted_run_goes_back_to_the_queue(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    marker, started = unique_sleep(), tmp_path / "started"
    script = f"touch {started}; sleep {marker}"
    config = worker_file(tmp_path, names, {"slow": {"command": ["/bin/sh", "-c", script]}})
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, message("slow"))
        wait_until(started.exists, what="the run to start")
        worker.signal(signal.SIGTERM)
        worker.wait_log("stopping: taking no new runs")
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(30) == 1
    wait_until(lambda: not running_with(marker), 5, "the command to die")
    wait_until(lambda: queue_counts(names.queue) == (1, 0), what="the run back in the queue")


def test_a_connection_dropped_mid_job_runs_it_once_and_leaves_nothing_unacked(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    started, go, out = tmp_path / "started", tmp_path / "go", tmp_path / "out"
    tasks = {"wait": {"call": "tests.worker_tasks:wait_then_record"}}
    config = worker_file(tmp_path, names, tasks, concurrency=2)
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("wait", args=[str(started), str(go), str(out)]))
        wait_until(started.exists, what="the run to start")
        assert close_connection(f"worker {names.queue}") == 1
        worker.wait_log("lost the broker connection")
        # Back on a new connection, the broker redelivers the unacked message; the worker
        # sees its run id in progress and holds the copy instead of running it again.
        worker.wait_log(f"run {run_id} (job job): duplicate, redelivered while it runs here")
        assert connection_count(f"worker {names.queue}") == 1
        go.touch()
        worker.wait_log(f"run {run_id} (job job): succeeded")
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="nothing left unacked")
        assert worker.stop() == 0
    assert len(out.read_text().splitlines()) == 1
    assert rabbit.depth(names.dlq) == 0


def test_a_run_that_kills_the_worker_runs_again_then_is_dead_lettered_as_interrupted(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"bomb": {"call": "tests.worker_tasks:kill_worker"}})
    run_id = ""
    for attempt in range(MAX_STARTS):  # at-least-once: a run cut short by a crash runs again
        with running_worker(config, tmp_path) as worker:
            if attempt == 0:
                [run_id] = publish(rabbit, names, message("bomb"))
            assert worker.process.wait(30) == -signal.SIGKILL
    with running_worker(config, tmp_path) as worker:
        [dead] = dead_letters(rabbit, names, 1)
        worker.wait_log(f"run {run_id} (job job): rejected, interrupted")
    assert header(dead, "beatd-reason") == "interrupted"
    assert f"started {MAX_STARTS} times" in header(dead, "beatd-detail")
    assert queue_counts(names.queue) == (0, 0)


WRITE_RUN_ID = """
import os, sys
with open(sys.argv[1], "a") as f:
    f.write(os.environ["BEATD_RUN_ID"] + "\\n")
"""


def test_end_to_end_beatd_run_publishes_and_beatd_worker_runs_a_command(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "runs"
    # One file for both daemons: the scheduler's jobs beside the worker's tasks.
    extra = {
        "state": str(tmp_path / "state.db"),
        "jobs": {"e2e": {"every": "1s", "task": "e2e.write"}},
    }
    tasks = {"e2e.write": {"command": python_command(WRITE_RUN_ID, str(out))}}
    config = worker_file(tmp_path, names, tasks, extra=extra)
    with running_worker(config, tmp_path) as worker:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_file(out)
            wait_until(lambda: len(out.read_text().splitlines()) >= 2, what="two runs")
        finally:
            scheduler.send_signal(signal.SIGTERM)
            _, err = scheduler.communicate(timeout=30)
        assert scheduler.returncode == 0, err
        worker.wait_log("succeeded", count=2)
    ids = out.read_text().splitlines()
    assert all(i.startswith("e2e@") and i.endswith("Z") for i in ids)
    assert len(set(ids)) == len(ids)  # each slot ran once
    events_seen = [json.loads(m.body)["event"] for m in rabbit.drain(names.events_queue)]
    assert events_seen.count("succeeded") >= 2


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_run_that_ends_while_the_broker_is_away_is_settled_once_it_is_back(
    outcome: str, tmp_path: Path, rabbit: Rabbit, names: Names, proxy: TcpProxy
) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    script = (
        f"touch {started}; while [ ! -e {go} ]; do sleep 0.02; done; echo ran >> {tmp_path / 'ran'}"
    )
    if outcome == "failed":
        script += "; exit 3"
    config = worker_file(tmp_path, names, {"t": {"command": ["/bin/sh", "-c", script]}})
    config.write_text(config.read_text().replace(AMQP_URL, proxy.url))
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("t"))
        wait_until(started.exists, what="the run to start")
        proxy.cut()
        worker.wait_log("lost the broker connection")
        go.touch()  # it finishes with nobody to tell
        worker.wait_log(f"run {run_id} (job job): {outcome}")
        proxy.restore()
        worker.wait_log("connected to", count=2)
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="the message settled")
        assert worker.stop() == 0
        log = worker.log()
    assert (tmp_path / "ran").read_text() == "ran\n"  # once, though delivered twice
    assert rabbit.depth(names.dlq) == (1 if outcome == "failed" else 0)
    assert f"run {run_id} (job job): duplicate" in log


def test_a_run_that_failed_before_a_restart_is_dead_lettered_after_it_not_run_again(
    tmp_path: Path, rabbit: Rabbit, names: Names, proxy: TcpProxy
) -> None:
    ran, started, go = tmp_path / "ran", tmp_path / "started", tmp_path / "go"
    script = f"touch {started}; while [ ! -e {go} ]; do sleep 0.02; done; echo ran >> {ran}; exit 3"
    config = worker_file(tmp_path, names, {"t": {"command": ["/bin/sh", "-c", script]}})
    config.write_text(config.read_text().replace(AMQP_URL, proxy.url))
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("t"))
        wait_until(started.exists, what="the run to start")
        proxy.cut()
        worker.wait_log("lost the broker connection")
        go.touch()
        worker.wait_log(f"run {run_id} (job job): failed")  # its dead letter cannot be sent
        worker.signal(signal.SIGTERM)
        worker.wait_log("stopping: taking no new runs")
        worker.signal(signal.SIGTERM)  # do not wait for the broker: stop now
        assert worker.process.wait(30) == 1
    proxy.restore()
    with running_worker(config, tmp_path) as worker:
        [dead] = dead_letters(rabbit, names, 1)
        worker.wait_log(f"run {run_id} (job job): settling what finished before a restart")
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="the message settled")
    assert ran.read_text() == "ran\n"  # failed once, and was not run again
    assert header(dead, "beatd-reason") == "failed"
    assert header(dead, "beatd-detail") == "exit status 3"


def test_a_worker_killed_by_sigkill_takes_its_running_command_with_it(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    # Issue 9 item 17: the restarted worker would start the same run beside the orphan.
    marker, started = unique_sleep(), tmp_path / "started"
    script = f"touch {started}; exec sleep {marker}"
    tasks = {"slow": {"command": ["/bin/sh", "-c", script], "timeout": "2m"}}
    config = worker_file(tmp_path, names, tasks)
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, message("slow"))
        wait_for_file(started)
        wait_until(lambda: running_with(marker), 5, "the command to run")
        worker.process.kill()
        worker.process.wait(10)
    wait_until(lambda: not running_with(marker), 5, "the command to die with its worker")
