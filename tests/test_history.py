"""The run history: the scheduler's events (batched, fire and forget), folded with the
worker's into one row per run; read back from a real stream after a real worker ran jobs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika
import pytest

from beatd.core import history, plan
from beatd.core.config import HistoryConfig, parse_config
from beatd.core.errors import ConfigError
from beatd.core.ports import Outcome
from beatd.history import Read, read_events
from beatd.scheduler.history import HistorySink
from tests.clock import utc
from tests.fakebroker import Queue
from tests.rabbit import AMQP_URL, Rabbit, wait_until
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


def test_the_last_outcome_is_each_jobs_newest_run_as_history_says_it() -> None:
    def at(minute: int) -> dict[str, str]:
        return {"scheduled_at": f"2026-11-21T05:{minute:02}:00Z"}

    rows = history.fold(
        [
            {"event": "published", "job": "a", "run_id": "a@1", **at(1)},
            {"event": "succeeded", "job": "a", "run_id": "a@1", **at(1)},
            {
                "event": "failed",
                "job": "b",
                "run_id": "b@1",
                "scheduled_at": "2026-11-21T05:01:00.000Z",
            },
            {"event": "published", "job": "a", "run_id": "a@2", **at(2)},  # no worker has it yet
            {"event": "started", "job": "c", "run_id": "c@1"},  # no slot: the last seen
            {"event": "succeeded", "job": "b", "run_id": "b@0", **at(0)},  # older, seen last
        ]
    )
    assert history.last_outcomes(rows) == {
        "a": "published",
        "b": "failed, dead-lettered",
        "c": "started",
    }


def test_a_read_has_a_short_repr_as_asyncio_run_formats_its_result() -> None:
    read = Read([{"event": "succeeded"}] * 10_000, 10_001)
    assert repr(read) == "Read(10000 events, 10001 messages)"


def test_events_older_than_since_are_told_by_their_own_times() -> None:
    since = history.since_text(T0)
    assert since == "2026-11-21T05:30:00"
    assert history.is_since({"at": "2026-11-21T05:30:00.000Z"}, since)
    assert not history.is_since({"at": "2026-11-21T05:29:59.999Z"}, since)
    assert history.is_since({"published_at": "2026-11-21T06:00:00.004Z"}, since)
    assert not history.is_since({"published_at": "2026-11-20T06:00:00.004Z"}, since)
    assert history.is_since({"event": "missed", "published_at": None}, since)  # no time: kept


def test_markers_and_foreign_messages_on_the_stream_are_ignored() -> None:
    assert history.decode(history.MARKER_TYPE, b"") == []
    assert history.decode("beatd.started", b"not json") == []
    assert history.decode("beatd.started", b"\xff not utf-8") == []
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


def beatd(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beatd", *argv, "-c", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_history_and_last_outcomes_are_read_back_after_a_real_worker_ran_the_jobs(
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
            # Triggered once each, so their last outcomes hold still once the worker is done.
            "once-ok": {"at": "2099-01-01T00:00:00Z", "task": "tick.ok"},
            "once-bad": {"at": "2099-01-01T00:00:00Z", "task": "tick.fail"},
        },
    }
    tasks = {
        "tick.write": {"command": python_command(code, str(out))},
        "tick.ok": {"command": python_command("pass")},
        "tick.fail": {"command": python_command("import sys; sys.exit(3)")},
    }
    final = {"once-ok": "succeeded", "once-bad": "failed, dead-lettered"}
    status: dict[str, Any] = {}

    def settled() -> bool:
        done = beatd(config, "status", "--json")
        status.update(json.loads(done.stdout) if done.returncode == 0 else {})
        last = {job["job"]: job.get("last_outcome") for job in status.get("jobs", ())}
        return all(last.get(job) == outcome for job, outcome in final.items())

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
            for job in final:
                assert beatd(config, "trigger", job).returncode == 0
            wait_until(settled, 60, "beatd status to show the one-off jobs' outcomes")
            # Two ticks at least, so that history shows several runs of one job (on a fast
            # machine the rest can be over within the first second).
            wait_until(lambda: len(out.read_text().split()) >= 2, 30, "a second tick to run")
            assert status["history"].startswith("history: last outcomes from the newest ")
            last = {job["job"]: job["last_outcome"] for job in status["jobs"]}
            assert last["lonely"] == "unroutable (no queue)"
            text = beatd(config, "status").stdout.splitlines()
            assert text[2].startswith("history: last outcomes from the newest ")
            head = text.index(next(line for line in text if line.startswith("JOB")))
            assert re.split(r"\s{2,}", text[head])[-3:] == ["UNROUTABLE", "LAST OUTCOME", "PAUSED"]
            assert any("  failed, dead-lettered  " in line for line in text[head + 1 :])
        finally:
            beat.send_signal(signal.SIGTERM)
            _, err = beat.communicate(timeout=30)
        assert beat.returncode == 0, err
        assert worker.stop() == 0, worker.log
    ran = out.read_text().split()
    assert len(ran) >= 2
    done = beatd(config, "history", "--json", "--since", "5m")
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
    text = beatd(config, "history", "tick")
    assert text.stdout.splitlines()[0].split()[:4] == [
        "SCHEDULED", "(UTC)", "PUBLISHED", "LATE"
    ]  # fmt: skip
    assert all(line.endswith("tick") for line in text.stdout.splitlines()[1:])
    listed = beatd(config, "list")
    assert listed.returncode == 0 and listed.stderr == ""
    lines = listed.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0])[:4] == ["NEXT (UTC)", "LEFT", "LAST", "LAST OUTCOME"]
    rows = {cells[4]: cells[3] for cells in (re.split(r"\s{2,}", line) for line in lines[1:5])}
    assert rows == {
        "tick": rows["tick"],  # its newest run may not have been taken before the worker went
        "lonely": "unroutable (no queue)",
        **final,
    }
    assert lines[-2] == f"state: {tmp_path / 'state.db'}"
    assert re.fullmatch(
        rf"history: last outcomes from the newest \d+ events on '{stream}'", lines[-1]
    )


def test_a_read_is_bounded_by_the_limit_not_by_what_the_stream_holds(
    rabbit: Rabbit, tmp_path: Path
) -> None:
    stream = rabbit.name("stream")
    rabbit.queues.append(stream)
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    path = tmp_path / "b.yaml"
    path.write_text(f"broker:\n  url: {AMQP_URL}\nhistory:\n  stream: {stream}\njobs: {{}}\n")
    config = parse_config(path.read_text(), str(path), {})
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
        empty = asyncio.run(read_events(config, None, limit=100, exact=False))
        assert (empty.events, empty.messages) == ([], 0)  # no last chunk comes: nothing to read
        for i in range(10_000):
            at = {"at": old} if i < 5_000 else {}  # the first half from two hours ago
            body = json.dumps({"event": "succeeded", "job": "j", "run_id": f"j@{i}", **at})
            channel.basic_publish("", stream, body.encode())
    finally:
        connection.close()

    def read(since: datetime | None, limit: int, *, exact: bool = True) -> tuple[list[str], int]:
        got = asyncio.run(read_events(config, since, limit=limit, exact=exact))
        return [e["run_id"] for e in got.events], got.messages

    runs, messages = read(None, 100, exact=False)  # list and status: no marker written
    assert runs == [f"j@{i}" for i in range(9_900, 10_000)]
    assert messages < 5_000, "the last 100, and the stream's last chunk"
    runs, messages = read(None, 100)
    assert runs == [f"j@{i}" for i in range(9_900, 10_000)]
    assert messages == 101, "the newest 100 and the marker: the older ones are never read"
    runs, messages = read(None, 9_000)  # and the first marker is one of the newest now
    assert (runs[0], runs[-1], len(runs), messages) == ("j@1001", "j@9999", 8_999, 9_001)
    runs, _ = read(datetime.now(UTC) - timedelta(hours=1), 9_000)
    assert (runs[0], runs[-1], len(runs)) == ("j@5000", "j@9999", 5_000), "older by their times"
    assert asyncio.run(read_events(config, None, limit=10)).messages == 11  # 2 markers so far
    # --since later than the newest `limit` messages begin: read from there, found by the
    # broker's own timestamps (whole seconds), the rest not even read.
    since = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    time.sleep((since - datetime.now(UTC)).total_seconds() + 0.2)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        now = datetime.now(UTC).isoformat()
        for i in range(10):
            body = json.dumps({"event": "succeeded", "job": "j", "run_id": f"new@{i}", "at": now})
            channel.basic_publish("", stream, body.encode())
    finally:
        connection.close()
    runs, messages = read(since, 9_000)
    assert runs == [f"new@{i}" for i in range(10)]
    assert messages <= 12, "the 10, the marker, perhaps the chunk before --since"


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
