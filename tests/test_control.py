"""`beatd status`, `pause` and `resume` against a running scheduler (in this process, over the
in-memory broker and its real control socket), and what they do when none runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from beatd.cli import main
from beatd.runtime import control
from beatd.runtime.systemd import Notifier
from beatd.scheduler.daemon import SchedulerDaemon
from tests.clock import FakeClock, utc
from tests.fakebroker import FakeBroker, Queue
from tests.steps import Beat, driven, quiet, schedule

T0 = utc(2026, 11, 21, 5, 30)
JOBS = "  tick:\n    every: 1m\n    task: t.tick\n  other:\n    every: 1m\n    task: t.other\n"


def bound(beat: Beat) -> None:
    beat.broker.queues["q"] = Queue("q", {})
    beat.broker.bindings.add(("beatd", "q", "#"))


@pytest.mark.parametrize(
    ("misfire", "after_resume"),
    [
        ("once", ["tick@20261121T053500Z"]),
        ("skip", []),
        ("all", [f"tick@20261121T053{m}00Z" for m in range(1, 6)]),
    ],
)
@driven
async def test_a_paused_job_publishes_nothing_and_its_misfire_policy_decides_on_resume(
    misfire: str, after_resume: list[str]
) -> None:
    beat = Beat(
        schedule(
            JOBS.replace(
                "task: t.tick\n", f"task: t.tick\n    misfire: {misfire}\n    grace: 30s\n"
            )
        ),
        T0 - timedelta(seconds=1),
    )
    bound(beat)
    scheduler = await beat.start()
    await beat.run_until(T0 + timedelta(seconds=1))
    scheduler.pause("tick", "db migration")
    await beat.run_until(T0 + timedelta(minutes=5, seconds=40))
    published = beat.published()
    assert [i for i in published if i.startswith("tick@")] == ["tick@20261121T053000Z"]
    assert len([i for i in published if i.startswith("other@")]) == 6, "others go on"
    before = len(published)
    scheduler.resume("tick")
    await beat.step()
    resumed = [i for i in beat.published()[before:] if i.startswith("tick@")]
    assert resumed == after_resume


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "beatd.yaml"
    # A control exchange nobody declared: the CLI finds no scheduler on the shared broker and
    # asks the socket, as on a host whose scheduler cannot reach the broker.
    control_exchange = f"t.control.{uuid.uuid4().hex[:8]}"
    path.write_text(
        f"broker:\n  exchange: beatd\n  control_exchange: {control_exchange}\n"
        f"state: {tmp_path / 'state.db'}\njobs:\n{JOBS}"
    )
    return path


async def running(
    path: Path, broker: FakeBroker, clock: FakeClock
) -> tuple[SchedulerDaemon, asyncio.Task[int]]:
    daemon = SchedulerDaemon(
        str(path), {}, connect=broker.connect, clock=clock, notifier=Notifier({}), watch_file=False
    )
    task = asyncio.create_task(daemon.run())
    for _ in range(200):
        await asyncio.sleep(0.01)
        if control.socket_path(path.parent / "state.db").exists():
            break
    await quiet()
    return daemon, task


def ask(path: Path, request: dict[str, object]) -> dict[str, object] | None:
    return control.ask(path.parent / "state.db", request)


@driven
async def test_status_pause_and_resume_reach_the_running_scheduler_and_a_pause_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = config_file(tmp_path)
    broker, clock = FakeBroker(), FakeClock(T0)
    broker.exchanges["beatd"] = "topic"
    daemon, task = await running(path, broker, clock)
    answer = await asyncio.to_thread(ask, path, {"command": "status"})
    assert answer is not None and answer["running"] is True and answer["file_differs"] is False
    assert {j["job"]: j["paused"] for j in answer["jobs"]} == {"tick": None, "other": None}
    paused = await asyncio.to_thread(
        ask, path, {"command": "pause", "job": "tick", "note": "db work"}
    )
    assert paused is not None and paused["ok"] is True and paused["leading"] is True
    assert paused["socket"] == str(control.socket_path(tmp_path / "state.db"))
    assert daemon.scheduler is not None and daemon.scheduler.paused == {"tick": "db work"}
    unknown = await asyncio.to_thread(ask, path, {"command": "pause", "job": "nope"})
    assert unknown is not None and "no job named 'nope'" in str(unknown["error"])
    path.write_text(path.read_text() + "  extra:\n    every: 1h\n    task: t.x\n")
    answer = await asyncio.to_thread(ask, path, {"command": "status"})
    assert answer is not None and answer["file_differs"] is True
    daemon.request_stop()
    assert await task == 0
    assert not control.socket_path(tmp_path / "state.db").exists()

    daemon, task = await running(path, broker, clock)  # the pause is in paused.json
    assert daemon.scheduler is not None and daemon.scheduler.paused == {"tick": "db work"}
    await asyncio.to_thread(ask, path, {"command": "resume", "job": "tick"})
    assert daemon.scheduler.paused == {}
    assert json.loads((tmp_path / "paused.json").read_text()) == {}
    daemon.request_stop()
    assert await task == 0


def test_status_without_a_running_scheduler_says_so_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path)
    assert main(["status", "-c", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("beatd run is not answering on the broker (exchange t.control.")
    assert f"nor on this host (no answer at {tmp_path / 'beatd.sock'})" in err


def test_pause_without_a_running_scheduler_is_recorded_for_its_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path)
    assert main(["pause", "-c", str(path), "tick", "--note", "until Monday"]) == 0
    assert "it takes effect when beatd run starts on this host" in capsys.readouterr().out
    assert control.read_pauses(tmp_path / "state.db") == {"tick": "until Monday"}
    assert main(["pause", "-c", str(path), "nope"]) == 1
    assert "no job named 'nope'" in capsys.readouterr().err
    assert main(["resume", "-c", str(path), "tick"]) == 0
    assert control.read_pauses(tmp_path / "state.db") == {}


@driven
async def test_the_status_table_shows_the_role_counters_and_the_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path)
    broker, clock = FakeBroker(), FakeClock(T0)
    broker.exchanges["beatd"] = "topic"
    daemon, task = await running(path, broker, clock)
    await asyncio.to_thread(main, ["pause", "-c", str(path), "tick", "--note", "db work"])
    code = await asyncio.to_thread(main, ["status", "-c", str(path)])
    assert "note: beatd run is not answering on the broker" in capsys.readouterr().err
    only_here = await asyncio.to_thread(main, ["status", "-c", str(path), "--socket"])
    assert only_here == 0 and capsys.readouterr().err == ""
    code = await asyncio.to_thread(main, ["status", "-c", str(path)])
    daemon.request_stop()
    await task
    out = capsys.readouterr().out
    assert code == 0
    assert "broker up; single" in out
    assert "paused: db work" in out
    lines = out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("JOB")) + 1 :]
    assert [line.split()[0] for line in table] == ["tick", "other"]


def test_list_reads_the_systemd_state_file_when_the_shell_has_no_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beatd import cli

    systemd = tmp_path / "var-lib-beatd" / "state.db"
    systemd.parent.mkdir()
    systemd.touch()
    monkeypatch.setattr(control, "SYSTEMD_STATE", systemd)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert cli._state_file(tmp_path / "nowhere.db") == systemd
    configured = tmp_path / "mine.db"
    configured.touch()
    assert cli._state_file(configured) == configured


def test_list_marks_a_paused_job_with_its_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_file(tmp_path)
    assert main(["pause", "-c", str(path), "tick", "--note", "db work"]) == 0
    capsys.readouterr()
    assert main(["list", "-c", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()[1:3]
    rows = {name: line for line in lines for name in ("tick", "other") if f" {name} " in line}
    assert rows["tick"].endswith("PAUSED: db work")
    assert "PAUSED" not in rows["other"]
