"""`beatd history` against the real RabbitMQ on 127.0.0.1:5672: how long reading the newest
10,000 events takes, from a stream holding 10,000 and one holding 100,000, side by side with the
reader before issue 11's bounded read (everything since --since, a Delivery per message).

    .venv/bin/python bench/history_bench.py [SMALL [BIG]]

Fills two streams of its own with SMALL (default 10,000) and BIG (default 100,000) worker events
of realistic size plus the scheduler's batches for the same runs, reads each back three times
with each reader in turn (and once as `beatd list` does for its last outcomes), prints the
median wall and CPU time of each, and deletes the streams. The machine is shared: compare the
columns of one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pika

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatd.core import history  # noqa: E402
from beatd.core.config import Config, HistoryConfig, parse_config  # noqa: E402
from beatd.core.messages import Properties  # noqa: E402
from beatd.core.ports import Delivery  # noqa: E402
from beatd.history import OUTCOME_WINDOW, read_events  # noqa: E402
from beatd.runtime.rabbitmq import one_shot  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
LIMIT = 10_000
REPEATS = 3


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
        props = pika.BasicProperties(
            type="beatd.succeeded", headers={"beatd-job": body["job"], "beatd-event": "succeeded"}
        )
        channel.basic_publish("", stream, json.dumps(body).encode(), props)
    connection.close()


def drop(stream: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.channel().queue_delete(stream)
    connection.close()


async def read_before(config: Config, since: datetime, *, limit: int) -> tuple[int, int]:
    """The reader as it was before the bounded read: every message since `since`, through
    Channel.consume (a Delivery and Properties per message), newest `limit` events kept."""
    stream = (config.history or HistoryConfig()).stream
    link = await one_shot(config.broker, name="history-before")
    try:
        channel = await link.channel(0)
        marker = f"marker-{uuid.uuid4()}"
        await channel.send("", stream, b"", Properties(message_id=marker, type=history.MARKER_TYPE))
        kept: deque[dict[str, Any]] = deque(maxlen=limit)
        done = asyncio.get_running_loop().create_future()
        read = 0

        def on_message(delivery: Delivery) -> None:
            nonlocal read
            read += 1
            props = delivery.properties
            ours = props.type == history.MARKER_TYPE and props.message_id == marker
            if ours or read % 500 == 0:
                delivery.channel.settle(delivery.delivery_tag, ack=True, multiple=True)
            if ours:
                if not done.done():
                    done.set_result(None)
                return
            kept.extend(history.decode(props.type or "", delivery.body))

        await channel.consume(
            stream, on_message, prefetch=2000, arguments={"x-stream-offset": since}
        )
        await asyncio.wait_for(done, 120)
        return len(kept), read
    finally:
        await link.close()


async def read_now(config: Config, since: datetime, *, limit: int) -> tuple[int, int]:
    got = await read_events(config, since, limit=limit)
    return len(got.events), got.messages


async def read_outcomes(config: Config, _since: datetime, *, limit: int) -> tuple[int, int]:
    got = await read_events(config, None, limit=OUTCOME_WINDOW, exact=False)
    return len(got.events), got.messages


Reader = Callable[..., Any]


def timed(reader: Reader, config: Config) -> tuple[float, float, int, int]:
    since = datetime.now(UTC) - timedelta(hours=1)
    wall, cpu = time.perf_counter(), time.process_time()
    kept, read = asyncio.run(reader(config, since, limit=LIMIT))
    return time.perf_counter() - wall, time.process_time() - cpu, kept, read


def json_decoding() -> str:
    """json.loads(bytes) against history.decode's str decode, on 10,000 worker events."""
    body = json.dumps({"event": "succeeded", "run_id": "j@1", "output": "x" * 80}).encode()
    started = time.perf_counter()
    for _ in range(10_000):
        json.loads(body)
    loads = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(10_000):
        history.decode("beatd.succeeded", body)
    ours = time.perf_counter() - started
    return f"json.loads(bytes) {loads * 1000:.0f} ms, history.decode {ours * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("small", type=int, nargs="?", default=10_000, help="events (10,000)")
    parser.add_argument("big", type=int, nargs="?", default=100_000, help="events (100,000)")
    args = parser.parse_args()
    small, big = args.small, args.big
    streams = {size: f"bench-history-{size}-{uuid.uuid4().hex[:8]}" for size in (small, big)}
    try:
        for size, stream in streams.items():
            fill(stream, size)
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the start")
        readers: dict[str, Reader] = {"before": read_before, "now": read_now}
        for size, stream in streams.items():
            config = parse_config(
                f"broker:\n  url: {URL}\nhistory:\n  stream: {stream}\n", "b.yaml", {}
            )
            times: dict[str, list[tuple[float, float, int, int]]] = {k: [] for k in readers}
            for _ in range(REPEATS):  # interleaved: a load spike hits both
                for name, reader in readers.items():
                    times[name].append(timed(reader, config))
            print(f"stream of {size:,} worker events + {size // history.BATCH_RUNS} batches:")
            for name, runs in times.items():
                wall = statistics.median(r[0] for r in runs) * 1000
                cpu = statistics.median(r[1] for r in runs) * 1000
                _, _, kept, read = runs[-1]
                print(
                    f"  {name:<7} median {wall:5.0f} ms wall, {cpu:5.0f} ms CPU; "
                    f"{read:,} messages read, {kept:,} events kept"
                )
            wall, cpu, kept, read = timed(read_outcomes, config)
            print(
                f"  list's last outcomes: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU; "
                f"{read:,} messages read"
            )
        print(json_decoding())
        print(f"load {os.getloadavg()[0]:.2f} at the end")
    finally:
        for stream in streams.values():
            drop(stream)


if __name__ == "__main__":
    main()
