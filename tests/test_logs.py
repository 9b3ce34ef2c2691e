"""What the operator reads: a line per published, missed and unroutable run (a summary above a
threshold), the reload line, syslog priorities under journald, job=/run_id= fields, pika's own
logging silenced. Driven over the in-memory broker with a fake clock."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from beatd.runtime import logs
from beatd.scheduler import report
from tests.clock import utc
from tests.fakebroker import Queue
from tests.steps import Beat, driven, schedule

T0 = utc(2026, 11, 21, 5, 30)


def bound(beat: Beat) -> None:
    beat.broker.queues["q"] = Queue("q", {})
    beat.broker.bindings.add(("beatd", "q", "#"))


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "beatd.scheduler"]


@driven
async def test_each_published_run_is_one_line_with_its_slot_and_lateness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    beat = Beat(schedule("  tick:\n    every: 1m\n    task: t.tick\n"), T0 - timedelta(seconds=1))
    bound(beat)
    await beat.start()
    with caplog.at_level(logging.INFO, logger="beatd.scheduler"):
        await beat.step(T0 + timedelta(milliseconds=250))
    [record] = [r for r in caplog.records if r.getMessage().startswith("published")]
    assert record.getMessage() == (
        "published tick@20261121T053000Z (scheduled at 2026-11-21T05:30:00Z, 0.250s late)"
    )
    assert (getattr(record, "job", None), getattr(record, "run_id", None)) == (
        "tick",
        "tick@20261121T053000Z",
    )


@driven
async def test_missed_slots_and_the_catch_up_run_are_each_logged_after_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = (
        "  skipper:\n    every: 1m\n    task: t.s\n    misfire: skip\n    grace: 10s\n"
        "  catcher:\n    every: 1m\n    task: t.c\n    misfire: once\n    grace: 10s\n"
    )
    beat = Beat(schedule(jobs), T0 - timedelta(seconds=1))
    bound(beat)
    await beat.start()
    await beat.step(T0)
    await beat.crash()
    beat.clock.now = T0 + timedelta(minutes=10, seconds=30)  # down for 10 slots
    with caplog.at_level(logging.INFO, logger="beatd.scheduler"):
        await beat.start()
        await beat.step()
    got = lines(caplog)
    assert (
        "missed 10 slot(s) of job 'skipper' up to 2026-11-21T05:40:00Z; not published "
        "(misfire: skip)" in got
    )
    assert (
        "missed 9 slot(s) of job 'catcher' up to 2026-11-21T05:39:00Z; not published "
        "(misfire: once)" in got
    )
    assert not [line for line in got if line.startswith("published skipper")]
    assert (
        "published catcher@20261121T054000Z (missed slot at 2026-11-21T05:40:00Z, 30.000s late)"
        in got
    )


@driven
async def test_a_burst_above_the_threshold_is_one_summary_line_not_one_per_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = report.PER_RUN_LINES + 1
    jobs = "".join(f"  j{i:03}:\n    every: 1m\n    task: t.x\n" for i in range(count))
    beat = Beat(schedule(jobs), T0 - timedelta(seconds=1))
    bound(beat)
    await beat.start()
    with caplog.at_level(logging.INFO, logger="beatd.scheduler"):
        await beat.run_until(T0)
    assert len(beat.published()) == count
    got = [line for line in lines(caplog) if line.startswith("published")]
    assert len(got) == 1
    assert got[0].startswith(f"published {count} runs of {count} jobs (101 schedule) at ")
    assert "'j000', 'j001'" in got[0] and "and 91 more" in got[0]


@driven
async def test_every_unroutable_run_is_a_warning_of_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    beat = Beat(schedule("  lonely:\n    every: 1m\n    task: no.one\n"), T0 - timedelta(seconds=1))
    await beat.start()
    with caplog.at_level(logging.INFO, logger="beatd.scheduler"):
        await beat.run_until(T0 + timedelta(minutes=1))
    got = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in got] == [
        f"unroutable lonely@20261121T05{m}00Z: no queue is bound to exchange 'beatd' for key "
        "'no.one'; not delivered"
        for m in ("30", "31")
    ]
    assert not [line for line in lines(caplog) if line.startswith("published")]


def test_a_reload_line_names_the_jobs_added_removed_and_changed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="beatd.scheduler"):
        report.log_reload("b.yaml", 12, ["n1"], [], [f"c{i:02}" for i in range(12)])
        report.log_reload("b.yaml", 12, [], [], [])
    assert lines(caplog) == [
        "reloaded b.yaml: 12 jobs; added 'n1'; changed 'c00', 'c01', 'c02', 'c03', 'c04', "
        "'c05', 'c06', 'c07', 'c08', 'c09' and 2 more",
        "reloaded b.yaml: 12 jobs, none changed",
    ]


def record(level: int, msg: str, **extra: str) -> logging.LogRecord:
    rec = logging.LogRecord("beatd.x", level, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_under_the_journal_every_line_carries_its_syslog_priority() -> None:
    formatter = logs.LineFormatter("%(message)s", journal=True)
    assert formatter.format(record(logging.ERROR, "bad")) == "<3>bad"
    assert formatter.format(record(logging.WARNING, "meh")) == "<4>meh"
    assert formatter.format(record(logging.INFO, "ok")) == "<6>ok"
    assert formatter.format(record(logging.DEBUG, "dbg")) == "<7>dbg"
    assert formatter.format(record(logging.CRITICAL, "two\nlines")) == "<2>two\n<2>lines"


def test_job_and_run_id_are_appended_as_fields_and_quoted_when_needed() -> None:
    formatter = logs.LineFormatter("%(message)s", journal=False)
    line = formatter.format(record(logging.INFO, "published", job="a", run_id="a@1"))
    assert line == "published job=a run_id=a@1"
    assert formatter.format(record(logging.INFO, "x", job="two words")) == "x job='two words'"


def test_the_journal_is_recognised_only_when_stderr_is_the_stream_it_names() -> None:
    with tempfile.TemporaryFile("w") as stream:
        st = os.fstat(stream.fileno())
        assert logs.is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        assert not logs.is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream)
        assert not logs.is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not logs.is_journal({}, stream)


def test_setup_silences_pika_and_prefixes_priorities_under_the_journal() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    with tempfile.TemporaryFile("w+") as stream:
        st = os.fstat(stream.fileno())
        try:
            logs.setup({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
            logging.getLogger("pika.adapters").error("socket error 111")
            logging.getLogger("beatd.broker").warning("broker unreachable", extra={"job": "j"})
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
        stream.seek(0)
        assert stream.read() == "<4>WARNING beatd.broker: broker unreachable job=j\n"


def test_trigger_against_a_dead_broker_says_connection_refused(tmp_path: Path) -> None:
    path = tmp_path / "dead.yaml"
    path.write_text(
        "broker:\n  url: amqp://guest:guest@127.0.0.1:1/%2F\n"
        "jobs:\n  a:\n    every: 1h\n    task: x.y\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "beatd", "trigger", "-c", str(path), "a"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == "beatd: amqp://guest:***@127.0.0.1:1/%2F: connection refused\n"
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_formatter_leaves_lines_without_fields_alone() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.LineFormatter("%(levelname)s %(message)s", journal=False))
    handler.emit(record(logging.INFO, "plain"))
    assert stream.getvalue() == "INFO plain\n"
