"""Test helpers for the real RabbitMQ: per-test names, inspection with plain pika, a TCP proxy
that can cut the network, and a settable clock. (Tests may use pika directly; the package may
not.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import pytest

AMQP_URL = os.environ.get("BEATD_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
HOST, PORT = "127.0.0.1", 5672


def broker_answers() -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, PORT), timeout=2):
        return True
    return False


def require_broker() -> None:
    """Skip loudly on a laptop without RabbitMQ; fail under CI, where one must be running."""
    if broker_answers():
        return
    message = f"RabbitMQ is not answering on {HOST}:{PORT} (start it: rabbitmq-server -detached)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Received:
    body: bytes
    properties: Any
    routing_key: str
    exchange: str
    redelivered: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Rabbit:
    """Declares and inspects per-test exchanges and queues; deletes them all at teardown."""

    prefix: str
    exchanges: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)

    def name(self, what: str) -> str:
        return f"{self.prefix}.{what}"

    @contextlib.contextmanager
    def channel(self) -> Iterator[Any]:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            yield connection.channel()
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def queue(self, exchange: str, *keys: str, name: str | None = None, kind: str = "topic") -> str:
        """A durable queue bound to exchange (declared too) with keys (default '#')."""
        queue = name or self.name(f"q{len(self.queues)}")
        with self.channel() as ch:
            if exchange:
                ch.exchange_declare(exchange, kind, durable=True)
                self.exchanges.append(exchange)
            ch.queue_declare(queue, durable=True)
            self.queues.append(queue)
            for key in keys or ("#",):
                if exchange:
                    ch.queue_bind(queue, exchange, key)
        return queue

    def drain(self, queue: str) -> list[Received]:
        """Take every message now in queue."""
        out = []
        with self.channel() as ch:
            while True:
                method, properties, body = ch.basic_get(queue, auto_ack=True)
                if method is None:
                    return out
                out.append(
                    Received(
                        body, properties, method.routing_key, method.exchange, method.redelivered
                    )
                )

    def wait_for(self, queue: str, count: int, timeout: float = 20.0) -> list[Received]:
        """Messages from queue until there are count of them (fails after timeout)."""
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            got += self.drain(queue)
            if time.monotonic() > deadline:
                pytest.fail(f"{queue}: {len(got)} of {count} messages after {timeout}s")
            if len(got) < count:
                time.sleep(0.05)
        return got

    def depth(self, queue: str) -> int:
        with self.channel() as ch:
            return int(ch.queue_declare(queue, passive=True).method.message_count)

    def exchange_exists(self, name: str) -> bool:
        try:
            with self.channel() as ch:
                ch.exchange_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        return True

    def delete_exchange(self, name: str) -> None:
        with self.channel() as ch:
            ch.exchange_delete(name)

    def cleanup(self) -> None:
        with self.channel() as ch:
            for queue in self.queues:
                ch.queue_delete(queue)
            for exchange in set(self.exchanges):
                ch.exchange_delete(exchange)


def unique_prefix(test_name: str) -> str:
    return f"t.{test_name[:40]}.{uuid.uuid4().hex[:8]}"


def wait_until(condition: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


async def async_wait_until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {condition}")
        await asyncio.sleep(0.02)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to RabbitMQ; `cut()` drops every connection and refuses new
    ones (a network outage), `restore()` accepts again. Runs in its own thread."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._up = True
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._up:
                client.close()  # refused: as if the host were unreachable
                continue
            try:
                upstream = socket.create_connection((HOST, PORT))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._up = False
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self._stop = True
        self.cut()
        self._listener.close()
        self._thread.join(2)


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout
