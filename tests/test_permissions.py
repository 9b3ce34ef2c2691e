"""Least privilege: `beatd run`, `beatd worker` and `beatd trigger` work under RabbitMQ users
that have exactly the permissions the README gives them, and nothing more.

The `rabbitmqctl set_permissions` lines are read from the README itself, so the documented
lines are the tested lines. Everything lives in a vhost and users of this test's own, deleted
afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.rabbit import HOST, PORT, rabbitmqctl, require_broker

README = Path(__file__).parent.parent / "README.md"
ROLES = ("beatd-scheduler", "beatd-worker", "beatd-trigger", "beatd-control")
DOC_VHOST = "beatd"


def documented_permissions() -> dict[str, tuple[str, str, str]]:
    """The README's set_permissions lines: user -> (configure, write, read)."""
    pattern = re.compile(
        rf"^rabbitmqctl set_permissions -p {DOC_VHOST} (\S+) '([^']*)' '([^']*)' '([^']*)'$",
        re.MULTILINE,
    )
    found = {m[1]: (m[2], m[3], m[4]) for m in pattern.finditer(README.read_text())}
    assert sorted(found) == sorted(ROLES), f"README lines for {sorted(found)}"
    return found


def test_the_readme_gives_each_daemon_no_more_than_it_needs() -> None:
    perms = documented_permissions()
    # trigger consumes nothing; the scheduler only its own control queue (server-named).
    assert perms["beatd-trigger"] == ("^beatd$", "^beatd$", "^$")
    read = re.compile(perms["beatd-scheduler"][2])
    assert [n for n in ("beatd", "beatd.tasks", "beatd.dead") if read.match(n)] == []
    assert read.match("beatd.control") and read.match("amq.gen-Xq2Vt")
    # An operator asking from another host may publish requests, nothing else.
    assert perms["beatd-control"] == ("^$", "^beatd\\.control$", "^$")
    # A worker's password may not publish to the runs exchange (its own queue it can reach
    # through amq.default, which retries need: the README says only signing stops that).
    assert not re.match(perms["beatd-worker"][1], "beatd")


@dataclass
class Tenant:
    vhost: str
    users: dict[str, str]  # role -> user name
    password: str

    def url(self, role: str) -> str:
        return f"amqp://{self.users[role]}:{self.password}@{HOST}:{PORT}/{self.vhost}"


@pytest.fixture
def tenant() -> Iterator[Tenant]:
    """A vhost and one user per role with the README's permissions; deleted afterwards."""
    require_broker()
    tag = uuid.uuid4().hex[:8]
    t = Tenant(f"beatd-perm-{tag}", {r: f"{r}-{tag}" for r in ROLES}, uuid.uuid4().hex)
    rabbitmqctl("add_vhost", t.vhost)
    try:
        for role, (configure, write, read) in documented_permissions().items():
            rabbitmqctl("add_user", t.users[role], t.password)
            rabbitmqctl("set_permissions", "-p", t.vhost, t.users[role], configure, write, read)
        yield t
    finally:
        leftovers = [f"vhost {t.vhost}"] * (not _remove("delete_vhost", t.vhost))
        leftovers += [f"user {u}" for u in t.users.values() if not _remove("delete_user", u)]
        assert not leftovers, f"could not delete {', '.join(leftovers)} from the shared broker"


def _remove(command: str, name: str) -> bool:
    """Delete a vhost or user; True once it is gone. A few tries: on a loaded machine
    rabbitmqctl sometimes cannot reach the node in time."""
    for _ in range(3):
        result = subprocess.run(
            ["rabbitmqctl", command, name], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode == 0 or "does not exist" in result.stderr + result.stdout:
            return True
    return False


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "beatd", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for(condition: object, what: str, logs: list[Path], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in logs if p.exists())
            pytest.fail(f"no {what} after {timeout}s\n{shown}")
        time.sleep(0.1)


@pytest.mark.broker
def test_both_daemons_and_trigger_work_with_exactly_the_documented_permissions(
    tenant: Tenant, tmp_path: Path
) -> None:
    ran, flaky_done, manual = tmp_path / "ran", tmp_path / "flaky-done", tmp_path / "manual"
    scheduler_file = write(
        tmp_path / "beatd.yaml",
        f"""\
        broker:
          url: {tenant.url("beatd-scheduler")}
        state: state.db
        jobs:
          touch:
            every: 1s
            task: perm.touch
          flaky:
            every: 1s
            task: perm.flaky
          ghost:
            every: 1s
            task: perm.unknown
          manual:
            at: "2020-01-01T00:00:00Z"
            task: perm.manual
        """,
    )
    failed = tmp_path / "failed"
    flaky = f"test -e {failed} || {{ touch {failed}; exit 3; }}; touch {flaky_done}"
    worker_file = write(
        tmp_path / "worker.yaml",
        f"""\
        broker:
          url: {tenant.url("beatd-worker")}
        worker:
          state: {tmp_path / "worker.db"}
        tasks:
          perm.touch:
            command: ["touch", "{ran}"]
          perm.flaky:   # fails once, then succeeds: a retry through a holding queue
            command: ["sh", "-c", "{flaky}"]
            retries: 1
            retry_delay: 500ms
          perm.manual:
            command: ["touch", "{manual}"]
        """,
    )
    trigger_file = write(
        tmp_path / "trigger.yaml",
        scheduler_file.read_text().replace(
            tenant.users["beatd-scheduler"], tenant.users["beatd-trigger"]
        ),
    )
    logs = [tmp_path / "worker.log", tmp_path / "scheduler.log"]
    worker = start(["worker", "-c", str(worker_file)], logs[0])
    try:
        wait_for(lambda: "consuming" in logs[0].read_text(), "worker ready", logs)
        scheduler = start(["run", "-c", str(scheduler_file)], logs[1])
        try:
            wait_for(ran.exists, "scheduled run", logs)
            wait_for(flaky_done.exists, "retried run", logs)
            wait_for(lambda: "unknown_task" in logs[0].read_text(), "dead letter", logs)
            trigger = subprocess.run(
                [sys.executable, "-m", "beatd", "trigger", "-c", str(trigger_file), "manual"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert trigger.returncode == 0, trigger.stderr
            wait_for(manual.exists, "triggered run", logs)
            # An operator elsewhere: its own state folder (no socket), the control user.
            elsewhere = tmp_path / "elsewhere"
            elsewhere.mkdir()
            operator = write(
                elsewhere / "beatd.yaml",
                scheduler_file.read_text().replace(
                    tenant.users["beatd-scheduler"], tenant.users["beatd-control"]
                ),
            )
            for command in (["status"], ["pause", "touch"], ["resume", "touch"]):
                asked = subprocess.run(
                    [sys.executable, "-m", "beatd", *command, "-c", str(operator)],
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                assert asked.returncode == 0, asked.stderr
                assert "(pid " in asked.stdout and asked.stderr == "", "answered through the broker"
        finally:
            scheduler.send_signal(signal.SIGTERM)
            assert scheduler.wait(30) == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    text = "\n".join(p.read_text() for p in logs)
    assert "ACCESS_REFUSED" not in text and "403" not in text, text


@pytest.mark.broker
def test_a_worker_password_cannot_publish_to_the_runs_exchange(tenant: Tenant) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(tenant.url("beatd-worker")))
    try:
        channel = connection.channel()
        channel.exchange_declare("beatd", "topic", durable=True)  # it may configure it
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish("beatd", "perm.touch", b"{}")
        assert refused.value.reply_code == 403
    finally:
        if connection.is_open:
            connection.close()
