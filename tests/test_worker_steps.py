"""The worker driven over the in-memory broker: no RabbitMQ, no process. (test_worker.py
proves the same daemon over the real RabbitMQ.)"""

from __future__ import annotations

import json
from pathlib import Path

from beatd.runtime.seen import SeenStore
from tests.clock import utc
from tests.steps import driven
from tests.worker_steps import QUEUE, Pool, message

T0 = utc(2026, 11, 21, 5, 31)


def recorder(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"call": "tests.worker_tasks:record", **extra}


@driven
async def test_a_run_is_run_once_acked_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    pool = Pool(tmp_path, {"t.rec": recorder(tmp_path)}, now=T0)
    await pool.start()
    pool.publish(message("t.rec", "a@1", args=[str(out), 1]))
    await pool.settle()
    assert [json.loads(line)["args"] for line in out.read_text().splitlines()] == [[1]]
    assert pool.broker.messages(QUEUE) == []
    assert pool.events() == ["started.a", "succeeded.a"]
    await pool.stop()


@driven
async def test_a_second_copy_of_a_finished_run_is_acked_and_not_run(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    pool = Pool(tmp_path, {"t.rec": recorder(tmp_path)}, now=T0)
    await pool.start()
    pool.publish(message("t.rec", "a@1", args=[str(out)]))
    await pool.settle()
    pool.publish(message("t.rec", "a@1", args=[str(out)]))
    await pool.settle()
    assert len(out.read_text().splitlines()) == 1
    assert pool.events() == ["started.a", "succeeded.a", "duplicate.a"]
    await pool.stop()


@driven
async def test_malformed_and_unknown_runs_are_dead_lettered_with_their_reason(
    tmp_path: Path,
) -> None:
    pool = Pool(tmp_path, {"t.rec": recorder(tmp_path)}, now=T0)
    await pool.start()
    pool.publish(b"not json")
    pool.publish(message("t.nope", "b@1"))
    await pool.settle()
    assert sorted(reason for _, reason in pool.dead()) == ["malformed", "unknown_task"]
    await pool.stop()


@driven
async def test_a_failed_run_with_retries_left_waits_in_a_holding_queue_as_attempt_2(
    tmp_path: Path,
) -> None:
    tasks = {"t.fail": {"call": "tests.worker_tasks:fail", "retries": 1, "retry_delay": "5s"}}
    pool = Pool(tmp_path, tasks, now=T0)
    await pool.start()
    pool.publish(message("t.fail", "c@1", args=["boom"]))
    await pool.settle()
    [holding] = [q for q in pool.broker.queues if ".retry." in q]
    [waiting] = pool.broker.messages(holding)
    assert waiting.properties.headers["beatd-attempt"] == 2
    assert pool.dead() == []
    await pool.stop()


@driven
async def test_a_run_redelivered_after_a_connection_drop_runs_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    pool = Pool(tmp_path, {"t.rec": recorder(tmp_path)}, now=T0)
    await pool.start()
    pool.publish(message("t.rec", "d@1", args=[str(out)]))
    await pool.settle()
    pool.broker.drop_connections()
    pool.publish(message("t.rec", "d@1", args=[str(out)]))  # the scheduler, after a crash
    await pool.settle()
    assert len(out.read_text().splitlines()) == 1
    await pool.stop()


@driven
async def test_runs_that_start_in_one_pass_of_the_loop_share_one_commit(
    tmp_path: Path,
) -> None:
    pool = Pool(tmp_path, {"t.ok": {"call": "tests.worker_tasks:noop"}}, now=T0, concurrency=4)
    worker = await pool.start()
    store = worker.store
    assert isinstance(store, SeenStore)
    commits: list[list[str]] = []  # per commit: the phases in the store as it was made
    commit = store.commit

    def recorded() -> None:
        phases = [store.get(f"r{n}@1") for n in range(4)]
        commits.append(["-" if s is None else s.phase.value for s in phases])
        commit()

    store.commit = recorded  # type: ignore[method-assign]
    for n in range(4):
        pool.publish(message("t.ok", f"r{n}@1"))
    await pool.settle()
    assert commits[0] == ["running"] * 4  # the four starts: one commit
    assert len(commits) < 8  # four starts and four ends
    assert len(pool.broker.acked) == 4
    await pool.stop()
