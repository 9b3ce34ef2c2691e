"""Asking a running scheduler on this host: `beatd status`, `beatd pause`, `beatd resume`.

The daemon answers on a Unix socket beside its state file (mode 0600: the same user, or
root). One JSON request a line, one JSON answer a line; every read and wait is bounded.
Paused jobs are kept in a small JSON file beside the state file, so they survive restarts
and can be set while the daemon is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from beatd.core.errors import BeatdError

log = logging.getLogger("beatd.scheduler")

MAX_REQUEST = 64 * 1024
TIMEOUT_S = 5.0
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
