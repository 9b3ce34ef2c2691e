"""Control requests under a flood, against the real RabbitMQ on 127.0.0.1:5672.

    .venv/bin/python bench/control_bench.py [--jobs 200] [--phase 10] [--rounds 2]

One `beatd run` publishes `jobs` jobs every 1 s. Phases of `phase` seconds alternate: quiet;
`elsewhere`, a client publishing `beatd status` requests as fast as one connection can to a
queue like the scheduler's that nobody consumes (the same load on the broker and the machine);
`flood`, the same requests to the scheduler (direct reply-to, answers discarded). The
difference between the last two is what the scheduler pays for a flood. Per kind of phase: the
lateness of the runs due in it (published_at - scheduled_at, p50 and p99), the scheduler's CPU
share, and how an operator's `beatd status` fares meanwhile (asked every 0.5 s: answered or not,
and how long it took). Side by side in one run, so the ratios hold on a noisy machine; the load
average is recorded. Timings are never test assertions; bench/README.md records runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pika

from beatd.core import control as requests
from beatd.core.config import read_config
from beatd.core.errors import BrokerError
from beatd.runtime import control
from beatd.runtime.clock import system_clock

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MAX_ROUNDS = 20


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class Flood(threading.Thread):
    """Publishes status requests back to back until stopped; counts them."""

    def __init__(self, exchange: str, key: str) -> None:
        super().__init__(daemon=True)
        self.exchange, self.key = exchange, key
        self.target = ""  # routing key now: the scheduler's, or a queue nobody consumes
        self.sent = 0
        self.on = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        channel.basic_consume(requests.REPLY_TO, lambda *_: None, auto_ack=True)
        body = requests.Request("status").encode()
        while not self.done.is_set():
            if not self.on.wait(0.1):
                connection.process_data_events(0)
                continue
            props = pika.BasicProperties(correlation_id=str(self.sent), reply_to=requests.REPLY_TO)
            channel.basic_publish(self.exchange, self.target, body, props)
            self.sent += 1
            if self.sent % 200 == 0:
                connection.process_data_events(0)
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--phase", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds = min(args.rounds, MAX_ROUNDS)
    tag = uuid.uuid4().hex[:8]
    exchange, control_exchange = f"bench.ctl.{tag}", f"bench.ctl.{tag}.control"
    queue = f"bench.ctl.{tag}.runs"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "beatd.yaml"
        jobs = "".join(f"  j{i}:\n    every: 1s\n    task: bench.j{i}\n" for i in range(args.jobs))
        path.write_text(
            f"broker:\n  url: {URL}\n  exchange: {exchange}\n"
            f"  control_exchange: {control_exchange}\nstate: state.db\njobs:\n{jobs}"
        )
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.exchange_declare(control_exchange, "topic", durable=True)
        channel.queue_declare(queue, durable=False)
        channel.queue_bind(queue, exchange, "#")
        log = Path(folder) / "beatd.log"
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "beatd", "run", "-c", str(path)], stderr=out
            )
        config = read_config(path, {})
        flood = Flood(control_exchange, requests.routing_key(config))
        decoy = f"bench.ctl.{tag}.decoy"
        channel.queue_declare(decoy, durable=False, arguments=requests.queue_arguments())
        channel.queue_bind(decoy, control_exchange, decoy)
        flood.start()
        phases: list[tuple[str, float, float]] = []
        kinds = ("quiet", "elsewhere", "flood")
        asked: dict[str, list[float | None]] = {kind: [] for kind in kinds}
        cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
        try:
            time.sleep(3)  # connected, the first bursts out
            for _ in range(rounds):
                for kind in kinds:
                    flood.target = decoy if kind == "elsewhere" else flood.key
                    (flood.on.clear if kind == "quiet" else flood.on.set)()
                    start, cpu_start = time.time(), cpu_s(daemon.pid)
                    while time.time() < start + args.phase:
                        began = time.monotonic()
                        try:
                            answers = control.ask_broker(
                                config,
                                requests.Request("status"),
                                now=system_clock(),
                                wait_s=1.0,
                            )
                        except BrokerError:
                            answers = []
                        took = time.monotonic() - began
                        asked[kind].append(took if answers else None)
                        time.sleep(max(0.0, 0.5 - took))
                    cpu[kind] += cpu_s(daemon.pid) - cpu_start
                    phases.append((kind, start, time.time()))
            flood.on.clear()
        finally:
            flood.done.set()
            flood.join(10)
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
        late: dict[str, list[float]] = {kind: [] for kind in kinds}
        while True:
            method, _props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            run = json.loads(body)
            slot = parse(run["scheduled_at"]).timestamp()
            lateness = parse(run["published_at"]).timestamp() - slot
            for kind, start, end in phases:
                if start + 1 <= slot < end:  # the first second: the phase's switch-over
                    late[kind].append(lateness * 1000)
        channel.queue_delete(queue)
        channel.queue_delete(decoy)
        channel.exchange_delete(exchange)
        channel.exchange_delete(control_exchange)
        connection.close()
    seconds = rounds * args.phase
    print(f"load average before {load_before}, after {os.getloadavg()}")
    print(f"{args.jobs} jobs every 1s; {rounds} x {args.phase:g}s of each phase")
    print(f"{flood.sent} status requests sent ({flood.sent / seconds / 2:.0f}/s while on)")
    print("phase       runs  p50 ms  p99 ms  max ms  cpu %  status answered  status p50 ms")
    for kind in kinds:
        values = late[kind]
        answered = [t for t in asked[kind] if t is not None]
        print(
            f"{kind:9} {len(values):6} {percentile(values, 50):7.1f} {percentile(values, 99):7.1f}"
            f" {max(values):7.1f} {100 * cpu[kind] / seconds:6.1f}"
            f"  {len(answered):3}/{len(asked[kind]):<3}        "
            f"  {1000 * statistics.median(answered) if answered else float('nan'):8.1f}"
        )
    for base in ("quiet", "elsewhere"):
        q, f = late[base], late["flood"]
        print(
            f"ratio flood/{base}: p50 {percentile(f, 50) / percentile(q, 50):.2f}, "
            f"p99 {percentile(f, 99) / percentile(q, 99):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
