"""Signed runs end to end over the in-memory broker: the scheduler signs what it publishes, a
worker with the keys runs what they vouch for and dead-letters the rest as bad_signature."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from beatd.core.config import read_config
from tests.clock import utc
from tests.fakebroker import Message
from tests.steps import Beat, driven
from tests.worker_steps import EXCHANGE, Pool, message

T0 = utc(2026, 11, 21, 5, 30)


def keys(tmp_path: Path, *names: str) -> dict[str, Path]:
    found = {}
    for name in names:
        path = tmp_path / f"{name}.key"
        path.write_text(name * 40)
        found[name] = path
    return found


def signing(key: str, files: dict[str, Path]) -> dict[str, object]:
    return {"key": key, "keys": {k: str(v) for k, v in files.items()}}


async def scheduled_runs(tmp_path: Path, key: str, files: dict[str, Path]) -> list[Message]:
    """What a signing scheduler publishes for `t.rec` at 05:30."""
    path = tmp_path / "beatd.yaml"
    path.write_text(
        json.dumps(
            {
                "broker": {"exchange": EXCHANGE},
                "signing": signing(key, files),
                "jobs": {"a": {"every": "1m", "task": "t.rec", "args": [str(tmp_path / "out")]}},
            }
        )
    )
    beat = Beat(read_config(path, {}), T0 - timedelta(seconds=1))
    await beat.start()
    await beat.run_until(T0)
    return list(beat.broker.accepted)


async def worker_given(
    tmp_path: Path, runs: list[Message], files: dict[str, Path], *, late: float = 0
) -> Pool:
    pool = Pool(
        tmp_path,
        {"t.rec": {"call": "tests.worker_tasks:record"}},
        now=T0 + timedelta(seconds=late),
        extra={"signing": signing(next(iter(files)), files)},
    )
    await pool.start()
    for run in runs:
        pool.broker.enqueue(run, EXCHANGE, run.routing_key)
    await pool.settle()
    return pool


@driven
async def test_a_signed_run_from_the_scheduler_runs_on_a_worker_with_the_key(
    tmp_path: Path,
) -> None:
    files = keys(tmp_path, "k1")
    runs = await scheduled_runs(tmp_path, "k1", files)
    assert runs[0].properties.headers["beatd-key-id"] == "k1"
    pool = await worker_given(tmp_path, runs, files)
    assert (tmp_path / "out").exists()
    assert pool.dead() == []


@driven
async def test_unsigned_forged_and_wrongly_keyed_runs_are_dead_lettered_unrun(
    tmp_path: Path,
) -> None:
    files = keys(tmp_path, "k1", "k2")
    signed = (await scheduled_runs(tmp_path, "k2", {"k2": files["k2"]}))[0]
    forged_body = signed.body.replace(b'"args":[', b'"args":["/tmp/elsewhere",')
    forged = Message(signed.exchange, signed.routing_key, forged_body, signed.properties)
    pool = Pool(
        tmp_path,
        {"t.rec": {"call": "tests.worker_tasks:record"}},
        now=T0,
        extra={"signing": signing("k1", {"k1": files["k1"]})},
    )
    await pool.start()
    pool.publish(message("t.rec", "a@1", args=[str(tmp_path / "out")]))  # unsigned
    pool.broker.enqueue(forged, EXCHANGE, forged.routing_key)  # k2 is not accepted here
    await pool.settle()
    assert not (tmp_path / "out").exists()
    assert [reason for _, reason in pool.dead()] == ["bad_signature", "bad_signature"]


@driven
async def test_a_captured_run_replayed_after_its_window_is_refused(tmp_path: Path) -> None:
    files = keys(tmp_path, "k1")
    runs = await scheduled_runs(tmp_path, "k1", files)
    pool = await worker_given(tmp_path, runs, files, late=2 * 3600)
    assert not (tmp_path / "out").exists()
    assert [reason for _, reason in pool.dead()] == ["bad_signature"]
