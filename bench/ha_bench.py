"""Takeover benchmark for `ha:` against the real RabbitMQ on 127.0.0.1:5672.

    .venv/bin/python bench/ha_bench.py [--rounds 12] [--period 10] [--poll 1s] [--instances 3]
    .venv/bin/python bench/ha_bench.py --pause 30 --heartbeat 5s --rounds 2

Three `beatd run` processes share one schedule (a 1 s job and 200 jobs every 5 s) and the
broker, each with its own state file, as on three hosts. Every `period` seconds the leader is
SIGKILLed and restarted at once (with --pause: SIGSTOPped that long, then SIGCONTed). Per
kill: the takeover (kill to the new leader's "leading" log line) and the lateness of the runs
due in the 2 s after it (published_at - scheduled_at). At the end every run is drained from a
queue bound to the exchange: every slot in the window must be there, none under two ids (an
id is `<job>@<slot>`, so only a count above 1 is possible), and runs published twice under the
same id are counted, with how many of them were in flight at a kill (a slot at most 2 s
before it). Also counts the refused lock declares RabbitMQ logged meanwhile (two error lines
each). Nobody consumes during the run. Timings are never test assertions; bench/README.md
records runs with the machine named.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import pika

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBIT_LOG = Path("/var/log/rabbitmq/rabbit@localhost.log")
MAX_ROUNDS = 60  # bounded: a typo in --rounds must not run for hours
LEADER_WAIT_S = 20.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Instance:
    def __init__(self, directory: Path, index: int, text: str) -> None:
        self.config = directory / f"beatd-{index}.yaml"
        self.config.write_text(text.replace("STATE", str(directory / f"state-{index}.db")))
        self.log = directory / f"beatd-{index}.log"
        self.process = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        """Start (again): only what this process logs counts from now on."""
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "beatd", "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "BEATD_LOG_LEVEL": "INFO"},
            )

    def text(self) -> str:
        with self.log.open("rb") as file:
            file.seek(self.offset)
            return file.read().decode(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def leading(self) -> bool:
        text = self.text()
        alive = self.process.poll() is None
        return alive and text.count("beatd.ha: leading") > text.count("lost the leadership")

    def led_at(self, after: float) -> float | None:
        """When this instance's log says it started leading after `after` (epoch seconds)."""
        for line in self.lines():
            if "beatd.ha: leading" in line:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= after:
                    return at
        return None


def wait_for_leader(instances: list[Instance]) -> Instance:
    deadline = time.monotonic() + LEADER_WAIT_S
    while time.monotonic() < deadline:
        leaders = [i for i in instances if i.leading()]
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.05)
    raise SystemExit(f"no single leader within {LEADER_WAIT_S:.0f}s")


def paused(old: Instance, others: list[Instance], pause_s: float) -> Instance:
    """SIGSTOP the leader for pause_s, then SIGCONT; return who leads meanwhile."""
    stopped = time.monotonic()
    old.process.send_signal(signal.SIGSTOP)
    try:
        leader = wait_for_leader(others)
        time.sleep(max(0.0, pause_s - (time.monotonic() - stopped)))
    finally:
        old.process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + LEADER_WAIT_S
    while "lost the leadership" not in old.text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return leader


def schedule(exchange: str, name: str, poll: str, heartbeat: str) -> str:
    jobs = "  tick:\n    every: 1s\n    task: bench.tick\n" + "".join(
        f"  j{i:03d}:\n    every: 5s\n    task: bench.five\n" for i in range(200)
    )
    return (
        f"broker:\n  exchange: {exchange}\n  url: {URL}\n  heartbeat: {heartbeat}\n"
        f"ha:\n  name: {name}\n  poll: {poll}\n"
        f"state: STATE\njobs:\n{jobs}"
    )


def drain(channel: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> list[dict]:
    bodies = []
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(json.loads(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--poll", default="1s")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--heartbeat", default="30s")
    parser.add_argument(
        "--pause", type=float, default=0, help="SIGSTOP the leader this long instead of a kill"
    )
    args = parser.parse_args()
    rounds = min(args.rounds, MAX_ROUNDS)
    tag = uuid.uuid4().hex[:8]
    exchange, queue, name = f"bench.ha.{tag}", f"bench.ha.{tag}.q", f"bench-{tag}"
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "#")
    connection.close()  # a blocking connection idle for minutes would miss its heartbeats
    log_before = RABBIT_LOG.stat().st_size if RABBIT_LOG.exists() else 0
    kills: list[float] = []
    takeovers: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(os.environ.get("HA_BENCH_DIR") or tmp)
        text = schedule(exchange, name, args.poll, args.heartbeat)
        instances = [Instance(directory, i, text) for i in range(args.instances)]
        started = time.time()
        try:
            leader = wait_for_leader(instances)
            for _ in range(rounds):
                time.sleep(args.period)
                killed_at = time.time()
                old = leader
                if args.pause:
                    leader = paused(old, [i for i in instances if i is not old], args.pause)
                else:
                    old.process.send_signal(signal.SIGKILL)
                    old.process.wait()
                    old.process = old.start()  # restarted at once, as systemd would
                    leader = wait_for_leader([i for i in instances if i is not old] + [old])
                kills.append(killed_at)
                at = leader.led_at(killed_at)
                if at is not None:
                    takeovers.append(at - killed_at)
            time.sleep(2)
        finally:
            for instance in instances:
                instance.process.terminate()
            codes = [instance.process.wait(timeout=30) for instance in instances]
        ended = time.time()
        lost_leadership = sum(
            i.log.read_text(errors="replace").count("lost the leadership") for i in instances
        )
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    bodies = drain(channel, queue)
    channel.queue_delete(queue)
    channel.queue_delete(f"beatd.ha.{name}.progress")
    channel.queue_delete(f"beatd.ha.{name}.token")
    channel.exchange_delete(exchange)
    connection.close()
    refused = refusals(log_before, f"beatd.ha.{name}.lock")
    report(bodies, kills, takeovers, started, ended, codes, lost_leadership, refused)


def refusals(offset: int, lock: str) -> int:
    """How many refused declares of the lock RabbitMQ logged since offset (each is two lines;
    the log is shared with everything else using the broker, so only these are counted)."""
    if not RABBIT_LOG.exists():
        return -1
    with RABBIT_LOG.open("rb") as file:
        file.seek(offset)
        text = file.read().decode(errors="replace")
    return sum(1 for line in text.splitlines() if "resource_locked" in line and lock in line)


def report(
    bodies: list[dict],
    kills: list[float],
    takeovers: list[float],
    started: float,
    ended: float,
    codes: list[int],
    lost_leadership: int,
    refused: int,
) -> None:
    ids = Counter(str(b["id"]) for b in bodies)
    slot = {str(b["id"]): datetime.fromisoformat(b["scheduled_at"]).timestamp() for b in bodies}
    # How late the runs due around each kill went out: up to the takeover nobody publishes.
    late = [
        datetime.fromisoformat(b["published_at"]).timestamp() - slot[str(b["id"])]
        for b in bodies
        if any(0 <= slot[str(b["id"])] - k <= 2 for k in kills)
    ]
    ticks = sorted(slot[i] for i in ids if i.startswith("tick@"))
    fives = sorted({slot[i] for i in ids if i.startswith("j")})
    missing_ticks = round(ticks[-1] - ticks[0]) + 1 - len(ticks)
    per_five = Counter(slot[i] for i in ids if i.startswith("j"))
    inner = fives[1:-1]  # the first and last 5 s slots may straddle start and stop
    missing_fives = sum(200 - per_five[t] for t in inner) + sum(
        1 for a, b in itertools.pairwise(fives) if round(b - a) != 5
    )
    doubled = [i for i, n in ids.items() if n > 1]
    in_flight = [i for i in doubled if any(0 <= k - slot[i] <= 2 for k in kills)]
    print(f"window {ended - started:.0f} s, {len(kills)} kills, exit codes {codes}")
    print(
        f"runs {len(bodies)}: tick slots {len(ticks)} (missing {missing_ticks}), "
        f"5 s slots {len(fives)} x 200 (missing {missing_fives} in the inner {len(inner)})"
    )
    print(
        f"duplicates (same id twice): {len(doubled)}, of them in flight at a kill: "
        f"{len(in_flight)}; distinct ids per slot: always 1 (the id is the slot)"
    )
    for label, values in (
        ("takeover (kill -> leading)", takeovers),
        ("lateness of runs due 0-2 s after a kill", late),
    ):
        if values:
            print(
                f"{label}: p50 {statistics.median(values) * 1000:.0f} ms, "
                f"p99 {percentile(values, 99) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms "
                f"(n={len(values)})"
            )
    print(
        f"'lost the leadership' lines: {lost_leadership}; refused lock declares in RabbitMQ's "
        f"log: {refused} (two log lines each)"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
