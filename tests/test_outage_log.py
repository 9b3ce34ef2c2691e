"""A broker outage in the log, over the real RabbitMQ behind a TCP proxy that drops every
connection: exactly one line when it goes (with the cause), one when it is back, and nothing
per retry in between."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from beatd.runtime import rabbitmq
from beatd.scheduler.daemon import SchedulerDaemon
from tests.clock import FakeClock
from tests.rabbit import Rabbit, TcpProxy, async_wait_until
from tests.test_scheduler import T0, config, running


def test_a_lost_broker_is_one_line_with_the_cause_and_its_return_one_more(
    tmp_path: Path,
    rabbit: Rabbit,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rabbitmq, "BACKOFF_FIRST_S", 0.05)  # several retries in a short outage
    path = config(tmp_path, rabbit, "  job:\n    every: 1h\n    task: t.job\n")
    path.write_text(path.read_text().replace("broker:\n", f"broker:\n  url: {proxy.url}\n", 1))
    clock = FakeClock(T0)
    attempts: list[int] = []

    async def body(s: SchedulerDaemon) -> None:
        proxy.cut()
        await async_wait_until(lambda: s.scheduler.link.state == "down")
        await asyncio.sleep(0.5)  # retries at 0.05, 0.1, 0.2 s: all refused
        attempts.append(sum("still unreachable" in r.getMessage() for r in caplog.records))
        proxy.restore()
        await async_wait_until(lambda: s.scheduler.link.state == "up", timeout=20)

    with caplog.at_level(logging.DEBUG, logger="beatd.broker"):
        asyncio.run(running(path, clock, body))
    loud = [
        r.getMessage()
        for r in caplog.records
        if r.name == "beatd.broker" and r.levelno >= logging.INFO
    ]
    assert attempts[0] >= 2, "it did retry meanwhile (at DEBUG)"
    assert len(loud) == 3, loud
    assert loud[0].startswith("connected to amqp://guest:***@127.0.0.1:")
    assert loud[1].startswith("lost the broker connection (")
    assert loud[1] != "lost the broker connection (); reconnecting", "the cause is named"
    assert loud[2].startswith("connected to ") and "s without the broker" in loud[2]
