"""`beatd worker` as a real process against the real RabbitMQ: each kind of task, parallel
runs, every path to the dead-letter queue, retries, events, dedupe across a restart,
reloads, startup errors, and what it tells systemd."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml

from tests.rabbit import Rabbit, rabbitmqctl, wait_until
from tests.workerutil import (
    ROOT,
    Names,
    WorkerProcess,
    dead_letters,
    events,
    header,
    message,
    publish,
    python_command,
    queue_counts,
    running_worker,
    wait_for_file,
    worker_file,
)

WRITE = """
import json, os, sys
out = sys.argv[1]
with open(out + ".tmp", "w") as f:
    json.dump({"argv": sys.argv[2:], "stdin": json.loads(sys.stdin.read()),
               "env": {k: v for k, v in os.environ.items() if k.startswith("BEATD_")}}, f)
os.rename(out + ".tmp", out)
"""


@pytest.fixture
def names(rabbit: Rabbit) -> Names:
    return Names.fresh(rabbit)


def test_a_command_task_runs_with_args_stdin_and_env_and_its_message_is_acked(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "out.json"
    task = {"command": python_command(WRITE, str(out)), "args": "append"}
    config = worker_file(tmp_path, names, {"reports.nightly": task})
    with running_worker(config, tmp_path) as worker:
        body = message("reports.nightly", job="nightly", args=[30, "x"], kwargs={"dry_run": False})
        [run_id] = publish(rabbit, names, body)
        shown = json.loads(wait_for_file(out))
        worker.wait_log(f"run {run_id} (job nightly): succeeded")
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="the message acked")
    assert shown["argv"] == ["--", "30", "x"]
    assert shown["stdin"] == body
    assert shown["env"] == {
        "BEATD_JOB": "nightly",
        "BEATD_TASK": "reports.nightly",
        "BEATD_RUN_ID": run_id,
        "BEATD_SCHEDULED_AT": "2026-11-21T05:30:00Z",
        "BEATD_ATTEMPT": "1",
    }
    assert rabbit.depth(names.dlq) == 0


def test_a_call_task_is_called_with_args_and_kwargs(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "calls.jsonl"
    config = worker_file(tmp_path, names, {"x.record": {"call": "tests.worker_tasks:record"}})
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(
            rabbit, names, message("x.record", args=[str(out), 1], kwargs={"k": "v"})
        )
        worker.wait_log(f"run {run_id} (job job): succeeded")
        # One line a run: what the call returned is on its `succeeded` line.
        line = rf"run {re.escape(run_id)} \(job job\): succeeded in [0-9.]+s, returned 'recorded'"
        assert len(re.findall(line, worker.log())) == 1
        assert "returned" not in worker.log().replace("returned 'recorded'", "")
    assert json.loads(out.read_text()) == {"args": [1], "kwargs": {"k": "v"}}


def test_up_to_concurrency_runs_happen_at_the_same_time(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    go = tmp_path / "go"
    config = worker_file(
        tmp_path, names, {"wait": {"call": "tests.worker_tasks:wait_for"}}, concurrency=4
    )
    started = [tmp_path / f"started-{n}" for n in range(5)]
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, *(message("wait", args=[str(s), str(go)]) for s in started))
        # Four are running at once (each waits for `go`); the fifth waits for a free slot.
        wait_until(lambda: sum(s.exists() for s in started) == 4, what="4 runs in parallel")
        assert queue_counts(names.queue) == (1, 4)  # prefetch = concurrency: one still queued
        assert sum(s.exists() for s in started) == 4
        go.touch()
        wait_until(lambda: all(s.exists() for s in started), what="the fifth run")
        worker.wait_log("succeeded", count=5)
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="all acked")


REJECTIONS: dict[str, tuple[dict[str, Any], Any, str, str, str]] = {
    # case: (tasks, body or message kwargs, reason, detail fragment, event)
    "unknown task": ({}, {"task": "not.here"}, "unknown_task", "'not.here' is not in", "rejected"),
    "not json": ({}, b"\x00 not json", "malformed", "body is not JSON", "rejected"),
    "not beatd": ({}, b'{"v": 2, "id": "x"}', "malformed", "not a beatd version 1", "rejected"),
    "expired": (
        {"t": {"command": ["/bin/true"]}},
        {"task": "t", "expires_at": "2026-01-01T00:00:00Z"},
        "expired",
        "expired at 2026-01-01T00:00:00Z",
        "expired",
    ),
    "exit status": (
        {"t": {"command": ["/bin/sh", "-c", "echo oops >&2; exit 3"]}},
        {"task": "t"},
        "failed",
        "exit status 3",
        "failed",
    ),
    "exception": (
        {"t": {"call": "tests.worker_tasks:fail"}},
        {"task": "t", "args": ["boom"]},
        "failed",
        "ValueError: boom",
        "failed",
    ),
    "timeout": (
        {"t": {"command": ["/bin/sleep", "30"], "timeout": "300ms"}},
        {"task": "t"},
        "timed_out",
        "timed out after 0.3s",
        "timed_out",
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_each_rejection_lands_in_the_dead_letter_queue_with_its_reason_logged_once(
    case: str, tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    tasks, body, reason, detail, event = REJECTIONS[case]
    config = worker_file(tmp_path, names, tasks or {"other": {"command": ["/bin/true"]}})
    with running_worker(config, tmp_path) as worker:
        if isinstance(body, bytes):
            [run_id] = publish(rabbit, names, body, headers={"beatd-job": "broken"})
        else:
            [run_id] = publish(rabbit, names, message(**body))
        [dead] = dead_letters(rabbit, names, 1)
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="the original acked")
        assert worker.process.poll() is None
        log = worker.log()
    assert header(dead, "beatd-reason") == reason
    assert detail in header(dead, "beatd-detail")
    assert header(dead, "beatd-queue") == names.queue
    assert dead.properties.message_id == run_id
    assert sum(reason in line and run_id in line for line in log.splitlines()) == 1, log
    seen = [e for e in events(rabbit, names) if e["event"] == event]
    assert len(seen) == 1 and seen[0]["reason"] == reason and seen[0]["run_id"] == run_id
    assert rabbit.depth(names.dlq) == 0  # nothing requeued in a loop behind it


def test_a_failed_run_is_retried_with_its_attempt_in_a_header_and_then_succeeds(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    count = tmp_path / "count"
    flaky = f"""
import sys
from pathlib import Path
p = Path({str(count)!r}); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))
sys.exit(1 if n < 2 else 0)
"""
    tasks = {"flaky": {"command": python_command(flaky), "retries": 3, "retry_delay": "100ms"}}
    names.retry_queue(rabbit, 100)
    names.retry_queue(rabbit, 200)
    config = worker_file(tmp_path, names, tasks)
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("flaky"))
        worker.wait_log(f"run {run_id} (job job): succeeded")
        log = worker.log()
    assert count.read_text() == "3"
    assert "retry 1 of 3 in 0.1s" in log and "retry 2 of 3 in 0.2s" in log
    assert rabbit.depth(names.dlq) == 0
    # Events are fire-and-forget: the last may still be on its way when the log line is read.
    kinds = [(m.json["event"], m.json["attempt"]) for m in rabbit.wait_for(names.events_queue, 6)]
    assert kinds == [
        ("started", 1), ("failed", 1), ("started", 2), ("failed", 2),
        ("started", 3), ("succeeded", 3),
    ]  # fmt: skip


def test_a_run_that_keeps_failing_is_dead_lettered_after_its_retries(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    tasks = {"bad": {"command": ["/bin/false"], "retries": 1, "retry_delay": "100ms"}}
    names.retry_queue(rabbit, 100)
    config = worker_file(tmp_path, names, tasks)
    with running_worker(config, tmp_path):
        [run_id] = publish(rabbit, names, message("bad"))
        [dead] = dead_letters(rabbit, names, 1)
    assert header(dead, "beatd-reason") == "failed"
    assert header(dead, "beatd-attempt") == 2
    assert dead.properties.message_id == run_id


def test_events_tell_when_a_run_started_and_how_it_ended(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"hello": {"command": ["/bin/echo", "hello"]}})
    with running_worker(config, tmp_path):
        [run_id] = publish(rabbit, names, message("hello", job="greet"))
        got = rabbit.wait_for(names.events_queue, 2)
    assert [m.routing_key for m in got] == ["started.greet", "succeeded.greet"]
    done = got[1].json
    assert done["run_id"] == run_id and done["task"] == "hello" and done["exit_code"] == 0
    assert done["output"] == "hello"
    assert done["scheduled_at"] == "2026-11-21T05:30:00.000Z"
    started_at = datetime.fromisoformat(done["started_at"])
    assert started_at <= datetime.fromisoformat(done["finished_at"])
    assert done["duration_s"] >= 0


def test_a_run_id_seen_before_a_restart_is_acked_and_skipped(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "calls.jsonl"
    config = worker_file(tmp_path, names, {"rec": {"call": "tests.worker_tasks:record"}})
    body = message("rec", args=[str(out)])
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, body)
        worker.wait_log("succeeded")
        assert worker.stop() == 0
    with running_worker(config, tmp_path) as worker:
        # The scheduler crashed after the broker confirmed, and published the slot again.
        publish(rabbit, names, body)
        worker.wait_log(f"run {body['id']} (job job): duplicate, already finished")
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="the duplicate acked")
        publish(rabbit, names, message("rec", args=[str(out)]))  # a new slot still runs
        worker.wait_log("succeeded")
    assert len(out.read_text().splitlines()) == 2
    assert "duplicate" in [e["event"] for e in events(rabbit, names)]


def test_sighup_reloads_the_task_table_and_a_broken_file_keeps_the_old_one(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "calls.jsonl"
    config = worker_file(tmp_path, names, {"a": {"call": "tests.worker_tasks:record"}})
    with running_worker(config, tmp_path) as worker:
        record = {"call": "tests.worker_tasks:record"}
        worker_file(tmp_path, names, {"a": record, "b": record})
        worker.signal(signal.SIGHUP)
        worker.wait_log("reloaded")
        publish(rabbit, names, message("b", args=[str(out)]))
        worker.wait_log("succeeded")
        config.write_text(config.read_text().replace("tests.worker_tasks:record", "no_such_mod:f"))
        worker.signal(signal.SIGHUP)
        worker.wait_log("reload failed; still running the 2 tasks loaded before")
        publish(rabbit, names, message("a", args=[str(out)]))
        worker.wait_log("succeeded", count=2)
        assert "call: cannot import 'no_such_mod'" in worker.log()
    assert len(out.read_text().splitlines()) == 2


def test_an_edit_of_the_file_is_picked_up_without_a_signal(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"a": {"command": ["/bin/true"]}})
    with running_worker(config, tmp_path) as worker:
        worker_file(
            tmp_path, names, {"a": {"command": ["/bin/true"]}, "b": {"command": ["/bin/true"]}}
        )
        worker.wait_log("reloaded")
        [run_id] = publish(rabbit, names, message("b"))
        worker.wait_log(f"run {run_id} (job job): succeeded")


def start_fails(tmp_path: Path, config: Path) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "beatd", "worker", "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stderr


def test_a_file_without_tasks_cannot_start_a_worker(tmp_path: Path) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("broker:\n  exchange: x\njobs: {}\n")
    code, err = start_fails(tmp_path, config)
    assert code == 78
    assert "no tasks: a worker runs only the tasks its file defines" in err
    assert "Traceback" not in err


def test_a_callable_that_does_not_import_is_a_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("tasks:\n  a:\n    call: tests.worker_tasks:nope\n  b:\n    call: nomod:f\n")
    code, err = start_fails(tmp_path, config)
    assert code == 78
    assert f"{config}:2: task 'a': call: 'tests.worker_tasks' has no 'nope'" in err
    assert f"{config}:4: task 'b': call: cannot import 'nomod'" in err


def test_an_invalid_file_is_a_startup_error_naming_the_line(tmp_path: Path) -> None:
    config = tmp_path / "w.yaml"
    config.write_text("worker:\n  concurrency: 0\ntasks:\n  a:\n    command: /bin/true\n")
    code, err = start_fails(tmp_path, config)
    assert code == 78
    assert f"{config}:2: worker: concurrency: must be a whole number 1-1000, got int 0" in err
    assert f"{config}:5: task 'a': command: must be an argv list" in err


def test_a_quorum_queue_is_declared_as_one_and_works(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"a": {"command": ["/bin/true"]}}, queue_type="quorum")
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("a"))
        worker.wait_log(f"run {run_id} (job job): succeeded")
    types = dict(
        line.split("\t")[:2]
        for line in rabbitmqctl("list_queues", "name", "type", "--no-table-headers", "--quiet")
        .strip()
        .splitlines()
    )
    assert types[names.queue] == "quorum"


def test_systemd_hears_ready_status_watchdog_and_stopping(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"a": {"command": ["/bin/true"]}}, concurrency=2)
    with WorkerProcess(config, tmp_path, env={"WATCHDOG_USEC": "100000"}) as worker:
        worker.wait_ready()
        publish(rabbit, names, message("a"))
        wait_until(
            lambda: any("1 succeeded" in n for n in worker.poll_notifications()),
            what="a STATUS= with the run counted",
        )
        wait_until(lambda: worker.notified("WATCHDOG=1"), what="WATCHDOG=1")
        assert worker.stop() == 0
        status = [n for n in worker.poll_notifications() if n.startswith("STATUS=broker up")]
        assert status and "/2 running" in status[-1]
        assert worker.notified("STOPPING=1")


def test_an_expired_run_uses_the_message_time_not_the_queue_time(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"t": {"command": ["/bin/true"]}})
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("t", expires_at=soon))
        worker.wait_log(f"run {run_id} (job job): succeeded")


def test_the_example_worker_file_runs_every_task_the_example_schedule_names(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    example = yaml.safe_load((ROOT / "config" / "worker.yaml").read_text())
    schedule = yaml.safe_load((ROOT / "config" / "beatd.yaml").read_text())
    config = worker_file(tmp_path, names, example["tasks"])  # the example's tasks, our names
    runs = [
        message(job["task"], job=name, args=job.get("args"), kwargs=job.get("kwargs"))
        for name, job in schedule["jobs"].items()
        if job.get("enabled", True)
    ]
    assert {run["task"] for run in runs} <= set(example["tasks"])
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, *runs)
        for run in runs:
            worker.wait_log(f"run {run['id']} (job {run['job']}): succeeded")
        log = worker.log()
    assert "would delete sessions older than this many days: 30" in log
    assert rabbit.depth(names.dlq) == 0


def test_a_run_whose_ttl_passes_in_the_queue_is_dead_lettered_by_the_broker(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    config = worker_file(tmp_path, names, {"t": {"command": ["/bin/true"]}})
    with running_worker(config, tmp_path) as worker:  # declares the queue and its arguments
        assert worker.stop() == 0
    body = message("t")
    with rabbit.channel() as ch:  # as the scheduler publishes a job with `expires:`
        properties = pika.BasicProperties(message_id=body["id"], expiration="50")
        ch.basic_publish(names.exchange, "t", json.dumps(body).encode(), properties)
    [dead] = dead_letters(rabbit, names, 1)
    assert dead.properties.message_id == body["id"]
    assert header(dead, "x-first-death-reason") == "expired"
    assert header(dead, "x-first-death-queue") == names.queue
