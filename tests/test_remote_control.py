"""`beatd status`, `pause` and `resume` through the broker, step by step over the in-memory
broker: schedulers (in this process) answer on their control queues, every instance of an HA
group answers, writes are signed when the file says so, and nothing a sender puts on the
control exchange (junk, floods, replays) stops the scheduler. The CLI's side is
runtime.control.gather, given a channel of the same fake broker: no local socket is asked."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beatd.core import control as requests
from beatd.core.config import BrokerConfig, Config, read_config
from beatd.core.messages import Properties
from beatd.core.ports import Outcome
from beatd.runtime import control
from beatd.runtime.systemd import Notifier
from beatd.scheduler.daemon import SchedulerDaemon
from beatd.scheduler.remote import BURST, RATE_PER_S
from tests.clock import FakeClock, utc
from tests.fakebroker import REPLY_TO, FakeBroker, FakeChannel, FakeLink, Queue
from tests.steps import driven, quiet

T0 = utc(2026, 11, 21, 5, 30)
KEY = "k" * 40
JOBS = (
    "jobs:\n  tick:\n    every: 1m\n    task: t.tick\n  other:\n    every: 1h\n    task: t.other\n"
)


def write(folder: Path, extra: str = "") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "k1.key").write_text(KEY)
    path = folder / "beatd.yaml"
    path.write_text(f"broker:\n  exchange: beatd\nstate: {folder / 'state.db'}\n{extra}{JOBS}")
    return path


class Instance:
    """A `beatd run` in this process, over the shared fake broker."""

    def __init__(self, path: Path, broker: FakeBroker, clock: FakeClock) -> None:
        self.path = path
        self.daemon = SchedulerDaemon(
            str(path),
            {},
            connect=broker.connect,
            clock=clock,
            notifier=Notifier({}),
            watch_file=False,
        )
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> Instance:
        self.task = asyncio.create_task(self.daemon.run())
        for _ in range(300):
            await asyncio.sleep(0.01)
            remote = self.daemon.remote
            if remote is not None and remote.queue is not None:
                break
        await quiet()
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.daemon.request_stop()
        assert await self.task == 0


class Asker:
    """The CLI's side: a connection to the fake broker, a fresh channel per request (as the
    CLI has one per command)."""

    def __init__(self, broker: FakeBroker, path: Path) -> None:
        self.link: FakeLink = broker.connect(BrokerConfig(), name="cli")
        self.config: Config = read_config(path, {})
        self.task = asyncio.create_task(self.link.run())

    async def ask(
        self,
        command: str,
        job: str = "",
        note: str = "",
        *,
        expect: int | None = 1,
        config: Config | None = None,
        wait_s: float = 2.0,
    ) -> list[dict[str, Any]]:
        await self.link.channel(1)
        channel = await self.link.open_channel()
        config = config or self.config
        request = requests.Request(command, job, note)
        now = T0
        return await control.gather(channel, config, request, now=now, wait_s=wait_s, expect=expect)

    async def raw(self, body: bytes, properties: Properties, key: str = "beatd") -> FakeChannel:
        """Put anything on the control exchange, with a reply consumer of its own."""
        await self.link.channel(1)
        channel = await self.link.open_channel()
        answers: list[bytes] = []
        await channel.consume(REPLY_TO, lambda d: answers.append(d.body), prefetch=0, auto_ack=True)
        channel.answers = answers  # type: ignore[attr-defined]
        channel.send_nowait("beatd.control", key, body, properties)
        return channel

    async def close(self) -> None:
        await self.link.close()
        await self.task


def props(request_id: str = "r1", **more: Any) -> Properties:
    more.setdefault("reply_to", REPLY_TO)
    return Properties(message_id=request_id, correlation_id=request_id, **more)


def bind_runs(broker: FakeBroker) -> None:
    broker.queues["q"] = Queue("q", {})
    broker.bindings.add(("beatd", "q", "#"))


async def next_tick(instance: Instance, clock: FakeClock, broker: FakeBroker) -> int:
    """Move a minute on and let the scheduler step; how many runs it published."""
    before = len(broker.accepted)
    clock.advance(minutes=1)
    instance.daemon.wake()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if len(broker.accepted) > before:
            break
    return sum(1 for m in broker.accepted[before:] if m.exchange == "beatd")


@driven
async def test_status_through_the_broker_names_the_instance_its_role_and_every_job(
    tmp_path: Path,
) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    instance = await Instance(write(tmp_path / "a"), broker, clock).start()
    # Another host: the CLI's file puts the state elsewhere, so no socket of this daemon
    # could answer it; only the broker can.
    asker = Asker(broker, write(tmp_path / "elsewhere"))
    [answer] = await asker.ask("status")
    assert answer["via"] == "broker" and answer["leading"] is True and answer["role"] == "single"
    assert answer["host"] and answer["pid"] and answer["file_differs"] is False
    assert [j["job"] for j in answer["jobs"]] == ["tick", "other"]
    assert answer["broker"] == "up"
    key = requests.routing_key(asker.config)
    assert (
        key == "beatd" and ("beatd.control", instance.daemon.remote.queue, key) in broker.bindings
    )  # type: ignore[union-attr]
    await asker.close()
    await instance.stop()
    assert not [q for q in broker.queues if q.startswith("amq.gen-")], "gone with its channel"
    assert "beatd.control" not in broker.exchanges, "auto-delete: gone with the last queue"


@driven
async def test_a_pause_through_the_broker_takes_effect_at_once_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    bind_runs(broker)
    path = write(tmp_path / "a")
    instance = await Instance(path, broker, clock).start()
    asker = Asker(broker, write(tmp_path / "elsewhere"))
    assert await next_tick(instance, clock, broker) == 1
    [answer] = await asker.ask("pause", "tick", "db work")
    assert answer["ok"] is True and answer["leading"] is True
    assert await next_tick(instance, clock, broker) == 0, "paused before the next step"
    assert json.loads((tmp_path / "a" / "paused.json").read_text()) == {"tick": "db work"}
    [nope] = await asker.ask("pause", "nope")
    assert nope["error"] == "no job named 'nope' in the running schedule"
    await instance.stop()

    instance = await Instance(path, broker, clock).start()
    [status] = await asker.ask("status")
    assert {j["job"]: j["paused"] for j in status["jobs"]} == {"tick": "db work", "other": None}
    assert await next_tick(instance, clock, broker) == 0
    [resumed] = await asker.ask("resume", "tick")
    assert resumed["ok"] is True
    assert await next_tick(instance, clock, broker) >= 1, "its misfire policy decides how many"
    await asker.close()
    await instance.stop()


@driven
async def test_every_instance_of_an_ha_group_answers_and_a_pause_reaches_each(
    tmp_path: Path,
) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    ha = "ha:\n  name: group1\n"
    instances = [await Instance(write(tmp_path / name, ha), broker, clock).start() for name in "ab"]
    asker = Asker(broker, write(tmp_path / "elsewhere", ha))
    assert requests.routing_key(asker.config) == "group1"
    answers = await asker.ask("status", expect=None, wait_s=0.3)
    assert sorted(a["leading"] for a in answers) == [False, True]
    assert sorted(a["role"].split(" ")[1] for a in answers) == ["leader", "standby"]
    answers = await asker.ask("pause", "tick", "both", expect=2)
    assert [a["ok"] for a in answers] == [True, True]
    for name in "ab":
        assert json.loads((tmp_path / name / "paused.json").read_text()) == {"tick": "both"}
    # A schedule of another name shares the exchange but not the key: it is not asked.
    other = read_config(write(tmp_path / "other", "ha:\n  name: group2\n"), {})
    assert await asker.ask("status", config=other) == []
    await asker.close()
    for instance in instances:
        await instance.stop()


@driven
async def test_junk_on_the_control_exchange_is_refused_and_the_scheduler_keeps_publishing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    bind_runs(broker)
    instance = await Instance(write(tmp_path / "a"), broker, clock).start()
    asker = Asker(broker, write(tmp_path / "a"))
    bad = [
        b"not json",
        b"[1, 2]",
        b'{"command": "rm -rf"}',
        b'{"command": "pause"}',
        b'{"command": "pause", "job": "tick", "note": 5}',
        b'{"command": "status", "extra": 1}',
        json.dumps({"command": "pause", "job": "tick", "note": "x" * 5000}).encode(),
        b'{"command": "status"}' + b" " * requests.MAX_REQUEST_BYTES,
        b"[" * 4000,  # deep nesting: no RecursionError reaches the daemon
    ]
    channels = [await asker.raw(body, props(f"bad{i}")) for i, body in enumerate(bad)]
    # Answers go only to a direct reply-to address, never into a queue a sender names.
    await asker.raw(b'{"command": "status"}', props("aimed", reply_to="q"))
    await quiet()
    await asyncio.sleep(0.05)
    for channel, body in zip(channels, bad, strict=True):
        [answer] = [json.loads(a) for a in channel.answers]  # type: ignore[attr-defined]
        assert answer["error"].startswith("refused: malformed"), body[:40]
    remote = instance.daemon.remote
    assert remote is not None and remote.counts["refused"] == len(bad) + 1
    assert remote.counts["answered"] == 0
    assert broker.messages("q") == [], "no answer was put into the runs queue"
    assert instance.daemon.scheduler is not None and instance.daemon.scheduler.paused == {}
    assert await next_tick(instance, clock, broker) == 1
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    # One line for the first malformed request; the rest of the burst is counted in the next.
    assert len(refusals) == 2 and "over the limit" not in refusals[0]
    [answer] = await asker.ask("status")
    assert answer["running"] is True
    await asker.close()
    await instance.stop()


@driven
async def test_a_flood_waits_on_the_broker_at_a_bounded_rate_and_due_runs_still_go_out(
    tmp_path: Path,
) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    bind_runs(broker)
    instance = await Instance(write(tmp_path / "a"), broker, clock).start()
    remote = instance.daemon.remote
    assert remote is not None and remote.queue is not None
    asker = Asker(broker, write(tmp_path / "a"))
    flood = 500
    started = asyncio.get_running_loop().time()
    channel = await asker.raw(b'{"command": "status"}', props("f0"))
    for i in range(1, flood):
        channel.send_nowait("beatd.control", "beatd", b'{"command": "status"}', props(f"f{i}"))
    # The queue keeps at most MAX_WAITING; the oldest beyond are dropped by the broker.
    assert len(broker.messages(remote.queue)) == requests.MAX_WAITING
    assert await next_tick(instance, clock, broker) == 1, "the step is not stuck behind them"
    await asyncio.sleep(0.3)
    elapsed = asyncio.get_running_loop().time() - started
    assert remote.counts["held"] > 0
    assert remote.counts["answered"] <= BURST + RATE_PER_S * elapsed + 1
    assert await next_tick(instance, clock, broker) == 1
    await asker.close()
    await instance.stop()


@driven
async def test_with_signing_a_pause_must_be_signed_once_and_status_needs_no_signature(
    tmp_path: Path,
) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    signing = "signing:\n  key: k1\n  keys:\n    k1: k1.key\n"
    instance = await Instance(write(tmp_path / "a", signing), broker, clock).start()
    signed = Asker(broker, write(tmp_path / "signed", signing))
    unsigned = Asker(broker, write(tmp_path / "unsigned"))
    [status] = await unsigned.ask("status")
    assert status["running"] is True
    [refused] = await unsigned.ask("pause", "tick")
    assert refused["error"] == "refused: unsigned (no beatd-signature header)"
    scheduler = instance.daemon.scheduler
    assert scheduler is not None and scheduler.paused == {}
    [taken] = await signed.ask("pause", "tick", "signed")
    assert taken["ok"] is True and scheduler.paused == {"tick": "signed"}

    # The same signed request sent again (captured off the wire) is refused.
    body = requests.Request("resume", "tick").encode()
    headers = requests.sign(signed.config.signing.key, "cap1", "beatd", body, T0)  # type: ignore[union-attr]
    first = await signed.raw(body, props("cap1", headers=headers))
    await asyncio.sleep(0.05)
    again = await signed.raw(body, props("cap1", headers=headers))
    await asyncio.sleep(0.05)
    assert json.loads(first.answers[0])["ok"] is True  # type: ignore[attr-defined]
    assert json.loads(again.answers[0])["error"] == "refused: already taken (a replay)"  # type: ignore[attr-defined]
    # Signed for another schedule's key: the routing key is signed too.
    other = requests.sign(signed.config.signing.key, "cap2", "other", body, T0)  # type: ignore[union-attr]
    moved = await signed.raw(body, props("cap2", headers=other))
    await asyncio.sleep(0.05)
    assert "signature does not match" in json.loads(moved.answers[0])["error"]  # type: ignore[attr-defined]
    # Signed too long ago.
    old = requests.sign(signed.config.signing.key, "cap3", "beatd", body, T0 - timedelta(minutes=5))  # type: ignore[union-attr]
    stale = await signed.raw(body, props("cap3", headers=old))
    await asyncio.sleep(0.05)
    assert "outside the replay window" in json.loads(stale.answers[0])["error"]  # type: ignore[attr-defined]
    for asker in (signed, unsigned):
        await asker.close()
    await instance.stop()


@driven
async def test_the_control_queue_is_declared_again_on_every_new_connection(tmp_path: Path) -> None:
    broker, clock = FakeBroker(), FakeClock(T0)
    instance = await Instance(write(tmp_path / "a"), broker, clock).start()
    remote = instance.daemon.remote
    assert remote is not None
    first = remote.queue
    broker.drop_connections()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if remote.queue != first:
            break
    assert remote.queue != first and first not in broker.queues
    asker = Asker(broker, write(tmp_path / "a"))
    [answer] = await asker.ask("status")
    assert answer["running"] is True
    await asker.close()
    await instance.stop()


@driven
async def test_no_scheduler_bound_is_an_empty_answer_at_once(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.exchanges["beatd.control"] = "topic"
    asker = Asker(broker, write(tmp_path / "a"))
    await asker.link.channel(1)
    channel = await asker.link.open_channel()
    request = requests.Request("status")
    started = asyncio.get_running_loop().time()
    assert await control.gather(channel, asker.config, request, now=T0, wait_s=30, expect=1) == []
    assert asyncio.get_running_loop().time() - started < 5, "returned, not waited out"
    outcome = await (await asker.link.open_channel()).send(
        "beatd.control", "beatd", b"{}", Properties(message_id="x")
    )
    assert outcome is Outcome.UNROUTABLE
    await asker.close()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "not JSON"),
        (b"null", "not a JSON object but NoneType"),
        (b'{"command": 1}', "command is not a string"),
        (b'{"command": "status", "x": 1}', "unknown field 'x'"),
        (b'{"command": "resume", "job": ""}', "resume: job must be a name of 1-200 characters"),
        (b"{" + b" " * 5000 + b"}", "5002 bytes, over the limit of 4096"),
    ],
)
def test_decode_says_what_is_wrong_with_a_request(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match="^" + why.replace("(", r"\(").replace(")", r"\)") + "$"):
        requests.decode(body)


def test_decode_takes_what_the_cli_encodes() -> None:
    for request in (requests.Request("status"), requests.Request("pause", "j", "why")):
        assert requests.decode(request.encode()) == request


def test_the_rate_limit_allows_a_burst_then_makes_each_wait_its_turn() -> None:
    limit = requests.RateLimit(per_s=10, burst=3)
    assert [limit.reserve(0.0) for _ in range(3)] == [0, 0, 0]
    assert limit.reserve(0.0) == pytest.approx(0.1)
    assert limit.reserve(0.1) == pytest.approx(0.1), "the one before took the token earned"
    assert [limit.reserve(10.0) == 0 for _ in range(4)] == [True, True, True, False]


def test_replays_remember_ids_for_the_window_and_refuse_when_full() -> None:
    replays = requests.Replays(limit=2)
    assert replays.first_time("a", T0) and not replays.first_time("a", T0)
    assert replays.first_time("b", T0) and not replays.first_time("c", T0), "full: refuse"
    later = T0 + requests.SIGNED_WINDOW + timedelta(minutes=6)
    assert replays.first_time("a", later) and replays.first_time("c", later)


def test_a_big_table_is_trimmed_to_the_soonest_jobs_for_the_broker() -> None:
    jobs = [{"job": f"j{i}", "next": None if i % 2 else f"2026-01-01T00:{i % 60:02}:00Z"}
            for i in range(requests.MAX_JOBS_ANSWERED + 10)]  # fmt: skip
    trimmed = requests.trimmed({"jobs": jobs})
    assert len(trimmed["jobs"]) == requests.MAX_JOBS_ANSWERED and trimmed["jobs_left_out"] == 10
    assert trimmed["jobs"][0]["next"] == "2026-01-01T00:00:00Z"
    assert requests.trimmed({"jobs": jobs[:3]}) == {"jobs": jobs[:3]}
