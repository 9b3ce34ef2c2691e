"""Asking running schedulers: `beatd status`, `beatd pause`, `beatd resume`.

Through the broker (from any host; every instance of an HA group answers: core.control, and
scheduler.remote on the daemon's side), or on this host through a Unix socket beside the state
file (mode 0600: the same user, or root), which works while the broker is away. One JSON
request a line, one JSON answer a line; every read and wait is bounded. Paused jobs are kept
in a small JSON file beside the state file, so they survive restarts and can be set while the
daemon is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from beatd.core import control as requests
from beatd.core.config import Config
from beatd.core.errors import BeatdError
from beatd.core.messages import Properties
from beatd.core.ports import Channel, Delivery, Outcome
from beatd.runtime.rabbitmq import one_shot

log = logging.getLogger("beatd.scheduler")

MAX_REQUEST = 64 * 1024
TIMEOUT_S = 5.0
CONNECT_S = 5.0  # to reach the broker; then the local socket is asked instead
MAX_ANSWERS = 100  # instances listened to for one request
# systemd's StateDirectory=beatd: where `beatd run` keeps its state under the shipped unit,
# looked at when the operator's shell has no STATE_DIRECTORY.
SYSTEMD_STATE = Path("/var/lib/beatd/state.db")

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]


def socket_path(state: Path) -> Path:
    return state.with_name("beatd.sock")


def pauses_path(state: Path) -> Path:
    return state.with_name("paused.json")


def read_pauses(state: Path) -> dict[str, str]:
    """Paused job names and their notes; {} if none (or the file is unreadable: logged)."""
    path = pauses_path(state)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.error("%s: cannot read the paused jobs (%s); none are paused", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(name): str(note) for name, note in data.items()}


def write_pauses(state: Path, pauses: Mapping[str, str]) -> None:
    """Write the paused jobs atomically (a rename), so a crash leaves the old or new file."""
    path = pauses_path(state)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(dict(sorted(pauses.items())), indent=1) + "\n")
        temporary.replace(path)
    except OSError as exc:
        raise BeatdError(f"{path}: cannot record the paused jobs: {exc.strerror or exc}") from exc


class ControlServer:
    """Serves requests on the socket with `handle` (called on the event loop)."""

    def __init__(self, state: Path, handle: Handler) -> None:
        self.path = socket_path(state)
        self.handle = handle
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that was killed
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            old = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(self._serve, path=self.path)
            finally:
                os.umask(old)
        except OSError as exc:
            log.warning("%s: cannot answer beatd status here: %s", self.path, exc)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
            try:
                request = json.loads(line[:MAX_REQUEST])
                answer = self.handle(request if isinstance(request, dict) else {})
            except ValueError:
                answer = {"error": "not a JSON request"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), TIMEOUT_S)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def ask(state: Path, request: Mapping[str, Any]) -> dict[str, Any] | None:
    """The running daemon's answer, or None if no daemon answers on this host."""
    for candidate in dict.fromkeys([state, SYSTEMD_STATE]):
        path = socket_path(candidate)
        if not path.exists():
            continue
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(TIMEOUT_S)
                sock.connect(str(path))
                sock.sendall(json.dumps(dict(request)).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n") and len(data) < 64 * MAX_REQUEST:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            continue
        try:
            answer = json.loads(data)
        except ValueError:
            continue
        if isinstance(answer, dict):
            answer.setdefault("socket", str(path))
            return answer
    return None


async def gather(
    channel: Channel,
    config: Config,
    request: requests.Request,
    *,
    now: datetime,
    wait_s: float,
    expect: int | None,
) -> list[dict[str, Any]]:
    """Publish one request to every scheduler of config's schedule and collect their answers
    for wait_s, or until `expect` answered; [] at once if no scheduler's queue is bound. A write
    is signed when the file has `signing:` (the schedulers refuse it unsigned)."""
    answers: list[dict[str, Any]] = []
    enough = asyncio.Event()
    request_id = uuid.uuid4().hex

    def on_answer(delivery: Delivery) -> None:
        if delivery.properties.correlation_id != request_id or len(answers) >= MAX_ANSWERS:
            return
        try:
            answer = json.loads(delivery.body)
        except ValueError:
            return
        if isinstance(answer, dict):
            answers.append(answer)
            if expect is not None and len(answers) >= expect:
                enough.set()

    await channel.consume(requests.REPLY_TO, on_answer, prefetch=0, auto_ack=True)
    exchange, key = config.broker.control_exchange, requests.routing_key(config)
    body = request.encode()
    headers: dict[str, Any] = {}
    if request.command in requests.WRITES and config.signing is not None:
        headers = requests.sign(config.signing.key, request_id, key, body, now)
    properties = Properties(
        message_id=request_id,
        correlation_id=request_id,
        reply_to=requests.REPLY_TO,
        type=requests.REQUEST_TYPE,
        delivery_mode=1,
        expiration=str(max(1, round(wait_s * 1000))),  # nobody waits for a later answer
        headers=headers,
    )
    # Mandatory: with no scheduler's queue bound the broker returns it, and that is the answer.
    # A missing control exchange (no scheduler ever ran) closes the channel: LOST.
    if await channel.send(exchange, key, body, properties) is not Outcome.CONFIRMED:
        return []
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(enough.wait(), wait_s)
    return answers


def ask_broker(
    config: Config, request: requests.Request, *, now: datetime, wait_s: float
) -> list[dict[str, Any]]:
    """The answers of config's schedulers through the broker (BrokerError if it cannot be
    reached within CONNECT_S). Without `ha:` one scheduler answers, so the first answer ends
    the wait."""
    expect = None if config.ha is not None else 1

    async def asking() -> list[dict[str, Any]]:
        link = await one_shot(config.broker, "control", timeout_s=CONNECT_S)
        try:
            channel = await link.channel(CONNECT_S)
            return await gather(channel, config, request, now=now, wait_s=wait_s, expect=expect)
        finally:
            await link.close()

    return asyncio.run(asking())
