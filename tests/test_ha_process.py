"""`ha:` with real `beatd run` processes on the real RabbitMQ: SIGKILL the leader and a standby
takes over with no slot lost; SIGSTOP it past the heartbeat and the resumed instance publishes
nothing (its connection was the fencing token); a broker restart (a private node) leaves exactly
one leader and no slot lost; the lock and progress on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import pytest

from beatd.core.config import BrokerConfig
from beatd.core.messages import Properties
from beatd.runtime.rabbitmq import Link
from tests.rabbit import AMQP_URL, Rabbit, async_wait_until, wait_until
from tests.rabbitnode import RabbitNode, require_rabbitmq


class Instance:
    """One `beatd run` with its own state file (another host), logging to its own file."""

    def __init__(self, tmp_path: Path, config: Path, index: int) -> None:
        self.log = tmp_path / f"beatd-{index}.log"
        self.config = config
        self.process = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "beatd", "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, "BEATD_LOG_LEVEL": "INFO"},
            )

    def text(self) -> str:
        return self.log.read_text()

    def leads(self) -> bool:
        return self.text().count("beatd.ha: leading") > self.text().count("lost the leadership")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        return self.process.wait(timeout=20)


def cluster(
    tmp_path: Path,
    rabbit: Rabbit,
    count: int,
    heartbeat: str = "5s",
    url: str = AMQP_URL,
    queue_type: str = "classic",
) -> list[Instance]:
    exchange = rabbit.name("x")
    rabbit.exchanges.append(exchange)
    rabbit.queues += [f"beatd.ha.{rabbit.prefix}.progress", f"beatd.ha.{rabbit.prefix}.token"]
    text = (
        f"broker:\n  url: {url}\n  exchange: {exchange}\n  heartbeat: {heartbeat}\n"
        f"ha:\n  name: {rabbit.prefix}\n  poll: 200ms\n  queue_type: {queue_type}\n"
        f"state: state.db\njobs:\n  tick:\n    every: 500ms\n    task: t.tick\n"
    )
    instances = []
    for index in range(count):  # each instance its own file: its own state, as on another host
        path = tmp_path / f"beatd-{index}.yaml"
        path.write_text(text.replace("state.db", f"state-{index}.db"))
        instances.append(Instance(tmp_path, path, index))
    return instances


def leader(instances: list[Instance]) -> Instance:
    leaders: list[Instance] = []

    def one() -> bool:
        leaders[:] = [i for i in instances if i.process.poll() is None and i.leads()]
        return len(leaders) == 1

    wait_until(one, what="exactly one leader")
    return leaders[0]


def more(count: Callable[[], int], what: str) -> None:
    """Wait for two more runs in the queue (a second of slots)."""
    start = count()
    wait_until(lambda: count() >= start + 2, what=what)


def depth(url: str, queue: str) -> int:
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(url))) as connection:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)


def slot_of(run_id: str) -> datetime:
    stamp = run_id.split("@")[1].rstrip("Z")  # 20261121T053000Z or 20261121T053000.500Z
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f" if "." in stamp else "%Y%m%dT%H%M%S")


def slots(ids: Counter[str]) -> list[datetime]:
    return sorted(slot_of(i) for i in ids)


def assert_every_slot_once(ids: Counter[str], in_flight: int = 0) -> None:
    """Each 500 ms slot from the first to the last, under its one id; at most in_flight
    published twice (the batch the killed leader had confirmed but not yet recorded)."""
    times = slots(ids)
    expected = (times[-1] - times[0]) / timedelta(milliseconds=500) + 1
    assert len(times) == expected, f"slots lost: {len(times)} of {expected:.0f}"
    doubled = [i for i, n in ids.items() if n > 1]
    assert len(doubled) <= in_flight, doubled


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_sigkill_of_the_leader_hands_over_with_no_slot_lost(
    tmp_path: Path, rabbit: Rabbit, queue_type: str
) -> None:
    queue = rabbit.queue(rabbit.name("x"))
    instances = cluster(tmp_path, rabbit, 3, queue_type=queue_type)
    try:
        first = leader(instances)
        wait_until(lambda: rabbit.depth(queue) >= 4, what="runs from the first leader")
        first.process.kill()
        first.process.wait()
        second = leader(instances)
        assert second is not first
        assert "resuming from the progress" in second.text()
        more(lambda: rabbit.depth(queue), "runs from the new leader")
    finally:
        codes = [i.stop() for i in instances]
    assert codes.count(0) == 2, [i.text()[-2000:] for i in instances]
    ids = Counter(m.properties.message_id for m in rabbit.drain(queue))
    assert_every_slot_once(ids, in_flight=1)


def test_a_leader_paused_past_its_heartbeat_is_replaced_and_publishes_nothing_after(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    queue = rabbit.queue(rabbit.name("x"))
    instances = cluster(tmp_path, rabbit, 2, heartbeat="2s")
    try:
        paused = leader(instances)
        wait_until(lambda: rabbit.depth(queue) >= 2, what="runs from the first leader")
        paused.process.send_signal(signal.SIGSTOP)
        other = next(i for i in instances if i is not paused)
        wait_until(other.leads, what="the standby taking over")
        resumed_at = datetime.now(UTC)
        paused.process.send_signal(signal.SIGCONT)
        wait_until(lambda: "lost the leadership" in paused.text(), what="the fenced leader")
        after = lambda: paused.text().split("lost the leadership")[-1]  # noqa: E731
        wait_until(lambda: "standing by: " in after(), what="the resumed one standing by")
        more(lambda: rabbit.depth(queue), "runs after the resumed one stood by")
    finally:
        codes = [i.stop() for i in instances]
    assert codes == [0, 0], [i.text()[-2000:] for i in instances]
    received = rabbit.drain(queue)
    ids = Counter(m.properties.message_id for m in received)
    # The stop may land between a publish and its confirm: the new leader then sends that
    # batch again under the same id (the in-flight window, as for a kill). Anything the resumed
    # instance sent would also be under ids the new leader used, published after SIGCONT: so
    # every id sent twice must have its first copy from before the pause ended.
    assert_every_slot_once(ids, in_flight=1)
    for run_id in (i for i, n in ids.items() if n > 1):
        stamps = [
            datetime.fromisoformat(json.loads(m.body)["published_at"])
            for m in received
            if m.properties.message_id == run_id
        ]
        assert min(stamps) < resumed_at, f"{run_id} published twice after the pause: {stamps}"


def test_the_exclusive_queue_is_held_by_one_connection_and_freed_when_it_closes(
    rabbit: Rabbit,
) -> None:
    lock, store = rabbit.name("lock"), rabbit.name("progress")
    rabbit.queues.append(store)
    config = BrokerConfig(urls=(AMQP_URL,))

    async def go() -> None:
        a, b = Link(config, name="a"), Link(config, name="b")
        tasks = [asyncio.create_task(link.run()) for link in (a, b)]
        await async_wait_until(lambda: a.channel_now() and b.channel_now())
        assert await a.try_lock(lock) and await a.try_lock(lock), "held, and held again"
        assert not await b.try_lock(lock)
        assert b.channel_now() is not None, "a refusal closes only the throwaway channel"
        arguments = {"x-max-length": 1, "x-overflow": "drop-head"}
        assert await a.read_last(store, arguments) is None
        channel = a.channel_now()
        assert channel is not None
        for body in (b"one", b"two"):
            await channel.send("", store, body, Properties(message_id="p"))
        assert await b.read_last(store, arguments) == b"two"
        assert await a.read_last(store, arguments) == b"two", "read, not taken"
        await a.close()
        await async_wait_until(lambda: True)
        assert await b.try_lock(lock), "the lock went with a's connection"
        await b.close()
        await asyncio.gather(*tasks)

    asyncio.run(go())


def test_after_the_broker_restarts_exactly_one_instance_leads_and_no_slot_is_lost(
    tmp_path: Path, rabbit: Rabbit
) -> None:
    require_rabbitmq()
    with RabbitNode(tmp_path / "node") as node:
        exchange, queue = rabbit.name("x"), rabbit.name("q")
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(node.url))) as c:
            channel = c.channel()
            channel.exchange_declare(exchange, "topic", durable=True)
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, exchange, "#")
        instances = cluster(tmp_path, rabbit, 3, url=node.url)
        rabbit.exchanges.clear()  # on the private node, which goes with its files
        rabbit.queues.clear()
        try:
            before = leader(instances)
            more(lambda: depth(node.url, queue), "runs before the restart")
            node.ctl("stop_app")
            wait_until(lambda: "lost the leadership" in before.text(), what="the leader to notice")
            node.ctl("start_app")
            wait_until(
                lambda: sum(i.leads() for i in instances) == 1, what="exactly one leader again"
            )
            more(lambda: depth(node.url, queue), "runs after the restart")
            assert sum(i.leads() for i in instances) == 1
        finally:
            codes = [i.stop() for i in instances]
        assert codes == [0, 0, 0], [i.text()[-2000:] for i in instances]
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(node.url))) as c:
            channel = c.channel()
            ids: Counter[str] = Counter()
            while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
                ids[json.loads(got[2])["id"]] += 1
    # The slots due while the broker was away went out when it came back (within grace).
    assert_every_slot_once(ids, in_flight=1)
