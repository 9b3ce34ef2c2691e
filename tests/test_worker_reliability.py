"""The worker's failure paths from issue 9 (items 2, 15 and 17), driven over the in-memory
broker: a publish that can never succeed, a call stuck past its timeout at SIGTERM, a forged
attempt header for a running id or a dead-lettered one, its exchange deleted under it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pika.exceptions
import pytest

from beatd.runtime.clock import system_clock
from beatd.runtime.rabbitmq import Link
from beatd.runtime.seen import SeenStore
from beatd.worker import daemon, outbox
from beatd.worker.worker import Worker
from tests.clock import utc
from tests.rabbit import Rabbit, async_wait_until
from tests.steps import driven, quiet
from tests.worker_steps import DEAD, EXCHANGE, QUEUE, Pool, message
from tests.workerutil import Names, publish, worker_file
from tests.workerutil import message as rmessage

T0 = utc(2026, 11, 21, 5, 31)
WAIT = {"call": "tests.worker_tasks:wait_for"}
RECORD = {"call": "tests.worker_tasks:record"}
FAIL = {"call": "tests.worker_tasks:fail"}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "BACKOFF_FIRST_S", 0.001, raising=False)


@driven
async def test_a_dead_letter_that_can_never_be_sent_goes_to_the_queues_own_dead_letter_exchange(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    pool = Pool(tmp_path, {"t.fail": FAIL, "t.rec": RECORD}, now=T0, concurrency=1)
    # As pika refuses a frame it cannot encode: every try fails the same way (item 2).
    pool.broker.unencodable = lambda exchange, _props: exchange == "w.dlx"
    await pool.start()
    pool.publish(message("t.fail", "a@1", args=["boom"]))
    pool.publish(message("t.rec", "b@1", args=[str(out)]))
    await asyncio.wait_for(pool.settle(), 5)
    [dead] = pool.broker.messages(DEAD)
    # Rejected without requeue: the broker's own dead-lettering, not the worker's copy.
    assert dead.properties.message_id == "a@1"
    assert "beatd-reason" not in dead.properties.headers
    assert out.read_text().count("\n") == 1  # the slot was freed: the next run ran
    assert pool.broker.messages(QUEUE) == []
    gave_up = [r for r in caplog.records if "giving up" in r.getMessage()]
    assert len(gave_up) == 1 and "a@1" in gave_up[0].getMessage()
    await pool.stop()


@driven
async def test_a_malformed_message_whose_dead_letter_cannot_be_sent_is_rejected_not_retried(
    tmp_path: Path,
) -> None:
    pool = Pool(tmp_path, {"t.rec": RECORD}, now=T0, concurrency=1)
    pool.broker.unencodable = lambda exchange, _props: exchange == "w.dlx"
    await pool.start()
    pool.publish(b"[" * 1000)
    await asyncio.wait_for(pool.settle(), 5)
    assert len(pool.broker.messages(DEAD)) == 1
    assert pool.broker.messages(QUEUE) == []
    await pool.stop()


@driven
async def test_a_broker_that_keeps_nacking_a_dead_letter_is_given_up_on(tmp_path: Path) -> None:
    pool = Pool(tmp_path, {"t.fail": FAIL}, now=T0, concurrency=1)
    await pool.start()
    pool.broker.faults.extend(["nack"] * 50)
    pool.publish(message("t.fail", "a@1", args=["boom"]))
    await asyncio.wait_for(pool.settle(), 5)
    assert [m.properties.message_id for m in pool.broker.messages(DEAD)] == ["a@1"]
    assert len(pool.broker.faults) > 50 - 2 * outbox.NACKED_MAX  # bounded, not forever
    await pool.stop()


@driven
async def test_drain_does_not_wait_for_a_call_already_settled_as_timed_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    pool = Pool(tmp_path, {"t.wait": {**WAIT, "timeout": "50ms"}}, now=T0, concurrency=1)
    worker = await pool.start()
    pool.publish(message("t.wait", "a@1", args=[str(started), str(go)]))
    try:
        await asyncio.wait_for(pool.settle(), 5)
        assert pool.dead() == [("a@1", "timed_out")]
        assert (worker.lingering, worker.running, worker.slots.free) == (1, 0, 0)
        await asyncio.wait_for(worker.drain(), 2)  # SIGTERM: ends though the thread does not
    finally:
        go.touch()
    for _ in range(200):
        if worker.lingering == 0:
            break
        await asyncio.sleep(0.01)
    assert (worker.lingering, worker.slots.free) == (0, 1)  # its slot came back
    await pool.stop()


@driven
async def test_a_forged_attempt_for_a_running_id_is_held_once_not_requeued_in_a_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started, go, out = tmp_path / "started", tmp_path / "go", tmp_path / "out"
    tasks = {"t.wait": {"call": "tests.worker_tasks:wait_then_record"}}
    pool = Pool(tmp_path, tasks, now=T0, concurrency=2)
    worker = await pool.start()
    body = message("t.wait", "a@1", args=[str(started), str(go), str(out)])
    pool.publish(body)
    for _ in range(200):
        if started.exists():
            break
        await asyncio.sleep(0.01)
    caplog.set_level(logging.DEBUG)
    pool.publish(body, **{"beatd-attempt": 2})
    for _ in range(50):
        await quiet()
    [held] = [r for r in caplog.records if "held until" in r.getMessage()]
    assert "attempt 2 arrived while attempt 1" in held.getMessage()
    assert len(caplog.records) < 20  # no hot loop of redeliveries
    go.touch()
    await asyncio.wait_for(pool.settle(), 5)
    # The forged attempt of a run that succeeded is a duplicate: it never runs again.
    assert out.read_text().count("\n") == 1
    assert pool.broker.messages(QUEUE) == [] and pool.dead() == []
    assert worker.counts["duplicate"] == 1
    await pool.stop()


@driven
async def test_a_forged_later_attempt_of_a_dead_lettered_run_never_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pool = Pool(tmp_path, {"t.rec": RECORD}, now=T0, concurrency=1)
    store = SeenStore(pool.store_path, 1000)
    for _ in range(3):  # it took the worker down three times (MAX_STARTS)
        store.start("a@1", 1)
    store.commit()
    store.close()
    worker = await pool.start()
    body = message("t.rec", "a@1", args=[str(out)])
    pool.publish(body)
    await asyncio.wait_for(pool.settle(), 5)
    assert pool.dead() == [("a@1", "interrupted")]
    pool.publish(body, **{"beatd-attempt": 2})
    await asyncio.wait_for(pool.settle(), 5)
    assert not out.exists()  # it never ran, and the forged attempt did not run it
    assert worker.counts["duplicate"] == 1
    assert pool.broker.messages(QUEUE) == [] and pool.dead() == [("a@1", "interrupted")]
    await pool.stop()


@driven
async def test_the_worker_restores_its_binding_after_its_exchange_is_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    pool = Pool(tmp_path, {"t.rec": RECORD}, now=T0)
    worker = await pool.start()
    pool.broker.delete_exchange(EXCHANGE)
    # What the scheduler does on its next publish (item 15): the exchange, without bindings.
    pool.broker.exchanges[EXCHANGE] = "topic"
    await worker.check_bindings()
    await quiet()
    pool.publish(message("t.rec", "a@1", args=[str(out)]))
    await asyncio.wait_for(pool.settle(), 5)
    assert out.read_text().count("\n") == 1


@driven
async def test_a_deleted_exchange_is_noticed_logged_once_and_declared_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    pool = Pool(tmp_path, {"t.rec": RECORD}, now=T0)
    worker = await pool.start()
    pool.broker.delete_exchange(EXCHANGE)
    for _ in range(3):
        await worker.check_bindings()
        await quiet()
    gone = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(gone) == 1 and EXCHANGE in gone[0].getMessage()
    pool.publish(message("t.rec", "a@1", args=[str(out)]))
    await asyncio.wait_for(pool.settle(), 5)
    assert out.read_text().count("\n") == 1
    await pool.stop()


# The same over the real RabbitMQ: pika's channel closing on the 404, the link reopening it.


@pytest.fixture
def names(rabbit: Rabbit) -> Names:
    return Names.fresh(rabbit)


def test_on_a_real_broker_a_deleted_exchange_is_declared_and_bound_again(
    tmp_path: Path, rabbit: Rabbit, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    path = worker_file(tmp_path, names, {"x.record": RECORD})

    def routed() -> bool:
        try:
            publish(rabbit, names, rmessage("x.record", args=[str(out)]))
        except (pika.exceptions.UnroutableError, pika.exceptions.ChannelClosedByBroker):
            return False
        return True

    async def main() -> None:
        config, tasks = daemon.load(str(path), {})
        store = SeenStore(tmp_path / "seen.db", 100)
        ready = asyncio.Event()
        worker = Worker(config, tasks, store, Link, env={}, clock=system_clock, on_ready=ready.set)
        worker.start()
        try:
            await asyncio.wait_for(ready.wait(), 20)
            await asyncio.to_thread(rabbit.delete_exchange, names.exchange)
            assert not await asyncio.to_thread(routed)
            await worker.check_bindings()
            await async_wait_until(lambda: worker.link.channel_now() is None, 5)
            for _ in range(400):  # the link reopens the channel after its backoff (about 1s)
                if await asyncio.to_thread(routed):
                    break
                await asyncio.sleep(0.05)
            await async_wait_until(out.exists, 20)
        finally:
            await worker.drain()
            await worker.close()
            store.close()

    asyncio.run(main())
    assert out.read_text().count("\n") == 1
    gone = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(gone) == 1


def test_a_task_timeout_over_the_consumer_timeout_is_warned_about_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tasks = {"t.long": {**RECORD, "timeout": "2h"}, "t.short": {**RECORD, "timeout": "5m"}}
    pool = Pool(tmp_path, tasks, now=T0)
    assert daemon.warn_long_tasks(pool.tasks, {}) == ["t.long"]
    [line] = [r.getMessage() for r in caplog.records]
    assert "30m, RabbitMQ's default" in line and "consumer-timeout" in line
    assert daemon.warn_long_tasks(pool.tasks, {"BEATD_CONSUMER_TIMEOUT": "3h"}) == []
    assert daemon.warn_long_tasks(pool.tasks, {"BEATD_CONSUMER_TIMEOUT": "soon"}) == ["t.long"]
