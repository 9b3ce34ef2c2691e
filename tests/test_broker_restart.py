"""Both daemons across a real RabbitMQ restart (`rabbitmqctl stop_app` / `start_app`): every
slot that came due before, during and after it is published once it is back and run once.
The broker restarted is a private node of this test's own (tests/rabbitnode.py), never the
machine's RabbitMQ on 5672."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.rabbit import wait_until
from tests.rabbitnode import RabbitNode, require_rabbitmq
from tests.workerutil import Names, python_command, running_worker, wait_for_file, worker_file

WRITE_RUN_ID = (
    "import json, sys; run = json.load(sys.stdin)\n"
    "with open(sys.argv[1], 'a') as f: f.write(run['id'] + '\\n')"
)


def slot(run_id: str) -> datetime:
    return datetime.strptime(run_id.split("@")[1], "%Y%m%dT%H%M%SZ")


def test_scheduler_and_worker_survive_a_rabbitmq_restart_and_lose_no_slot(
    tmp_path: Path,
) -> None:
    require_rabbitmq()
    with RabbitNode() as node:
        restart_both(tmp_path, node)


def restart_both(tmp_path: Path, node: RabbitNode) -> None:
    names = Names("r.x", "r.tasks", "r.dlx", "r.dead", "r.events", "r.events.all")
    out = tmp_path / "runs"
    extra = {
        "broker": {"url": node.url, "exchange": names.exchange},
        "state": str(tmp_path / "state.db"),
        "jobs": {"tick": {"every": "1s", "task": "tick.write", "grace": "2m"}},
    }
    tasks = {"tick.write": {"command": python_command(WRITE_RUN_ID, str(out))}}
    config = worker_file(tmp_path, names, tasks, extra=extra)
    with running_worker(config, tmp_path) as worker:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "beatd", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_file(out)
            node.ctl("stop_app")
            try:
                time.sleep(3)  # three slots come due with no broker
            finally:
                node.ctl("start_app")
                node.ctl("await_startup")
            restarted = datetime.now(UTC).replace(tzinfo=None)  # as naive as slot()
            wait_until(
                lambda: any(slot(i) > restarted + timedelta(seconds=2) for i in ids(out)),
                timeout=90,
                what="runs after the restart",
            )
        finally:
            scheduler.send_signal(signal.SIGTERM)
            _, err = scheduler.communicate(timeout=30)
        assert scheduler.returncode == 0, err
        assert worker.stop() == 0, worker.log
    runs = ids(out)
    assert len(runs) == len(set(runs)), "each run ran once"
    slots = sorted(slot(i) for i in runs)
    expected = [slots[0] + timedelta(seconds=k) for k in range(len(slots))]
    assert slots == expected, "no slot lost: before, during or after the restart"
    assert "lost the broker connection" in err


def ids(path: Path) -> list[str]:
    return path.read_text().split()
