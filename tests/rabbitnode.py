"""A private RabbitMQ node for tests that need a broker of their own (TLS listeners, restarts,
partitions): its own node name, ports, data and log directories, config file and Erlang cookie.
The machine's broker on 5672 is never touched; the node is stopped and its files removed when
the context ends.

    with RabbitNode(tmp_path, conf=["listeners.ssl.default = 0"]) as node:
        node.ctl("list_queues")

Runs the server scripts from /usr/lib/rabbitmq/bin directly: the /usr/sbin wrappers switch to
the rabbitmq user and drop this environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

BIN = Path(os.environ.get("BEATD_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmq_available() -> bool:
    return (BIN / "rabbitmq-server").exists() and (BIN / "rabbitmqctl").exists()


def require_rabbitmq() -> None:
    """Skip loudly where RabbitMQ is not installed; fail under CI, where it must be."""
    if rabbitmq_available():
        return
    message = f"RabbitMQ server scripts not found in {BIN} (set BEATD_TEST_RABBITMQ_BIN)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class RabbitNode:
    """Start a RabbitMQ node on entry, stop it and delete its files on exit.

    `conf` lines are appended to a rabbitmq.conf that already has the node's AMQP port on
    127.0.0.1 and guest allowed from loopback. `node.port` is the plain AMQP port.
    """

    def __init__(self, base: Path | None = None, conf: Sequence[str] = (), name: str = "") -> None:
        self.tag = name or uuid.uuid4().hex[:8]
        self.node = f"beatd-test-{self.tag}@localhost"
        self._own_base = base is None
        self.base = Path(tempfile.mkdtemp(prefix="beatd-node-")) if base is None else base
        self.dir = self.base / f"node-{self.tag}"
        self.port = free_port()
        self.dist_port = free_port()
        self.conf = list(conf)
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "HOME": str(d / "home"),  # its own .erlang.cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # not the machine's
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
        }

    def _write_files(self) -> None:
        d = self.dir
        for sub in ("home", "mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cookie = d / "home" / ".erlang.cookie"
        if not cookie.exists():  # kept across restarts: a CLI started before still matches
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = info",
            *self.conf,
        ]
        (d / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (d / "advanced.config").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[].\n")

    def start(self) -> None:
        require_rabbitmq()
        self._write_files()
        log = (self.dir / "log" / "server.out").open("wb")
        self._server = subprocess.Popen(
            [str(BIN / "rabbitmq-server")],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in pytest must not kill it before stop()
        )
        log.close()
        self._await_registered()
        result = subprocess.run(
            [str(BIN / "rabbitmqctl"), "-n", self.node, "await_startup",
             "--timeout", str(START_TIMEOUT_S)],
            env=self.env(), capture_output=True, text=True,
            timeout=START_TIMEOUT_S + 30, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            tail = self.log_tail()
            self.stop()
            pytest.fail(f"RabbitMQ node {self.node} did not start: {result.stderr}\n{tail}")

    def _await_registered(self) -> None:
        """Wait until the node is known to epmd: await_startup gives up at once on a node
        that is not there yet, and a VM on a busy machine takes seconds to get that far."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._server is not None
            if self._server.poll() is not None:
                tail = self.log_tail()
                self.stop()
                pytest.fail(f"RabbitMQ node {self.node} exited while starting\n{tail}")
            if self._registered():
                return
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        pytest.fail(f"RabbitMQ node {self.node} not up after {START_TIMEOUT_S}s\n{tail}")

    def _registered(self) -> bool:
        names = subprocess.run(
            ["epmd", "-names"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        return f"name {self.node.split('@')[0]} at port" in names

    def ctl(self, *args: str, check: bool = True) -> str:
        """Run rabbitmqctl against this node; fail the test if it fails (unless check=False)."""
        result = subprocess.run(
            [str(BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            pytest.fail(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in sorted((self.dir / "log").glob("*")):
            with contextlib.suppress(OSError):
                text += f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-lines:])
        return text

    def shutdown(self, *, kill: bool = False) -> None:
        """Stop the node and keep its files (restart() brings it back with its data). kill:
        SIGKILL the VM, a crash, instead of a clean stop."""
        server, self._server = self._server, None
        if server is None:
            return
        if not kill:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [str(BIN / "rabbitmqctl"), "-n", self.node, "stop"],
                    env=self.env(), capture_output=True, timeout=STOP_TIMEOUT_S, check=False,
                )  # fmt: skip
        try:
            server.wait(0 if kill else STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)  # its own session: the script and the VM
            server.wait(10)
        # epmd forgets the name a moment later; a start before then would see the old VM
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._registered() and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or crash) the node and start it again: same name, ports and data."""
        self.shutdown(kill=kill)
        self.start()

    def stop(self) -> None:
        """Stop the node (gracefully, then by force) and delete its files."""
        self.shutdown()
        shutil.rmtree(self.base if self._own_base else self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def rabbit_node(conf: Sequence[str] = (), base: Path | None = None) -> Iterator[RabbitNode]:
    """A started private node, for a module-scoped fixture (one node serves many tests)."""
    with RabbitNode(base, conf) as node:
        yield node
