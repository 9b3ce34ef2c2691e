"""Benchmarks for `beatd run` against the real RabbitMQ on 127.0.0.1:5672.

    .venv/bin/python bench/beat_bench.py [burst] [idle] [herd] [memory]

burst   N jobs due in the same second (N = 1k, 10k): beatd's pass (plan, publish, confirm,
        record) against a raw pika publish of the same N messages with pipelined confirms,
        measured alternately in the same run; plus publish lateness from a real daemon.
idle    100 daily jobs for 60 s: CPU seconds and wake-ups of the daemon process.
herd    10,000 jobs `* * * * *`: all published at the top of the minute? p99 lateness, last.
memory  resident memory of a daemon holding 100,000 jobs.

Numbers vary with the machine's load; the README next to this file records runs with the
machine named. Timings are never test assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from beatd.core.config import read_config  # noqa: E402
from beatd.core.messages import Run  # noqa: E402
from beatd.runtime.rabbitmq import Link  # noqa: E402
from beatd.runtime.state import State  # noqa: E402
from beatd.scheduler.codecs import BeatdCodec  # noqa: E402
from beatd.scheduler.scheduler import Scheduler  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def write_config(directory: Path, exchange: str, jobs: str) -> Path:
    path = directory / "beatd.yaml"
    path.write_text(
        f"broker:\n  exchange: {exchange}\nstate: {directory / 'state.db'}\njobs:\n{jobs}"
    )
    return path


def jobs_every(n: int, every: str, task: str = "bench.t") -> str:
    return "".join(f"  j{i:06d}:\n    every: {every}\n    task: {task}\n" for i in range(n))


class Queue:
    """A bench queue bound to an exchange; deleted at exit."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.name = f"{exchange}.q"
        self.connection = pika.BlockingConnection(pika.URLParameters(URL))
        ch = self.connection.channel()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(self.name, durable=True)
        ch.queue_purge(self.name)
        ch.queue_bind(self.name, exchange, "#")

    def drain(self) -> list[dict[str, object]]:
        """Every message body now in the queue. The benchmarks drain after the daemon has
        stopped, so that no consumer competes with it for the two cores meanwhile."""
        ch = self.connection.channel()
        bodies = []
        while True:
            method, _props, body = ch.basic_get(self.name, auto_ack=True)
            if method is None:
                break
            bodies.append(json.loads(body))
        ch.close()
        return bodies

    def close(self) -> None:
        ch = self.connection.channel()
        ch.queue_delete(self.name)
        ch.exchange_delete(self.exchange)
        self.connection.close()


@contextlib.contextmanager
def running_daemon(
    path: Path, exchange: str, *, log: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """`beatd run -c path` in a process of its own (with log=True its stderr is piped, for a
    caller that waits for a line); SIGTERM on exit, and the exchange it declared deleted."""
    daemon = subprocess.Popen(
        [sys.executable, "-m", "beatd", "run", "-c", str(path)],
        stderr=subprocess.PIPE if log else subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    )
    try:
        yield daemon
    finally:
        daemon.terminate()
        daemon.communicate(timeout=30)
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        connection.channel().exchange_delete(exchange)
        connection.close()


def lateness_ms(bodies: list[dict[str, object]]) -> list[float]:
    """published_at - scheduled_at, as stamped by beatd when it sent each message."""
    return [
        (
            datetime.fromisoformat(str(body["published_at"]))
            - datetime.fromisoformat(str(body["scheduled_at"]))
        ).total_seconds()
        * 1000
        for body in bodies
    ]


def describe(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):7.1f}  p99 {percentile(values, 99):7.1f}  "
        f"max {max(values):7.1f} ms"
    )


# burst -----------------------------------------------------------------------------------


async def raw_pika(
    messages: list[tuple[str, str, bytes, pika.BasicProperties]],
    before: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """Seconds to publish messages with pipelined confirms using pika alone; before: awaited
    once connected and in confirm mode, before the clock starts (burst_bench waits for a slot)."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[object] = loop.create_future()
    connection = AsyncioConnection(
        pika.URLParameters(URL), on_open_callback=opened.set_result, custom_ioloop=loop
    )
    await opened
    channel_ready: asyncio.Future[object] = loop.create_future()
    channel = connection.channel(on_open_callback=channel_ready.set_result)
    await channel_ready
    confirmed = loop.create_future()
    pending = {"acked": 0}

    def on_confirm(frame: object) -> None:
        method = frame.method  # type: ignore[attr-defined]
        pending["acked"] = method.delivery_tag if method.multiple else pending["acked"] + 1
        if pending["acked"] >= len(messages) and not confirmed.done():
            confirmed.set_result(None)

    selected: asyncio.Future[object] = loop.create_future()
    channel.confirm_delivery(on_confirm, callback=selected.set_result)
    await selected
    if before is not None:
        await before()
    started = time.perf_counter()
    for exchange, key, body, properties in messages:
        channel.basic_publish(exchange, key, body, properties, mandatory=True)
    await confirmed
    elapsed = time.perf_counter() - started
    closed: asyncio.Future[object] = loop.create_future()
    connection.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
    connection.close()
    await closed
    return elapsed


async def beatd_pass(path: Path, slot: datetime) -> tuple[float, float]:
    """Seconds to draft a burst ahead of its slot (plan, build), and for the step at the slot
    (stamp, publish, wait for the confirms, record), as the daemon does them."""
    config = read_config(path, {})
    now = [slot - timedelta(seconds=0.4)]
    scheduler = Scheduler(config, State(config.state), Link, clock=lambda: now[0])
    scheduler.start()
    await scheduler.link.channel(30)
    started = time.perf_counter()
    scheduler.prepare(now[0])  # the units being timed
    drafted = time.perf_counter() - started
    now[0] = slot
    started = time.perf_counter()
    await scheduler.step(slot)
    elapsed = time.perf_counter() - started
    await scheduler.close()
    return drafted, elapsed


def burst(n: int, rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exchange = f"bench.burst.{os.getpid()}"
        queue = Queue(exchange)
        path = write_config(Path(tmp), exchange, jobs_every(n, "10s"))
        config = read_config(path, {})
        codec = BeatdCodec(exchange)
        draft_s, beatd_s, raw_s = [], [], []
        base = datetime(2030, 1, 1, tzinfo=UTC)
        for r in range(rounds):
            slot = base + timedelta(minutes=r)
            for f in Path(tmp).glob("state.db*"):
                f.unlink()
            drafted, at_slot = asyncio.run(beatd_pass(path, slot))
            draft_s.append(drafted)
            beatd_s.append(at_slot)
            prebuilt = []
            for job in config.jobs:
                m = codec.draft(Run(job, slot + timedelta(seconds=30)))(slot)
                p = m.properties
                prebuilt.append(
                    (
                        m.exchange,
                        m.routing_key,
                        m.body,
                        pika.BasicProperties(
                            content_type=p.content_type,
                            content_encoding=p.content_encoding,
                            delivery_mode=2,
                            message_id=p.message_id,
                            type=p.type,
                            app_id=p.app_id,
                            timestamp=p.timestamp,
                            headers=dict(p.headers),
                        ),
                    )
                )
            raw_s.append(asyncio.run(raw_pika(prebuilt)))
            queue.drain()
        b, raw = statistics.median(beatd_s), statistics.median(raw_s)
        d = statistics.median(draft_s)
        print(
            f"burst {n:>6}: beatd at the slot {b * 1000:7.1f} ms ({n / b:7.0f} msg/s)   "
            f"raw pika {raw * 1000:7.1f} ms ({n / raw:7.0f} msg/s)   ratio {b / raw:4.2f} "
            f"(target <= 1.5)   drafted {d * 1000:6.1f} ms before the slot   "
            f"ratio with drafting {(b + d) / raw:4.2f}   (medians of {rounds})"
        )
        live_lateness(Path(tmp), queue, n)
        queue.close()


def live_lateness(directory: Path, queue: Queue, n: int) -> None:
    """A real daemon on the real clock: how late does each run of a burst leave?"""
    for f in directory.glob("state.db*"):
        f.unlink()
    path = write_config(directory, queue.exchange, jobs_every(n, "10s"))
    with running_daemon(path, queue.exchange):
        time.sleep(32)  # three bursts
    bursts: dict[object, list[dict[str, object]]] = {}
    for body in queue.drain():
        bursts.setdefault(body["scheduled_at"], []).append(body)
    for slot, group in sorted(bursts.items(), key=lambda kv: str(kv[0])):
        lateness = describe(lateness_ms(group))
        print(f"    live burst at {slot} ({len(group)} runs): published {lateness}")


# idle ------------------------------------------------------------------------------------


def proc_cpu_and_switches(pid: int) -> tuple[float, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    switches = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
            switches += int(line.split()[1])
    return cpu, switches


def idle(seconds: float = 60) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exchange = f"bench.idle.{os.getpid()}"
        jobs = "".join(
            f"  daily{i:03d}:\n    cron: '{i % 60} {3 + i % 4} * * *'\n    task: bench.daily\n"
            for i in range(100)
        )
        path = write_config(Path(tmp), exchange, jobs)
        with running_daemon(path, exchange) as daemon:
            time.sleep(5)  # started and connected
            cpu0, sw0 = proc_cpu_and_switches(daemon.pid)
            time.sleep(seconds)
            cpu1, sw1 = proc_cpu_and_switches(daemon.pid)
        per_minute = (cpu1 - cpu0) * 60 / seconds
        print(
            f"idle: 100 daily jobs for {seconds:.0f}s: {cpu1 - cpu0:.3f} CPU-s "
            f"({per_minute:.3f} CPU-s/min; target <= 0.05), {sw1 - sw0} context switches "
            f"({(sw1 - sw0) * 60 / seconds:.0f}/min; pika's heartbeat timer and the 60 s "
            "clock re-check are the only wakers)"
        )


# herd ------------------------------------------------------------------------------------


def herd(n: int = 10_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exchange = f"bench.herd.{os.getpid()}"
        queue = Queue(exchange)
        jobs = "".join(
            f"  h{i:06d}:\n    cron: '* * * * *'\n    task: bench.herd\n" for i in range(n)
        )
        path = write_config(Path(tmp), exchange, jobs)
        with running_daemon(path, exchange):
            time.sleep(60 - time.time() % 60 + 12)  # past the next top of the minute
        bodies = queue.drain()
        queue.close()
        published = lateness_ms(bodies)
        ids = {str(body["id"]) for body in bodies}
        print(
            f"herd: {n} jobs '* * * * *': {len(ids)} of {n} distinct runs published at "
            f"{bodies[0]['scheduled_at'] if bodies else '-'}; published {describe(published)}; "
            f"the last left {max(published) / 1000:.2f} s after the slot"
        )


# memory ----------------------------------------------------------------------------------


def memory(n: int = 100_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        exchange = f"bench.mem.{os.getpid()}"
        kinds = ["cron: 'H H * * *'", "every: 1h", "cron: '*/15 * * * *'", "every: 6h"]
        jobs = "".join(
            f"  m{i:06d}:\n    {kinds[i % 4]}\n    task: bench.m{i % 100}\n" for i in range(n)
        )
        path = write_config(Path(tmp), exchange, jobs)
        started = time.monotonic()
        with running_daemon(path, exchange, log=True) as daemon:
            assert daemon.stderr is not None
            for line in daemon.stderr:
                if "connected to" in line:
                    break
            ready = time.monotonic() - started
            time.sleep(2)
            rss = next(
                int(line.split()[1])
                for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS")
            )
        print(
            f"memory: {n} jobs: RSS {rss / 1024:.0f} MiB ({rss * 1024 / n:.0f} bytes/job), "
            f"started and connected in {ready:.1f} s"
        )


BENCHES: dict[str, Callable[[], None]] = {
    "burst": lambda: (burst(1000), burst(10_000)),  # type: ignore[func-returns-value]
    "idle": idle,
    "herd": herd,
    "memory": memory,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("benches", nargs="*", metavar="BENCH", help=f"of {', '.join(BENCHES)}")
    names = parser.parse_args().benches or list(BENCHES)
    if unknown := [name for name in names if name not in BENCHES]:
        parser.error(f"unknown bench {unknown[0]!r} (one of {', '.join(BENCHES)})")
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load {os.getloadavg()}"
    )
    for name in names:
        BENCHES[name]()
