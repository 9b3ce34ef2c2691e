"""Driving the Worker over the in-memory broker: publish into its exchange, let it settle,
look at what it acked, retried, dead-lettered and told the events exchange."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from beatd.core.config import read_config
from beatd.core.messages import Properties
from beatd.runtime.seen import SeenStore
from beatd.worker import runner
from beatd.worker.worker import Worker
from tests.clock import FakeClock
from tests.fakebroker import FakeBroker, Message, Queue
from tests.steps import quiet

EXCHANGE, QUEUE, DEAD, EVENTS = "beatd", "w.tasks", "w.dead", "w.events"


def message(task: str, run_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "v": 1, "id": run_id, "job": run_id.split("@", maxsplit=1)[0], "task": task, "args": [],
        "kwargs": {}, "scheduled_at": "2026-11-21T05:30:00Z",
        "published_at": "2026-11-21T05:30:00.004Z", "expires_at": None,
        "trigger": "schedule", **fields,
    }  # fmt: skip


class Pool:
    """A Worker, its broker, run-id store and clock."""

    def __init__(
        self,
        tmp_path: Path,
        tasks: dict[str, Any],
        *,
        now: datetime,
        concurrency: int = 2,
        broker: FakeBroker | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        data = {
            "broker": {"exchange": EXCHANGE},
            "worker": {
                "queue": QUEUE, "concurrency": concurrency, "dead_letter_exchange": "w.dlx",
                "dead_letter_queue": DEAD, "events_exchange": EVENTS,
                "state": str(tmp_path / "seen.db"),
            },
            "tasks": tasks,
            **(extra or {}),
        }  # fmt: skip
        path = tmp_path / "worker.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.config = read_config(path, {})
        self.tasks = runner.prepare(self.config.tasks, str(path), {}, os.geteuid())
        self.store_path = tmp_path / "seen.db"
        self.clock = FakeClock(now)
        self.broker = broker or FakeBroker()
        self.worker: Worker | None = None

    async def start(self) -> Worker:
        store = SeenStore(self.store_path, 1000, clock=self.clock)
        self.worker = Worker(
            self.config, self.tasks, store, self.broker.connect, env={}, clock=self.clock
        )
        self.worker.start()
        await quiet()
        events = self.broker.queues.setdefault(f"{EVENTS}.all", Queue(f"{EVENTS}.all", {}))
        self.broker.bindings.add((EVENTS, events.name, "#"))
        return self.worker

    async def stop(self) -> None:
        assert self.worker is not None
        await self.worker.drain()
        await self.worker.close()
        self.worker.store.close()
        self.worker = None

    def publish(self, body: dict[str, Any] | bytes, **headers: Any) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        run_id = body.get("id", "") if isinstance(body, dict) else ""
        task = body.get("task", "x") if isinstance(body, dict) else "x"
        props = Properties(message_id=str(run_id), type=str(task), headers=headers)
        assert self.broker.enqueue(Message(EXCHANGE, str(task), raw, props), EXCHANGE, str(task))

    async def settle(self) -> None:
        """Until every delivery so far has been run and settled."""
        assert self.worker is not None
        for _ in range(50):
            await quiet()
            await self.worker.idle()
            if not self.worker._handlers and not self.broker.queues[QUEUE].ready:
                break
        await quiet()

    def dead(self) -> list[tuple[str, str]]:
        """(run id, reason) of each dead letter."""
        return [
            (m.properties.message_id, m.properties.headers.get("beatd-reason", ""))
            for m in self.broker.messages(DEAD)
        ]

    def events(self) -> list[str]:
        return [m.routing_key for m in self.broker.messages(f"{EVENTS}.all")]
