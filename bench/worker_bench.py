"""Throughput of `beatd worker` on trivial `call:` tasks, against the real RabbitMQ.

    .venv/bin/python bench/worker_bench.py [--runs 5000] [--concurrency 1 4] [--rounds 3]
        [--against DIR]

For each concurrency: N runs wait in the worker's queue; a fresh `beatd worker` process
starts; the clock runs from its READY=1 until the Nth `succeeded` event has arrived. Every
run goes the whole way: parse, run-id store write at start and at the end (SQLite, WAL),
the call in its thread, a log line, two events, the ack. Prints one table row per setting.

--against DIR runs the worker of another checkout (say `git archive main | tar -x -C DIR`)
in turn with this one, round by round, so both see the same load: a before/after ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import yaml

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = os.environ.get("BEATD_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TARGET_RUNS_PER_S = {1: 300, 4: 1000}  # see bench/README.md (issue 14: 1,000 at 4)


def names() -> dict[str, str]:
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    return {
        "exchange": f"{tag}.x",
        "queue": f"{tag}.tasks",
        "dlx": f"{tag}.dlx",
        "dlq": f"{tag}.dead",
        "events": f"{tag}.events",
        "done": f"{tag}.done",
    }


TASKS = {
    "call": {"call": "os:getpid"},  # the cheapest thing there is to call
    "command": {"command": ["/bin/true"]},  # the cheapest program: the cost of a process
}


def config_file(directory: Path, n: dict[str, str], concurrency: int, kind: str) -> Path:
    data = {
        "broker": {"url": AMQP_URL, "exchange": n["exchange"]},
        "worker": {
            "queue": n["queue"],
            "concurrency": concurrency,
            "dead_letter_exchange": n["dlx"],
            "dead_letter_queue": n["dlq"],
            "events_exchange": n["events"],
            "state": str(directory / "seen.db"),
        },
        "tasks": {"bench.noop": TASKS[kind]},
    }
    path = directory / f"worker-{concurrency}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def worker(
    config: Path, log: Path, root: Path
) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket]]:
    address = f"beatd-bench-{uuid.uuid4().hex}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + address)
    env = {**os.environ, "NOTIFY_SOCKET": "@" + address, "PYTHONPATH": str(root)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "beatd", "worker", "-c", str(config)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, notify
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(60)
        notify.close()


def wait_ready(process: subprocess.Popen[bytes], notify: socket.socket) -> None:
    """Wait for READY=1, then keep reading in the background as systemd would: a sender
    blocks once 10 datagrams (net.unix.max_dgram_qlen) wait unread."""
    notify.settimeout(0.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the worker exited with {process.returncode}")
        with contextlib.suppress(TimeoutError):
            if b"READY=1" in notify.recv(4096).split(b"\n"):
                threading.Thread(target=_drain, args=(notify,), daemon=True).start()
                return
    raise SystemExit("the worker never became ready")


def _drain(notify: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed when the worker is done
        while True:
            with contextlib.suppress(TimeoutError):
                notify.recv(4096)


def body(run_id: str) -> bytes:
    return json.dumps({
        "v": 1, "id": run_id, "job": "bench", "task": "bench.noop", "args": [], "kwargs": {},
        "scheduled_at": "2026-11-21T05:30:00Z", "expires_at": None, "trigger": "manual",
    }).encode()  # fmt: skip


def cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user and system) the process, or one of its threads, has used so far."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    concurrency: int, runs: int, directory: Path, kind: str, root: Path
) -> tuple[float, float, float]:
    """Runs per second for one setting, with the worker of the checkout at root, and the CPU
    per run (microseconds) of the worker process and of its event loop's thread alone: on a
    loaded machine the wall clock measures the neighbours too, the CPU per run much less."""
    n = names()
    config = config_file(directory, n, concurrency, kind)
    log = directory / "worker.log"
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    try:
        channel.exchange_declare(n["events"], "topic", durable=True)
        channel.queue_declare(n["done"], durable=True)
        channel.queue_bind(n["done"], n["events"], "succeeded.#")
        with worker(config, log, root) as (process, notify):  # once, to declare its queue
            wait_ready(process, notify)
        properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        for i in range(runs):
            properties.message_id = f"bench@{i}"
            channel.basic_publish(n["exchange"], "bench.noop", body(f"bench@{i}"), properties)
        while channel.queue_declare(n["queue"], passive=True).method.message_count < runs:
            connection.sleep(0.05)
        with worker(config, log, root) as (process, notify):
            wait_ready(process, notify)
            started = time.perf_counter()
            cpu, loop_cpu = cpu_s(process.pid), cpu_s(process.pid, process.pid)
            while channel.queue_declare(n["done"], passive=True).method.message_count < runs:
                if process.poll() is not None:
                    raise SystemExit(f"the worker exited with {process.returncode}; see {log}")
                connection.sleep(0.01)
            elapsed = time.perf_counter() - started
            cpu = cpu_s(process.pid) - cpu
            loop_cpu = cpu_s(process.pid, process.pid) - loop_cpu
        dead = channel.queue_declare(n["dlq"], passive=True).method.message_count
        if dead:
            raise SystemExit(f"{dead} runs were dead-lettered; see {log}")
        return runs / elapsed, cpu / runs * 1e6, loop_cpu / runs * 1e6
    finally:
        for queue in (n["queue"], n["dlq"], n["done"]):
            channel.queue_delete(queue)
        for exchange in (n["exchange"], n["dlx"], n["events"]):
            channel.exchange_delete(exchange)
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=1, help="measure each setting this often")
    parser.add_argument(
        "--kind", choices=sorted(TASKS), default="call", help="trivial task of this kind"
    )
    parser.add_argument(
        "--against", type=Path, help="another checkout's worker, measured in turn with this one"
    )
    args = parser.parse_args()
    if args.against is not None and not (args.against / "beatd" / "__main__.py").is_file():
        parser.error(f"--against: {args.against} holds no beatd checkout")
    roots = {"this": ROOT} | ({} if args.against is None else {"against": args.against})
    print(f"# beatd worker, {args.runs} trivial {args.kind}: runs; "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'concurrency':>11}  {'worker':>7}  {'runs/s':>8}  {'target':>7}  "
          f"{'CPU us/run':>10}  {'loop us/run':>11}  {'load 1m':>7}")  # fmt: skip
    failed = False
    rates: dict[tuple[int, str], list[float]] = {}
    loop_cpus: dict[tuple[int, str], list[float]] = {}
    for concurrency in args.concurrency:
        for _ in range(args.rounds):
            for label, root in roots.items():
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory(prefix="beatd-bench-") as tmp:
                    rate, cpu, loop_cpu = measure(
                        concurrency, args.runs, Path(tmp), args.kind, root
                    )
                rates.setdefault((concurrency, label), []).append(rate)
                loop_cpus.setdefault((concurrency, label), []).append(loop_cpu)
                target = TARGET_RUNS_PER_S.get(concurrency) if args.kind == "call" else None
                verdict = "" if target is None else ("ok" if rate >= target else "BELOW")
                failed |= verdict == "BELOW" and label == "this"
                print(f"{concurrency:>11}  {label:>7}  {rate:>8.0f}  {target or '-':>7}  "
                      f"{cpu:>10.0f}  {loop_cpu:>11.0f}  {load:>7.2f}  {verdict}",
                      flush=True)  # fmt: skip
    if args.against is not None:
        print("# this/against per round: runs/s (higher is better); loop CPU per run (lower)")
        for concurrency in args.concurrency:
            for name, table in (("runs/s", rates), ("loop CPU", loop_cpus)):
                pairs = zip(table[concurrency, "this"], table[concurrency, "against"], strict=True)
                ratios = ", ".join(f"{a / b:.2f}" for a, b in pairs)
                print(f"{concurrency:>11}  {name:>8}  {ratios}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
