"""`beatd worker` as a real process against the real RabbitMQ, fed what an attacker or a broken
publisher would send (issue 12, issue 9 items 6, 9, 16): nothing runs that the file does not
allow, every such message is dead-lettered with its reason, and the run behind it still runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from beatd.core.messages import DEFAULT_MAX_BODY
from tests.rabbit import Rabbit, wait_until
from tests.workerutil import (
    Names,
    dead_letters,
    header,
    message,
    publish,
    queue_counts,
    running_worker,
    wait_for_file,
    worker_file,
)


@pytest.fixture
def names(rabbit: Rabbit) -> Names:
    return Names.fresh(rabbit)


def test_the_forged_message_of_issue_12_is_dead_lettered_and_runs_nothing(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    marker, out = tmp_path / "pwned", tmp_path / "out"
    tasks = {
        "reports.nightly": {"command": ["/usr/bin/env"]},  # as the shipped example had it
        "after": {"command": ["/bin/sh", "-c", f"cat > {out}"]},
    }
    config = worker_file(tmp_path, names, tasks)
    forged = message("reports.nightly", args=["/bin/sh", "-c", f"id > {marker}"])
    with running_worker(config, tmp_path) as worker:
        [forged_id, _] = publish(rabbit, names, forged, message("after"))
        [dead] = dead_letters(rabbit, names, 1)
        wait_for_file(out)  # the run behind it ran
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="both acked")
        assert worker.process.poll() is None
    assert not marker.exists()
    assert dead.properties.message_id == forged_id
    assert header(dead, "beatd-reason") == "refused"
    assert "the message has 3 args and this command takes none" in header(dead, "beatd-detail")


def test_a_shell_script_with_set_e_reads_the_message_from_stdin(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "out"
    script = f'set -e; read -r msg; printf "%s" "$msg" > {out}'
    config = worker_file(tmp_path, names, {"sh": {"command": ["/bin/sh", "-c", script]}})
    with running_worker(config, tmp_path) as worker:
        [run_id] = publish(rabbit, names, message("sh"))
        worker.wait_log(f"run {run_id} (job job): succeeded")
    assert json.loads(out.read_text())["id"] == run_id


def poison_bodies() -> dict[str, bytes]:
    good = message("after")

    def body(**fields: object) -> bytes:
        return json.dumps({**good, **fields}).encode()

    return {
        "100,000 [": b"[" * 100_000,
        "a time before year 1 in UTC": body(scheduled_at="0001-01-01T00:00:00+01:00"),
        "a lone surrogate in the id": body(id="\ud800"),  # json.dumps writes the escape
        "a newline in the id": body(id="job@x\nFORGED: run evil@1 (job evil): succeeded"),
        # worker.max_body, once the daemon passes it to inbound.admit; the default until then
        "over 1 MiB": body(kwargs={"pad": "x" * DEFAULT_MAX_BODY}),
        "UTF-16": json.dumps(good).encode("utf-16"),
        "NaN": body(args=[float("nan")]),
    }


def test_poison_messages_are_dead_lettered_as_malformed_and_the_run_behind_them_runs(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    out = tmp_path / "out"
    tasks = {"after": {"command": ["/bin/sh", "-c", f"cat > {out}"]}}
    config = worker_file(tmp_path, names, tasks)
    poison = poison_bodies()
    with running_worker(config, tmp_path) as worker:
        publish(rabbit, names, *poison.values(), routing_key="after")
        publish(rabbit, names, message("after"))
        dead = dead_letters(rabbit, names, len(poison))
        wait_for_file(out)
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="all acked")
        assert worker.process.poll() is None
        log = worker.log()
    assert [header(d, "beatd-reason") for d in dead] == ["malformed"] * len(poison)
    details = [header(d, "beatd-detail") for d in dead]
    assert "nested more than 32 deep" in details[0]
    assert "out of range in UTC" in details[1]
    assert "lone surrogate" in details[2]
    assert "unprintable" in details[3]
    assert f"over the {DEFAULT_MAX_BODY} bytes limit" in details[4]
    assert "not UTF-8" in details[5]
    assert "NaN" in details[6]
    assert "Traceback" not in log
    assert not any(line.startswith("FORGED") for line in log.splitlines()), log


def nested(depth: int) -> dict[str, object]:
    table: dict[str, object] = {"x": 1}
    for _ in range(depth):
        table = {"n": table}
    return table


def test_headers_pika_cannot_decode_are_dead_lettered_not_a_redelivery_loop(
    tmp_path: Path, rabbit: Rabbit, names: Names
) -> None:
    # Issue 9, item 9: headers nested 700 deep raised RecursionError inside pika's frame reader;
    # the connection dropped and the broker redelivered the message for ever.
    out = tmp_path / "out"
    tasks = {"after": {"command": ["/bin/sh", "-c", f"cat > {out}"]}}
    config = worker_file(tmp_path, names, tasks)
    limit = sys.getrecursionlimit()
    with running_worker(config, tmp_path) as worker:
        sys.setrecursionlimit(20_000)  # for pika's encoder here; the worker keeps its own
        try:
            publish(rabbit, names, message("after"), headers={"deep": nested(700)})
        finally:
            sys.setrecursionlimit(limit)
        publish(rabbit, names, message("after"))
        [dead] = dead_letters(rabbit, names, 1)
        wait_for_file(out)
        wait_until(lambda: queue_counts(names.queue) == (0, 0), what="all acked")
        log = worker.log()
    assert header(dead, "beatd-reason") == "malformed"
    assert "properties could not be decoded: RecursionError" in header(dead, "beatd-detail")
    assert "lost the broker connection" not in log
