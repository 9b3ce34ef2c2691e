"""The run history: the scheduler's events (batched, fire and forget), folded with the
worker's into one row per run; read back from a real stream after a real worker ran jobs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest

from beatd.core import history, plan
from beatd.core.config import HistoryConfig, parse_config
from beatd.core.errors import ConfigError
from beatd.core.ports import Outcome
from beatd.history import read_events
from beatd.scheduler.history import HistorySink
from tests.clock import utc
from tests.fakebroker import Queue
from tests.rabbit import AMQP_URL, Rabbit
from tests.steps import Beat, driven, quiet, schedule
from tests.workerutil import Names, python_command, running_worker, wait_for_file, worker_file

T0 = utc(2026, 11, 21, 5, 30)
RUN = "nightly@20261121T053000Z"


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "job": "nightly", "run_id": RUN, **fields}


def test_a_run_is_one_row_joining_the_scheduler_and_the_worker() -> None:
    [row] = history.fold(
        [
            ev("published", scheduled_at="2026-11-21T05:30:00Z",
               published_at="2026-11-21T05:30:00.004Z", lateness_s=0.004),
            ev("started", attempt=1, worker="host1:42"),
            ev("succeeded", attempt=1, worker="host1:42", duration_s=1.5),
        ]
    )  # fmt: skip
    assert row.as_json() == {
        "run_id": RUN, "job": "nightly", "scheduled_at": "2026-11-21T05:30:00Z",
        "published_at": "2026-11-21T05:30:00.004Z", "lateness_s": 0.004,
        "outcome": "succeeded", "duration_s": 1.5, "worker": "host1:42", "attempts": 1,
        "missed": 0,
    }  # fmt: skip
    assert history.table([row])[1].split() == [
        "2026-11-21", "05:30:00", "2026-11-21", "05:30:00", "0.004s", "succeeded", "1.500s",
        "host1:42", "nightly",
    ]  # fmt: skip


def test_retries_dead_letters_missed_and_unroutable_runs_read_as_such() -> None:
    rows = history.fold(
        [
            ev("failed", retry_in_s=10, duration_s=0.1),
            {"event": "missed", "job": "a", "run_id": "a@1", "count": 3},
            {"event": "unroutable", "job": "b", "run_id": "b@1"},
            ev("timed_out", duration_s=5.0),
            ev("duplicate"),  # a second copy after the end: the outcome stands
        ]
    )
    assert [(r.run_id, r.outcome) for r in rows] == [
        (RUN, "timed_out, dead-lettered"),
        ("a@1", "missed (3 slots, not published)"),
        ("b@1", "unroutable (no queue)"),
    ]
    assert [r.job for r in history.fold([ev("started"), {**ev("started"), "job": "x"}], "x")] == [
        "x"
    ]


def test_markers_and_foreign_messages_on_the_stream_are_ignored() -> None:
    assert history.decode(history.MARKER_TYPE, b"") == []
    assert history.decode("beatd.started", b"not json") == []
    assert history.decode("beatd.started", b'{"no": "event"}') == []
    assert history.decode(history.SCHEDULER_TYPE, b'{"events": [1, {"run_id": "a"}]}') == [
        {"run_id": "a"}
    ]


def test_history_settings_are_checked() -> None:
    config = parse_config("history:\n  max_age: 7D\njobs: {}\n", "b.yaml", {})
    assert config.history == HistoryConfig(max_age="7D")
    assert parse_config("jobs: {}\n", "b.yaml", {}).history is None
    with pytest.raises(ConfigError) as caught:
        parse_config("history:\n  max_age: 30 days\n", "b.yaml", {})
    assert "b.yaml:2: history: max_age: give a number and Y, M, D, h, m or s" in str(
        caught.value.problems[0]
    )


@driven
async def test_a_burst_goes_to_the_events_exchange_in_batches_and_waits_out_an_outage() -> None:
    count = history.BATCH_RUNS + 1
    jobs = "".join(f"  j{i:04}:\n    every: 1m\n    task: t.x\n" for i in range(count))
    beat = Beat(schedule(jobs), T0 - timedelta(seconds=1))
    beat.broker.queues["q"] = Queue("q", {})
    beat.broker.bindings.add(("beatd", "q", "#"))
    scheduler = await beat.start()
    sink = HistorySink(HistoryConfig(exchange="ev", stream="st"), lambda: scheduler.link)
    scheduler.report.sinks.append(sink)
    await beat.step(T0)
    await quiet()
    stream = beat.broker.queues["st"]
    assert stream.arguments == {"x-queue-type": "stream", "x-max-age": "30D"}
    bodies = [json.loads(m.body)["events"] for m in stream.ready]
    assert [len(b) for b in bodies] == [history.BATCH_RUNS, 1]
    first = bodies[0][0]
    assert (first["event"], first["run_id"], first["lateness_s"]) == (
        "published",
        "j0000@20261121T053000Z",
        0.0,
    )
    beat.broker.stop()  # the broker goes: events wait in order, then go on the next step
    await quiet()
    job = beat.config.jobs[0]
    one = [plan.plan_job(job, plan.fresh_state(job, T0, None), T0 + timedelta(minutes=1))]
    sink.step(one, [Outcome.CONFIRMED], T0 + timedelta(minutes=1))
    await quiet()
    assert (len(stream.ready), len(sink.pending)) == (2, 1)
    beat.broker.start()
    await quiet()
    sink.step(one, [Outcome.UNROUTABLE], T0 + timedelta(minutes=1))
    await quiet()
    assert [json.loads(m.body)["events"][0]["event"] for m in list(stream.ready)[2:]] == [
        "published",
        "unroutable",
    ]


def test_history_is_read_back_after_a_real_worker_ran_the_jobs(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    names = Names.fresh(rabbit)
    stream = f"{names.events}.history"
    rabbit.queues.append(stream)
    out = tmp_path / "runs"
    code = "import json, sys; open(sys.argv[1], 'a').write(json.load(sys.stdin)['id'] + '\\n')"
    extra = {
        "state": str(tmp_path / "state.db"),
        "history": {"exchange": names.events, "stream": stream, "max_age": "1h"},
        "jobs": {
            "tick": {"every": "1s", "task": "tick.write"},
            "lonely": {"every": "1s", "task": "nobody.listens", "routing_key": "none"},
        },
    }
    tasks = {"tick.write": {"command": python_command(code, str(out))}}
    config = worker_file(tmp_path, names, tasks, extra=extra, bindings=["tick.#"])
    with running_worker(config, tmp_path) as worker:
        beat = subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_file(out)
            deadline = datetime.now(UTC) + timedelta(seconds=20)
            while len(out.read_text().split()) < 2 and datetime.now(UTC) < deadline:
                asyncio.run(asyncio.sleep(0.1))
        finally:
            beat.send_signal(signal.SIGTERM)
            _, err = beat.communicate(timeout=30)
        assert beat.returncode == 0, err
        assert worker.stop() == 0, worker.log
    ran = out.read_text().split()
    done = subprocess.run(
        [sys.executable, "-m", "beatd", "history", "-c", str(config), "--json", "--since", "5m"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = {row["run_id"]: row for row in json.loads(done.stdout)}
    for run_id in ran:
        row = rows[run_id]
        assert row["outcome"] == "succeeded", row
        slot = datetime.strptime(run_id.split("@")[1], "%Y%m%dT%H%M%SZ")
        assert row["scheduled_at"] == f"{slot:%Y-%m-%dT%H:%M:%S}Z"
        assert row["published_at"] is not None and row["lateness_s"] is not None
        assert row["duration_s"] is not None and ":" in row["worker"]
    lonely = [row for row in rows.values() if row["job"] == "lonely"]
    assert lonely and {row["outcome"] for row in lonely} == {"unroutable (no queue)"}
    text = subprocess.run(
        [sys.executable, "-m", "beatd", "history", "-c", str(config), "tick"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text.stdout.splitlines()[0].split()[:4] == [
        "SCHEDULED", "(UTC)", "PUBLISHED", "LATE"
    ]  # fmt: skip
    assert all(line.endswith("tick") for line in text.stdout.splitlines()[1:])


def test_reading_ten_thousand_events_returns_the_newest_up_to_the_limit(
    rabbit: Rabbit, tmp_path: Path
) -> None:
    stream = rabbit.name("stream")
    rabbit.queues.append(stream)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
        for i in range(10_000):
            body = json.dumps({"event": "succeeded", "job": "j", "run_id": f"j@{i}"})
            channel.basic_publish("", stream, body.encode())
    finally:
        connection.close()
    path = tmp_path / "b.yaml"
    path.write_text(f"broker:\n  url: {AMQP_URL}\nhistory:\n  stream: {stream}\njobs: {{}}\n")
    config = parse_config(path.read_text(), str(path), {})
    since = datetime.now(UTC) - timedelta(hours=1)
    events, read = asyncio.run(read_events(config, since, limit=9_000))
    assert read == 10_001, "every event and the marker"
    assert [e["run_id"] for e in events[:2]] == ["j@1000", "j@1001"]
    assert len(events) == 9_000 and events[-1]["run_id"] == "j@9999"


def test_the_schedulers_slot_wins_when_the_workers_event_came_first() -> None:
    [row] = history.fold(
        [
            ev("started", scheduled_at="2026-11-21T05:30:00.000Z", worker="h:1"),
            ev("published", scheduled_at="2026-11-21T05:30:00Z", lateness_s=0.01),
            ev("succeeded", duration_s=2.0, worker="h:1"),
        ]
    )
    assert (row.scheduled_at, row.outcome, row.lateness_s) == (
        "2026-11-21T05:30:00Z",
        "succeeded",
        0.01,
    )
