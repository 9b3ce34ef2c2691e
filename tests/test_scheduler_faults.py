"""The scheduler against a broker that goes away: unreachable at start, a cut network, a
connection closed by RabbitMQ, a list of URLs. Faults are real: a TCP proxy that drops every
connection, and rabbitmqctl."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest

from beatd.runtime.state import read_states
from beatd.scheduler.daemon import SchedulerDaemon
from tests.clock import FakeClock
from tests.rabbit import Rabbit, TcpProxy, async_wait_until, rabbitmqctl
from tests.test_scheduler import T0, advance, config, messages, running

EVERY_MINUTE = "  job:\n    every: 1m\n    task: t.job\n"


def with_url(path: Path, url: str) -> Path:
    path.write_text(path.read_text().replace("broker:\n", f"broker:\n  url: {url}\n", 1))
    return path


def test_a_broker_unreachable_at_start_is_logged_once_and_missed_runs_follow_the_policy(
    tmp_path: Path, rabbit: Rabbit, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.cut()
    path = with_url(config(tmp_path, rabbit, EVERY_MINUTE), proxy.url)
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    got: list[str] = []

    async def body(s: SchedulerDaemon) -> None:
        await async_wait_until(lambda: s.scheduler is not None)  # started: its clock was read
        for _ in range(5):  # 05:30 and 05:31 come due with nowhere to go
            await advance(s, clock, seconds=30)
            await asyncio.sleep(0.4)
        assert s.scheduler.link.state == "down"
        proxy.restore()  # 05:32:29 now: 05:32 is on time, 05:30 and 05:31 are missed
        await async_wait_until(lambda: s.scheduler.link.state == "up", timeout=40)
        got.extend(m.properties.message_id for m in await messages(rabbit, queue, 1))
        await asyncio.sleep(0.3)
        got.extend(m.properties.message_id for m in rabbit.drain(queue))

    with caplog.at_level(logging.INFO, logger="beatd"):
        asyncio.run(running(path, clock, body, up=False))
    assert got == ["job@20261121T053200Z"]
    assert read_states(tmp_path / "state.db")["job"].missed == 2
    outage = [
        r for r in caplog.records if r.name == "beatd.broker" and r.levelno >= logging.WARNING
    ]
    assert len(outage) == 1, [r.getMessage() for r in outage]
    assert "unreachable" in outage[0].getMessage()
    assert any(
        "after" in r.getMessage() and "without the broker" in r.getMessage() for r in caplog.records
    )


def test_broker_urls_are_tried_in_order(
    tmp_path: Path, rabbit: Rabbit, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.cut()
    real = "amqp://guest:guest@127.0.0.1:5672/%2F"
    path = with_url(config(tmp_path, rabbit, EVERY_MINUTE), f"[{proxy.url}, {real}]")
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))

    async def body(s: SchedulerDaemon) -> None:
        assert s.scheduler.link.url == "amqp://guest:***@127.0.0.1:5672/%2F"
        await advance(s, clock, seconds=1)
        assert len(await messages(rabbit, queue, 1)) == 1

    with caplog.at_level(logging.INFO, logger="beatd.broker"):
        asyncio.run(running(path, clock, body))
    assert not any("unreachable" in r.getMessage() for r in caplog.records)


def test_a_cut_network_is_survived_and_what_came_due_meanwhile_is_published(
    tmp_path: Path, rabbit: Rabbit, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    path = with_url(config(tmp_path, rabbit, EVERY_MINUTE), proxy.url)
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    got: list[str] = []

    async def body(s: SchedulerDaemon) -> None:
        await advance(s, clock, seconds=1)
        got.extend(m.properties.message_id for m in await messages(rabbit, queue, 1))
        proxy.cut()
        await async_wait_until(lambda: s.scheduler.link.state == "down")
        await advance(s, clock, seconds=50)  # 05:30:50: 05:31 not yet due
        await advance(s, clock, seconds=20)  # 05:31:10: due, but the network is down
        await asyncio.sleep(0.5)
        proxy.restore()
        await async_wait_until(lambda: s.scheduler.link.state == "up", timeout=40)
        got.extend(m.properties.message_id for m in await messages(rabbit, queue, 1))

    with caplog.at_level(logging.WARNING, logger="beatd.broker"):
        asyncio.run(running(path, clock, body))
    assert got == ["job@20261121T053000Z", "job@20261121T053100Z"]
    lost = [r for r in caplog.records if "lost the broker connection" in r.getMessage()]
    assert len(lost) == 1


def test_a_connection_closed_by_rabbitmq_is_reopened(tmp_path: Path, rabbit: Rabbit) -> None:
    path = config(tmp_path, rabbit, EVERY_MINUTE)
    queue = rabbit.queue(rabbit.name("x"))
    clock = FakeClock(T0 - timedelta(seconds=1))
    marker = f"beatd scheduler (pid {os.getpid()})"

    async def body(s: SchedulerDaemon) -> None:
        first = s.scheduler.link.channel_now()
        listing = await asyncio.to_thread(
            rabbitmqctl, "list_connections", "pid", "client_properties"
        )
        pids = [line.split("\t")[0] for line in listing.splitlines() if marker in line]
        assert pids, listing
        for pid in pids:
            await asyncio.to_thread(rabbitmqctl, "close_connection", pid, "beatd test")
        await async_wait_until(
            lambda: s.scheduler.link.channel_now() not in (None, first), timeout=40
        )
        await advance(s, clock, seconds=1)
        assert len(await messages(rabbit, queue, 1)) == 1

    asyncio.run(running(path, clock, body))


def test_the_broker_password_never_appears_in_the_log(
    tmp_path: Path, rabbit: Rabbit, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.cut()
    url = proxy.url.replace("guest:guest", "guest:s3cr3t-pw")
    path = with_url(config(tmp_path, rabbit, EVERY_MINUTE), url)
    clock = FakeClock(T0)

    async def body(s: SchedulerDaemon) -> None:
        await asyncio.sleep(2)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(running(path, clock, body, up=False))
    assert "unreachable" in caplog.text
    assert "s3cr3t-pw" not in caplog.text
    assert "guest:***@" in caplog.text
