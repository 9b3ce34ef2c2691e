"""Helpers for `beatd worker` tests: per-test broker names and config files, publishing beatd
messages with plain pika, and the worker as a real subprocess that reports over a systemd
notify socket (so the tests also see READY=1, STATUS= and WATCHDOG=1)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml

from tests.rabbit import AMQP_URL, Rabbit, Received, rabbitmqctl, wait_until

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Names:
    """One test's exchanges and queues, registered with `rabbit` for deletion."""

    exchange: str
    queue: str
    dlx: str
    dlq: str
    events: str
    events_queue: str

    @classmethod
    def fresh(cls, rabbit: Rabbit) -> Names:
        # Not rabbit.name(): a parametrized test's name has brackets, which an exchange
        # name in a beatd file may not.
        tag = f"bw-{uuid.uuid4().hex[:10]}"
        names = cls(
            exchange=f"{tag}.x",
            queue=f"{tag}.tasks",
            dlx=f"{tag}.dlx",
            dlq=f"{tag}.dead",
            events=f"{tag}.events",
            events_queue=f"{tag}.events.all",
        )
        rabbit.exchanges.extend([names.exchange, names.dlx, names.events])
        rabbit.queues.extend([names.queue, names.dlq, names.events_queue])
        # Read events from a queue of our own, bound before the worker emits any.
        rabbit.queue(names.events, "#", name=names.events_queue)
        return names

    def retry_queue(self, rabbit: Rabbit, milliseconds: int) -> str:
        name = f"{self.queue}.retry.{milliseconds}ms"
        rabbit.queues.append(name)
        return name


def worker_file(
    tmp_path: Path,
    names: Names,
    tasks: Mapping[str, Any],
    *,
    concurrency: int = 4,
    extra: Mapping[str, Any] | None = None,
    name: str = "worker.yaml",
    **worker_options: Any,
) -> Path:
    """Write a worker's file with these tasks; its run-id store lives in tmp_path."""
    data: dict[str, Any] = {
        "broker": {"url": AMQP_URL, "exchange": names.exchange},
        "worker": {
            "queue": names.queue,
            "concurrency": concurrency,
            "dead_letter_exchange": names.dlx,
            "dead_letter_queue": names.dlq,
            "events_exchange": names.events,
            "state": str(tmp_path / "seen.db"),
            **worker_options,
        },
        "tasks": dict(tasks),
        **(extra or {}),
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def python_command(code: str, *args: str) -> list[str]:
    """A command task running a Python snippet (sys.argv[1:] are args, then the message's)."""
    return [sys.executable, "-c", code, *args]


def message(
    task: str,
    *,
    job: str = "job",
    run_id: str | None = None,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    scheduled_at: str = "2026-11-21T05:30:00Z",
    expires_at: str | None = None,
) -> dict[str, Any]:
    return {
        "v": 1,
        "id": run_id or f"{job}@{uuid.uuid4().hex[:12]}",
        "job": job,
        "task": task,
        "args": args or [],
        "kwargs": kwargs or {},
        "scheduled_at": scheduled_at,
        "published_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "expires_at": expires_at,
        "trigger": "schedule",
    }


def publish(
    rabbit: Rabbit,
    names: Names,
    *bodies: dict[str, Any] | bytes,
    routing_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> list[str]:
    """Publish (with confirms) as the scheduler would; return the run ids."""
    ids = []
    with rabbit.channel() as ch:
        ch.confirm_delivery()
        for body in bodies:
            if isinstance(body, bytes):
                raw, run_id, key = body, f"raw-{uuid.uuid4().hex[:8]}", routing_key or "raw"
            else:
                raw, run_id = json.dumps(body).encode(), body["id"]
                key = routing_key or body["task"]
            properties = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,
                message_id=run_id,
                app_id="beatd",
                headers={"beatd-format": 1, **(headers or {})},
            )
            ch.basic_publish(names.exchange, key, raw, properties, mandatory=True)
            ids.append(run_id)
    return ids


def events(rabbit: Rabbit, names: Names) -> list[dict[str, Any]]:
    return [m.json for m in rabbit.drain(names.events_queue)]


def dead_letters(rabbit: Rabbit, names: Names, count: int) -> list[Received]:
    return rabbit.wait_for(names.dlq, count)


def queue_counts(queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) as the broker counts them."""
    out = rabbitmqctl(
        "list_queues", "name", "messages_ready", "messages_unacknowledged", "--no-table-headers",
        "--quiet",
    )  # fmt: skip
    for line in out.splitlines():
        parts = line.split("\t")
        if parts[0] == queue:
            return int(parts[1]), int(parts[2])
    pytest.fail(f"no queue {queue!r} on the broker")


def _connections(client_name_part: str) -> list[str]:
    """The broker's pids of connections whose client-given name contains client_name_part."""
    out = rabbitmqctl(
        "list_connections", "pid", "client_properties", "--no-table-headers", "--quiet"
    )
    pids = []
    for line in out.splitlines():
        pid, _, properties = line.partition("\t")
        name = re.search(r'\{"connection_name","([^"]*)"\}', properties)
        if name and client_name_part in name.group(1):
            pids.append(pid)
    return pids


def close_connection(client_name_part: str) -> int:
    """Close (as a network fault or an operator would) every broker connection whose name
    contains client_name_part; return how many. Other tests' connections are left alone."""
    pids = _connections(client_name_part)
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: dropped mid-job")
    return len(pids)


def connection_count(client_name_part: str) -> int:
    return len(_connections(client_name_part))


class WorkerProcess:
    """`python -m beatd worker -c FILE` with a notify socket; its log goes to a file."""

    def __init__(self, config: Path, tmp_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.log_path = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
        address = f"beatd-test-{uuid.uuid4().hex}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind("\0" + address)  # abstract: no path length limit, nothing to delete
        self._socket.settimeout(0.1)
        self.notifications: list[str] = []
        # Read all the time, as systemd does: a sender blocks once 10 datagrams
        # (net.unix.max_dgram_qlen) wait unread, and a blocked worker would be a false failure.
        self._listening = True
        self._listener = threading.Thread(target=self._listen, daemon=True)
        self._listener.start()
        child_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NOTIFY_SOCKET": "@" + address,
            "BEATD_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        child_env.pop("BEATD_BROKER_URL", None)
        child_env.pop("JOURNAL_STREAM", None)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "beatd", "worker", "-c", str(config)],
            cwd=ROOT,
            env=child_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _listen(self) -> None:
        while self._listening:
            with contextlib.suppress(TimeoutError):
                self.notifications.append(self._socket.recv(4096).decode())

    def poll_notifications(self) -> list[str]:
        return list(self.notifications)

    def notified(self, line: str) -> bool:
        return any(line in n.split("\n") for n in self.poll_notifications())

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        def ready() -> bool:
            exited = self.process.poll() is not None  # before reading: READY=1 came first
            if self.notified("READY=1"):
                return True
            if exited:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.log()}")
            return False

        wait_until(ready, timeout, "the worker's READY=1")
        return self

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        wait_until(lambda: self.log().count(text) >= count, timeout, f"{text!r} in the log")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"worker did not stop within {timeout}s:\n{self.log()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
        self._listening = False
        self._listener.join(2)
        self._socket.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_worker(
    config: Path, tmp_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[WorkerProcess]:
    with WorkerProcess(config, tmp_path, env) as worker:
        yield worker.wait_ready()


def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    wait_until(path.exists, timeout, f"{path} to exist")
    return path.read_text()


def header(message: Received, name: str) -> Any:
    return (message.properties.headers or {}).get(name)


def running_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line contains marker. Checking a PID alone
    is not enough: with pid_max at 32768 a busy machine reuses PIDs within seconds."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def unique_sleep() -> str:
    """A `sleep` argument no other process has: 60 seconds and a random fraction."""
    return f"60.{uuid.uuid4().int % 10**9:09d}"
