"""`beatd status`, `pause` and `resume` through the real RabbitMQ, against `beatd run`
processes: asked from "another host" (the CLI's file keeps its state elsewhere, so no local
socket can answer), every instance of an HA group answers, a pause survives a restart, junk on
the control exchange and an unsigned pause are refused while the runs go on. Each test has its
own exchanges (the control one included), deleted afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from beatd.cli import main
from beatd.core import control as requests
from tests.rabbit import AMQP_URL, Rabbit, require_broker, unique_prefix, wait_until

pytestmark = pytest.mark.broker
KEY = "s" * 40


@pytest.fixture
def rabbit(request: pytest.FixtureRequest) -> Iterator[Rabbit]:
    require_broker()
    r = Rabbit(unique_prefix(request.node.name))
    yield r
    r.cleanup()


class Daemon:
    """One `beatd run` (its own folder: another host), logging to a file."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".log")
        self.process = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "beatd", "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=out,
                env={**os.environ, "BEATD_LOG_LEVEL": "INFO"},
            )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def schedule(rabbit: Rabbit, folder: Path, extra: str = "") -> Path:
    folder.mkdir()
    (folder / "k1.key").write_text(KEY)
    path = folder / "beatd.yaml"
    path.write_text(
        f"broker:\n  url: {AMQP_URL}\n  exchange: {rabbit.name('x')}\n"
        f"  control_exchange: {rabbit.name('control')}\n"
        f"state: state.db\n{extra}"
        "jobs:\n  tick:\n    every: 1s\n    task: t.tick\n"
        "  other:\n    every: 1s\n    task: t.other\n"
    )
    return path


def setup_names(rabbit: Rabbit) -> str:
    """The runs queue; the exchanges to delete afterwards."""
    rabbit.exchanges.append(rabbit.name("control"))
    return rabbit.queue(rabbit.name("x"), "#")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status(capsys: pytest.CaptureFixture[str], path: Path, *more: str) -> dict[str, Any]:
    """The --json answer, once the schedulers answer."""
    answer: dict[str, Any] = {}

    def answers() -> bool:
        code, out, _ = cli(capsys, "status", "-c", str(path), "--json", *more)
        answer.update(json.loads(out) if code == 0 else {})
        return code == 0

    wait_until(answers, what="an answer to beatd status")
    return answer


def published(answer: dict[str, Any], job: str) -> int:
    return int(next(j["published"] for j in answer["jobs"] if j["job"] == job))


def test_status_and_pause_from_another_host_and_the_pause_survives_a_restart(
    rabbit: Rabbit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_names(rabbit)
    daemon = Daemon(schedule(rabbit, tmp_path / "a"))
    here = schedule(rabbit, tmp_path / "b")  # the operator's copy: its state (and socket) in b/
    try:
        answer = status(capsys, here)
        assert answer["via"] == "broker" and answer["pid"] == daemon.process.pid
        assert answer["leading"] is True and answer["role"] == "single" and not answer["others"]
        code, out, err = cli(capsys, "status", "-c", str(here))
        assert code == 0 and err == ""
        assert out.startswith(
            f"beatd run on {answer['host']} (pid {daemon.process.pid}): broker up"
        )

        code, out, _ = cli(capsys, "pause", "-c", str(here), "tick", "--note", "db work")
        assert code == 0
        who = f"{answer['host']} (pid {daemon.process.pid})"
        assert out == f"tick: paused in 1 running scheduler(s): {who}\n"
        assert json.loads((tmp_path / "a" / "paused.json").read_text()) == {"tick": "db work"}
        assert not (tmp_path / "b" / "paused.json").exists()
        # In effect: `other` goes on publishing, `tick` does not.
        before = status(capsys, here)
        wait_until(
            lambda: published(status(capsys, here), "other") >= published(before, "other") + 2,
            what="two more runs of other",
        )
        after = status(capsys, here)
        assert published(after, "tick") == published(before, "tick")

        assert daemon.stop() == 0
        daemon = Daemon(daemon.config)
        answer = status(capsys, here)
        assert answer["pid"] == daemon.process.pid
        assert {j["job"]: j["paused"] for j in answer["jobs"]} == {"tick": "db work", "other": None}
        code, out, _ = cli(capsys, "resume", "-c", str(here), "tick")
        assert code == 0 and out.startswith("tick: resumed in 1 running scheduler(s)")
        assert json.loads((tmp_path / "a" / "paused.json").read_text()) == {}
    finally:
        assert daemon.stop() == 0
    # Auto-delete: the control exchange went with the last scheduler; nothing is left over.
    assert not rabbit.exchange_exists(rabbit.name("control"))
    code, out, err = cli(capsys, "status", "-c", str(here))
    assert code == 3 and out == ""
    where = f"(exchange {rabbit.name('control')}, key {rabbit.name('x')})"
    assert err.startswith(f"beatd run is not answering on the broker {where}")


def test_every_ha_instance_answers_and_status_shows_the_leader(
    rabbit: Rabbit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_names(rabbit)
    rabbit.queues += [f"beatd.ha.{rabbit.prefix}.progress", f"beatd.ha.{rabbit.prefix}.token"]
    ha = f"ha:\n  name: {rabbit.prefix}\n  poll: 200ms\n"
    daemons = [Daemon(schedule(rabbit, tmp_path / name, ha)) for name in "ab"]
    here = schedule(rabbit, tmp_path / "c", ha)
    try:

        def both_and_a_leader() -> bool:
            answer = status(capsys, here, "--wait", "3s")
            return len(answer["others"]) == 1 and answer["leading"] is True

        wait_until(both_and_a_leader, what="two answers, one from the leader")
        answer = status(capsys, here, "--wait", "3s")
        [standby] = answer["others"]
        assert {answer["pid"], standby["pid"]} == {d.process.pid for d in daemons}
        assert answer["role"].startswith("ha leader since") and standby["leading"] is False
        code, out, _ = cli(capsys, "status", "-c", str(here), "--wait", "3s")
        assert code == 0
        assert f"(pid {answer['pid']}): broker up; ha leader since" in out.splitlines()[0]
        assert f"(pid {standby['pid']}): broker up; ha standby" in out

        code, out, _ = cli(capsys, "pause", "-c", str(here), "tick", "--wait", "3s")
        assert code == 0 and out.startswith("tick: paused in 2 running scheduler(s)")
        for name in "ab":
            assert json.loads((tmp_path / name / "paused.json").read_text()) == {"tick": ""}
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0


def test_junk_and_an_unsigned_pause_are_refused_and_the_runs_go_on(
    rabbit: Rabbit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = setup_names(rabbit)
    signing = "signing:\n  key: k1\n  keys:\n    k1: k1.key\n"
    daemon = Daemon(schedule(rabbit, tmp_path / "a", signing))
    here = schedule(rabbit, tmp_path / "b", signing)
    try:
        status(capsys, here)  # it answers: the control queue is bound
        control, key = rabbit.name("control"), rabbit.name("x")
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            answers: dict[str, Any] = {}

            def on_answer(_ch: Any, _m: Any, props: Any, body: bytes) -> None:
                answers[props.correlation_id] = json.loads(body)

            channel.basic_consume(requests.REPLY_TO, on_answer, auto_ack=True)
            sent = {
                "junk": b"\xff not json",
                "big": b'{"command": "status", "note": "' + b"x" * 1_000_000 + b'"}',
                "unsigned": requests.Request("pause", "tick", "sneaky").encode(),
            }
            for name, body in sent.items():
                props = pika.BasicProperties(correlation_id=name, reply_to=requests.REPLY_TO)
                channel.basic_publish(control, key, body, props)
            wait_until(
                lambda: connection.process_data_events(0.1) or len(answers) == len(sent),
                what="three answers",
            )
        finally:
            connection.close()
        assert answers["junk"]["error"] == "refused: malformed (not JSON)"
        assert answers["big"]["error"].startswith("refused: malformed (1000")
        assert answers["unsigned"]["error"] == "refused: unsigned (no beatd-signature header)"
        assert status(capsys, here)["jobs"][0]["paused"] is None
        # The runs go on, and a signed pause (the CLI signs with the file's key) is taken.
        rabbit.drain(runs)
        rabbit.wait_for(runs, 4)
        code, out, _ = cli(capsys, "pause", "-c", str(here), "tick", "--note", "signed")
        assert code == 0 and out.startswith("tick: paused in 1 running scheduler(s)")
        # Without the key in its file, an operator's pause is refused, and nothing changes.
        unsigned = tmp_path / "b" / "unsigned.yaml"
        unsigned.write_text(here.read_text().replace(signing, ""))
        code, _, err = cli(capsys, "resume", "-c", str(unsigned), "tick")
        assert code == 1 and "refused: unsigned" in err
        assert json.loads((tmp_path / "a" / "paused.json").read_text()) == {"tick": "signed"}
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "refused: malformed (not JSON)" in log and "Traceback" not in log
