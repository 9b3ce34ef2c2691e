"""beatd.client: argument checks without a broker, then real publishes read back from
RabbitMQ (per-test exchange and queues), several threads, a fork, and asyncio."""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd import client
from beatd.cli import main
from beatd.client import AsyncClient, Client
from beatd.client.runs import message, task_job
from beatd.core.config import read_config
from beatd.core.errors import BeatdError, BrokerError
from beatd.core.messages import Outgoing, parse_beatd
from beatd.core.ports import Outcome
from tests.rabbit import AMQP_URL, Rabbit, TcpProxy, wait_until

NOW = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
MANUAL_ID = re.compile(r"^(?P<job>[^@]+)@manual-[0-9a-f]{8}-[0-9a-f-]{27}$")


def schedule(tmp_path: Path, exchange: str, url: str = AMQP_URL, celery_queue: str = "") -> Path:
    celery = (
        f"""
          celery-job:
            every: 1h
            task: tests.add
            args: [2, 3]
            format: celery
            queue: {celery_queue}
        """
        if celery_queue
        else ""
    )
    path = tmp_path / "beatd.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        broker:
          url: {url}
          exchange: {exchange}
        state: state.db
        jobs:
          nightly:
            every: 1h
            task: reports.nightly
            args: [30]
            kwargs: {{dry_run: false}}
            expires: 10m
            priority: 3
        """)
        + textwrap.indent(textwrap.dedent(celery).strip(), "  ")
        + "\n"
    )
    return path


# Without a broker: everything is checked in the caller, before any connection.

DEAD_URL = "amqp://guest:secret@127.0.0.1:1/%2F"  # nothing listens on port 1


@pytest.fixture
def offline(tmp_path: Path) -> Client:
    return Client(schedule(tmp_path, "unused", DEAD_URL), timeout_s=0.3)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.publish("two words"), "publish: task: 'two words': a task name has no spaces"),
        (lambda c: c.publish(""), "publish: task: must be a non-empty string"),
        (lambda c: c.publish("t", "abc"), "publish: args: must be a list or tuple, got str 'abc'"),
        (
            lambda c: c.publish("t", [datetime(2026, 1, 1)]),
            "publish: args: at [0] is a datetime (datetime.datetime(2026, 1, 1, 0, 0)), not JSON-",
        ),
        (lambda c: c.publish("t", [], {1: 2}), "publish: kwargs: key 1 is not a string"),
        (lambda c: c.publish("t", [float("nan")]), "publish: args: nan at [0] is not valid"),
        (lambda c: c.publish("t", job="a b"), "publish: job 'a b': a job name is 1-200"),
        (lambda c: c.publish("t+1"), "(the task name is the default job name: pass job=)"),
        (lambda c: c.publish("t", expires="0s"), "publish: expires: '0s' must be positive"),
        (lambda c: c.publish("t", expires="soon"), "publish: expires: 'soon' is not a duration"),
        (lambda c: c.publish("t", expires=timedelta(0)), "publish: expires: 0:00:00 must be"),
        (lambda c: c.publish("t", routing_key=5), "publish: routing_key: must be a string"),
        (lambda c: c.trigger("nightli"), "no job named 'nightli' (did you mean 'nightly'?)"),
    ],
)
def test_bad_arguments_raise_at_once_without_the_broker(offline: Client, call, error) -> None:
    with pytest.raises(BeatdError) as caught:
        call(offline)
    assert error in str(caught.value)
    assert not isinstance(caught.value, BrokerError)
    assert offline._loop is None  # nothing was started for a call that could not be made


def test_no_broker_is_a_bounded_broker_error_without_the_password(offline: Client) -> None:
    with pytest.raises(BrokerError) as caught:
        offline.publish("reports.render")
    assert re.fullmatch(
        r"no connection to amqp://guest:\*\*\*@127\.0\.0\.1:1/%2F within 0\.3s; "
        r"run reports\.render@manual-[0-9a-f-]{36} was not published",
        str(caught.value),
    )
    offline.close()
    with pytest.raises(BeatdError, match="closed"):
        offline.publish("reports.render")


def test_a_bare_task_run_is_a_beatd_message_for_the_worker(tmp_path: Path) -> None:
    config = read_config(schedule(tmp_path, "ex"), {})
    job = task_job("reports.render", (1, "a"), {"pdf": True}, expires="10m", now=NOW)
    out = message(config, job, NOW)
    body = parse_beatd(out.body)
    assert MANUAL_ID.match(out.run.id).group("job") == "reports.render"
    assert (body.id, body.job, body.task) == (out.run.id, "reports.render", "reports.render")
    assert (body.args, body.kwargs, body.trigger) == ([1, "a"], {"pdf": True}, "manual")
    assert body.expires_at == NOW + timedelta(minutes=10)
    assert (out.exchange, out.routing_key) == ("ex", "reports.render")
    assert out.properties.expiration == "600000"
    keyed = task_job("t", routing_key="k.1", job="billing", expires=30, now=NOW)
    assert MANUAL_ID.match(message(config, keyed, NOW).run.id).group("job") == "billing"
    assert message(config, keyed, NOW).routing_key == "k.1"


# Against the real broker.


def test_trigger_publishes_what_beatd_trigger_publishes(
    rabbit: Rabbit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange, "reports.nightly")
    path = schedule(tmp_path, exchange)
    assert main(["trigger", "-c", str(path), "nightly"]) == 0
    with Client(path, clock=lambda: NOW) as beat:
        run_id = beat.trigger("nightly")
    cli, ours = rabbit.wait_for(queue, 2)
    assert ours.json["scheduled_at"] == "2026-11-21T05:30:00Z"  # the injected clock
    assert ours.json["expires_at"] == "2026-11-21T05:40:00Z"
    assert MANUAL_ID.match(run_id).group("job") == "nightly"
    assert ours.properties.message_id == ours.json["id"] == run_id
    assert cli.json["id"] in capsys.readouterr().out
    volatile = ("id", "published_at", "scheduled_at", "expires_at")
    assert {k: v for k, v in ours.json.items() if k not in volatile} == {
        k: v for k, v in cli.json.items() if k not in volatile
    }
    assert ours.json["trigger"] == "manual"
    assert ours.json["args"] == [30] and ours.json["kwargs"] == {"dry_run": False}
    for name in ("content_type", "delivery_mode", "type", "app_id", "priority"):
        assert getattr(ours.properties, name) == getattr(cli.properties, name), name
    assert set(ours.properties.headers) == set(cli.properties.headers)
    assert ours.properties.headers["beatd-format"] == 1
    assert ours.properties.headers["beatd-job"] == "nightly"


def test_publish_reaches_a_worker_queue_in_the_beatd_format(rabbit: Rabbit, tmp_path: Path) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange, "render.#")
    with Client(schedule(tmp_path, exchange)) as beat:
        run_id = beat.publish(
            "reports.render", [42], {"pdf": True}, routing_key="render.pdf", expires="5m"
        )
        assert beat.connected
    [got] = rabbit.wait_for(queue, 1)
    body = parse_beatd(got.body)
    assert (body.id, body.task, body.args, body.kwargs) == (
        run_id,
        "reports.render",
        [42],
        {"pdf": True},
    )
    assert got.routing_key == "render.pdf"
    assert got.properties.delivery_mode == 2
    assert 299_000 <= int(got.properties.expiration) <= 300_000
    assert body.expires_at is not None and body.published_at is not None
    assert body.expires_at - body.published_at == timedelta(minutes=5)


def test_an_unroutable_run_raises_and_the_client_goes_on(rabbit: Rabbit, tmp_path: Path) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange, "bound")
    with Client(schedule(tmp_path, exchange)) as beat:
        with pytest.raises(BrokerError) as caught:
            beat.publish("nobody.listens")
        assert "was unroutable: no queue is bound to exchange" in str(caught.value)
        assert f"{exchange!r} for key 'nobody.listens'" in str(caught.value)
        beat.publish("bound")
    assert [m.json["task"] for m in rabbit.wait_for(queue, 1)] == ["bound"]


def test_a_celery_job_is_triggered_as_a_celery_task(rabbit: Rabbit, tmp_path: Path) -> None:
    queue = rabbit.name("celery")
    rabbit.queues.append(queue)  # created by the client, as Celery would: deleted afterwards
    rabbit.exchanges.append(queue)
    with Client(schedule(tmp_path, rabbit.name("ex"), celery_queue=queue)) as beat:
        run_id = beat.trigger("celery-job")
    [got] = rabbit.wait_for(queue, 1)
    assert got.properties.headers["task"] == "tests.add"
    assert got.properties.headers["periodic_task_name"] == "celery-job"
    assert got.json[0] == [2, 3]
    assert MANUAL_ID.match(run_id)


def test_many_threads_share_one_connection(rabbit: Rabbit, tmp_path: Path) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange)
    beat = Client(schedule(tmp_path, exchange))
    ids: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        try:
            ids.extend(beat.publish("t.thread", [n, i]) for i in range(25))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    loops = [t for t in threading.enumerate() if t.name == "beatd-client"]
    link = beat._loop.aio._link if beat._loop else None
    beat.close()
    assert errors == []
    assert len(set(ids)) == 200
    got = rabbit.wait_for(queue, 200)
    assert sorted(m.json["id"] for m in got) == sorted(ids)
    assert sorted(tuple(m.json["args"]) for m in got) == [
        (n, i) for n in range(8) for i in range(25)
    ]
    assert len(loops) == 1 and link is not None  # one loop, one Link: one connection


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads: intended here
def test_a_forked_child_publishes_on_its_own_connection(rabbit: Rabbit, tmp_path: Path) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange)
    path = schedule(tmp_path, exchange)
    beat = Client(path)
    parent_id = beat.publish("t.parent")
    shared_id = client.publish("t.parent-default", config=path)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            beat.publish("t.child")
            client.publish("t.child-default", config=path)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    beat.publish("t.parent-after")  # the parent's connection survived the child's exit
    beat.close()
    client.close()
    got = {m.json["task"]: m.json["id"] for m in rabbit.wait_for(queue, 5)}
    assert set(got) == {
        "t.parent",
        "t.parent-default",
        "t.child",
        "t.child-default",
        "t.parent-after",
    }
    assert got["t.parent"] == parent_id and got["t.parent-default"] == shared_id


def test_module_functions_reuse_one_client_per_configuration(
    rabbit: Rabbit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange)
    path = schedule(tmp_path, exchange)
    monkeypatch.setenv("BEATD_CONFIG", str(path))
    try:
        first = client.trigger("nightly")
        second = client.publish("t.x", [1])
        assert client.default_client() is client.default_client(None)
        assert client.default_client(path) is client.default_client(str(path))
    finally:
        client.close()
    assert {m.json["id"] for m in rabbit.wait_for(queue, 2)} == {first, second}


def test_async_client_publishes_on_the_callers_loop(rabbit: Rabbit, tmp_path: Path) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange)
    path = schedule(tmp_path, exchange)

    async def main_() -> list[str]:
        async with AsyncClient(path) as beat:
            ids = await asyncio.gather(*(beat.publish("t.async", [i]) for i in range(20)))
            ids.append(await beat.trigger("nightly"))
            return ids

    ids = asyncio.run(main_())
    assert {m.json["id"] for m in rabbit.wait_for(queue, 21)} == set(ids)


def test_an_async_client_refuses_a_second_event_loop(rabbit: Rabbit, tmp_path: Path) -> None:
    exchange = rabbit.name("ex")
    rabbit.queue(exchange)
    path = schedule(tmp_path, exchange)

    async def main_() -> None:
        async with AsyncClient(path) as beat:
            await beat.publish("t.first")
            with pytest.raises(BeatdError, match="another event loop; make one per loop"):
                await asyncio.to_thread(asyncio.run, beat.publish("t.second"))

    asyncio.run(main_())


def test_the_client_reconnects_after_the_network_was_cut(
    rabbit: Rabbit, proxy: TcpProxy, tmp_path: Path
) -> None:
    exchange = rabbit.name("ex")
    queue = rabbit.queue(exchange)
    with Client(schedule(tmp_path, exchange, proxy.url), timeout_s=0.5) as beat:
        before = beat.publish("t.before")
        proxy.cut()
        wait_until(lambda: not beat.connected, 5, "the client to notice the cut")
        with pytest.raises(
            BrokerError, match=r"within 0\.5s; run t\.during@manual-.* not published"
        ):
            beat.publish("t.during")
        proxy.restore()
        wait_until(lambda: beat.connected, 10, "the client to reconnect")
        after = beat.publish("t.after")
    assert [m.json["id"] for m in rabbit.wait_for(queue, 2)] == [before, after]


class FakeChannel:
    """Answers each publish with the next outcome from a script."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        self.sent: list[str] = []
        self.declared: list[str] = []

    async def declare_exchange(self, name: str, kind: str) -> None:
        self.declared.append(f"{name}/{kind}")

    async def publish(self, messages: list[Outgoing]) -> list[Outcome]:
        self.sent += [m.run.id for m in messages]
        return [self.outcomes.pop(0)]


class FakeLink:
    def __init__(self, channel: FakeChannel) -> None:
        self._channel = channel

    async def channel(self, timeout: float | None = None) -> FakeChannel:
        return self._channel

    def channel_now(self) -> FakeChannel:
        return self._channel


def send_with(tmp_path: Path, outcomes: list[Outcome]) -> tuple[FakeChannel, Any]:
    channel = FakeChannel(outcomes)
    beat = AsyncClient(schedule(tmp_path, "ex", DEAD_URL))

    async def go() -> Any:
        beat._loop, beat._link = asyncio.get_running_loop(), FakeLink(channel)  # type: ignore[assignment]
        try:
            return await beat.publish("t.fake")
        except BrokerError as exc:
            return exc

    return channel, asyncio.run(go())


def test_a_run_lost_with_its_channel_is_sent_again_under_the_same_id(tmp_path: Path) -> None:
    channel, run_id = send_with(tmp_path, [Outcome.LOST, Outcome.CONFIRMED])
    assert channel.sent == [run_id, run_id]  # the worker drops a copy that did arrive
    assert channel.declared == ["ex/topic"]  # once per channel


def test_a_nacked_or_thrice_lost_run_raises(tmp_path: Path) -> None:
    _, nacked = send_with(tmp_path, [Outcome.NACKED])
    assert isinstance(nacked, BrokerError) and "the broker refused it (nack)" in str(nacked)
    channel, lost = send_with(tmp_path, [Outcome.LOST] * 3)
    assert isinstance(lost, BrokerError) and len(channel.sent) == 3
    assert str(lost).endswith("the connection dropped before the broker confirmed it, 3 times")
