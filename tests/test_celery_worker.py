"""`format: celery` against the real thing: a stock Celery worker subprocess on the real
RabbitMQ runs what beatd publishes, discards what expired, and sees a re-published slot under
the same task id. Each test has its own queue; workers are killed and queues deleted at
teardown, also when the test fails."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from beatd.compat.celery_codec import celery_message, task_id
from beatd.core.config import Job, parse_config
from beatd.core.messages import Outgoing, Run
from tests.rabbit import AMQP_URL, Rabbit, wait_until

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent
TASK = "beatd_tests.record"
START_TIMEOUT_S = 90.0  # a cold Celery import on a loaded 2-core machine is slow, not broken
RUN_TIMEOUT_S = 60.0


@dataclass
class Worker:
    queue: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM, then after grace_s SIGKILL to the process group it leads."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


@pytest.fixture
def start_worker(rabbit: Rabbit, tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    """Start `celery worker` on a queue; every worker started is stopped at teardown, before
    `rabbit` deletes the queue and the direct exchange Celery declares under the same name."""
    started: list[Worker] = []

    def start(queue: str) -> Worker:
        rabbit.queues.append(queue)
        rabbit.exchanges.append(queue)
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tests.celery_app.worker_app", "worker",
                 "--pool=solo", "-Q", queue, "-n", f"{queue}@%h", "--without-gossip",
                 "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
                cwd=ROOT,
                env={**os.environ, "BEATD_TEST_CELERY_BROKER": AMQP_URL},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        worker = Worker(queue, log, process)
        started.append(worker)
        wait_until(
            lambda: " ready." in worker.log_text() or process.poll() is not None,
            timeout=START_TIMEOUT_S,
            what=f"celery worker on {queue} to be ready",
        )
        if process.poll() is not None:
            pytest.fail(f"celery worker exited with {process.returncode}:\n{worker.log_text()}")
        return worker

    try:
        yield start
    finally:
        for worker in started:
            # Celery's warm shutdown of an idle worker takes up to ~10 s (its event loop only
            # then notices); nothing is in flight by now, so it need not finish.
            stop(worker.process, grace_s=3.0)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Other subprocesses a test starts (`beatd run`); stopped at teardown whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            stop(process)


def celery_job(queue: str, out: Path, **more: Any) -> Job:
    body = {
        "every": "1m",
        "task": TASK,
        "format": "celery",
        "queue": queue,
        "args": [str(out), 1, "two"],
        "kwargs": {"three": 3.5, "four": [4]},
        **more,
    }
    job = parse_config(json.dumps({"jobs": {"record": body}}), "test.yaml", {}).job("record")
    assert job is not None
    return job


def ensure_queue(connection: Any, queue: str) -> None:
    """How a publisher must make sure of Celery's queue: passively, so a queue the workers
    declared with arguments (quorum, x-max-priority) is taken as it is; only if it is missing,
    create it exactly as Celery does (durable, no arguments, bound to a direct exchange of the
    same name), so the workers' own declaration later matches instead of failing with 406."""
    try:
        connection.channel().queue_declare(queue, passive=True)
        return
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
    channel = connection.channel()
    channel.exchange_declare(queue, "direct", durable=True)
    channel.queue_declare(queue, durable=True, arguments=None)
    channel.queue_bind(queue, queue, routing_key=queue)
    channel.close()


def publish(*messages: Outgoing) -> None:
    """Publish built messages with plain pika: persistent, mandatory, confirmed one by one."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for out in messages:
            if out.queue:
                ensure_queue(connection, out.queue)
            p = out.properties
            channel.basic_publish(
                out.exchange,
                out.routing_key,
                out.body,
                pika.BasicProperties(
                    content_type=p.content_type,
                    content_encoding=p.content_encoding,
                    delivery_mode=p.delivery_mode,
                    priority=p.priority,
                    correlation_id=p.correlation_id,
                    message_id=p.message_id,
                    app_id=p.app_id,
                    timestamp=p.timestamp,
                    expiration=p.expiration,
                    headers=dict(p.headers),
                ),
                mandatory=True,
            )
    finally:
        connection.close()


def records(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]


def wait_for_records(out: Path, count: int, worker: Worker) -> list[dict[str, Any]]:
    def enough() -> bool:
        if worker.process.poll() is not None:
            pytest.fail(f"the celery worker died:\n{worker.log_text()}")
        return len(records(out)) >= count

    wait_until(enough, timeout=RUN_TIMEOUT_S, what=f"{count} run(s) recorded in {out}")
    return records(out)


def test_a_stock_celery_worker_runs_what_beatd_run_publishes_with_args_and_kwargs(
    rabbit: Rabbit,
    start_worker: Callable[[str], Worker],
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    queue = rabbit.name("celery")
    worker = start_worker(queue)  # declares the queue first; beatd's own declaration must match
    out = tmp_path / "runs.jsonl"
    exchange = rabbit.name("beatd")  # beatd declares its own exchange even if nothing uses it
    rabbit.exchanges.append(exchange)
    schedule = tmp_path / "beatd.yaml"
    schedule.write_text(
        json.dumps(
            {
                "state": str(tmp_path / "state.db"),
                "broker": {"url": AMQP_URL, "exchange": exchange},
                "jobs": {
                    "record": {
                        "every": "1s",
                        "task": TASK,
                        "format": "celery",
                        "queue": queue,
                        "args": [str(out), 1, "two"],
                        "kwargs": {"three": 3.5, "four": [4]},
                    }
                },
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATD_")}
    with (tmp_path / "beatd.log").open("wb") as log:
        beatd = subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(schedule)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes.append(beatd)

    [first, *_] = wait_for_records(out, 1, worker)
    stop(beatd)
    assert beatd.returncode == 0, (tmp_path / "beatd.log").read_text()
    assert first["args"] == [1, "two"]
    assert first["kwargs"] == {"three": 3.5, "four": [4]}
    assert first["periodic_task_name"] == "record"
    assert first["delivery_info"] == {"exchange": "", "routing_key": queue}
    job = parse_config(schedule.read_text(), str(schedule), {}).job("record")
    assert job is not None
    slot = datetime.fromisoformat(first["scheduled_at"])
    assert first["id"] == first["root_id"] == task_id(Run(job, slot))


def test_celery_itself_discards_an_expired_run_without_running_it(
    rabbit: Rabbit, start_worker: Callable[[str], Worker], tmp_path: Path
) -> None:
    queue = rabbit.name("celery")
    worker = start_worker(queue)
    expired_out, marker_out = tmp_path / "expired.jsonl", tmp_path / "marker.jsonl"
    now = datetime.now(UTC)
    stale = Run(celery_job(queue, expired_out, expires="1m"), now - timedelta(minutes=5))
    built = celery_message(stale, now, "beatd")
    # Without the per-message TTL RabbitMQ would drop it first: this checks the worker's own
    # reading of the `expires` header.
    expired = replace(built, properties=replace(built.properties, expiration=None))
    marker = celery_message(Run(celery_job(queue, marker_out), now), now, "beatd")
    publish(expired, marker)

    wait_for_records(marker_out, 1, worker)  # one queue, one solo worker: in order
    discarded = f"Discarding revoked task: {TASK}[{task_id(stale)}]"
    wait_until(lambda: discarded in worker.log_text(), timeout=RUN_TIMEOUT_S, what=discarded)
    assert not expired_out.exists()


def test_an_expired_run_as_built_with_its_ttl_never_runs(
    rabbit: Rabbit, start_worker: Callable[[str], Worker], tmp_path: Path
) -> None:
    queue = rabbit.name("celery")
    worker = start_worker(queue)
    expired_out, marker_out = tmp_path / "expired.jsonl", tmp_path / "marker.jsonl"
    now = datetime.now(UTC)
    stale = Run(celery_job(queue, expired_out, expires="1m"), now - timedelta(minutes=5))
    expired = celery_message(stale, now, "beatd")
    assert expired.properties.expiration == "0"
    marker = celery_message(Run(celery_job(queue, marker_out), now), now, "beatd")
    publish(expired, marker)

    wait_for_records(marker_out, 1, worker)
    assert not expired_out.exists()


def test_a_republished_slot_reaches_the_worker_with_the_same_task_id(
    rabbit: Rabbit, start_worker: Callable[[str], Worker], tmp_path: Path
) -> None:
    queue = rabbit.name("celery")
    worker = start_worker(queue)
    out = tmp_path / "runs.jsonl"
    slot = datetime.now(UTC).replace(second=0, microsecond=0)
    run = Run(celery_job(queue, out), slot)
    # As after a crash between the broker's confirm and recording the slot: built again later.
    publish(celery_message(run, slot, "beatd"))
    publish(celery_message(run, slot + timedelta(seconds=30), "beatd"))

    first, second = wait_for_records(out, 2, worker)
    assert first["id"] == second["id"] == task_id(run)


def test_a_queue_beatd_creates_before_any_worker_runs_is_one_celery_then_consumes(
    rabbit: Rabbit, start_worker: Callable[[str], Worker], tmp_path: Path
) -> None:
    queue = rabbit.name("celery")
    rabbit.queues.append(queue)
    rabbit.exchanges.append(queue)
    out = tmp_path / "runs.jsonl"
    now = datetime.now(UTC)
    publish(celery_message(Run(celery_job(queue, out), now), now, "beatd"))
    assert rabbit.depth(queue) == 1

    # Celery's worker declares the queue (and its exchange, and the binding) itself: with
    # different arguments that would be a 406 and the worker would not start.
    worker = start_worker(queue)
    [record] = wait_for_records(out, 1, worker)
    assert record["args"] == [1, "two"]
