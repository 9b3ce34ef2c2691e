"""`beatd history` against the real RabbitMQ on 127.0.0.1:5672: how long reading the newest
10,000 events of a stream takes (connect, marker, consume from --since, fold into rows).

    .venv/bin/python bench/history_bench.py [EVENTS]

Fills a stream of its own with EVENTS (default 10,000) worker events of realistic size plus
scheduler batches for the same runs, reads it back three times, prints each run, deletes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatd.core import history  # noqa: E402
from beatd.core.config import parse_config  # noqa: E402
from beatd.history import read_events  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def fill(stream: str, events: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
    now = datetime.now(UTC)
    runs = [f"job{i % 100}@{(now - timedelta(seconds=i)):%Y%m%dT%H%M%SZ}" for i in range(events)]
    scheduled = [
        {"event": "published", "job": r.split("@")[0], "task": "t.x", "run_id": r,
         "trigger": "schedule", "scheduled_at": now.isoformat(), "published_at": now.isoformat(),
         "lateness_s": 0.004}
        for r in runs
    ]  # fmt: skip
    for start in range(0, events, history.BATCH_RUNS):
        body = json.dumps({"v": 1, "events": scheduled[start : start + history.BATCH_RUNS]})
        props = pika.BasicProperties(type=history.SCHEDULER_TYPE)
        channel.basic_publish("", stream, body.encode(), props)
    for run in runs:
        body = {
            "event": "succeeded", "job": run.split("@")[0], "task": "t.x", "run_id": run,
            "attempt": 1, "scheduled_at": now.isoformat(), "started_at": now.isoformat(),
            "finished_at": now.isoformat(), "duration_s": 1.25, "exit_code": 0,
            "output": "x" * 80, "reason": None, "detail": None, "retry_in_s": None,
            "queue": "beatd.tasks", "worker": "host:1234", "at": now.isoformat(),
        }  # fmt: skip
        channel.basic_publish("", stream, json.dumps(body).encode(), pika.BasicProperties())
    connection.close()


def drop(stream: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.channel().queue_delete(stream)
    connection.close()


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    stream = f"bench-history-{uuid.uuid4().hex[:8]}"
    fill(stream, events)
    config = parse_config(f"broker:\n  url: {URL}\nhistory:\n  stream: {stream}\n", "b.yaml", {})
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    try:
        for _ in range(3):
            started = time.perf_counter()
            got = asyncio.run(
                read_events(config, datetime.now(UTC) - timedelta(hours=1), limit=events)
            )
            kept, read = got.events, got.messages
            read_s = time.perf_counter() - started
            rows = history.fold(kept)
            lines = history.table(rows)
            total_s = time.perf_counter() - started
            print(
                f"read {read} messages ({len(kept)} events kept) in {read_s * 1000:.0f} ms; "
                f"{len(rows)} rows, {len(lines)} lines; total {total_s * 1000:.0f} ms"
            )
    finally:
        drop(stream)


if __name__ == "__main__":
    main()
