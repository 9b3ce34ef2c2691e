"""`beatd check` and `beatd list`, called through the entry point with argv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from beatd import __version__
from beatd.cli import main
from beatd.core.cron import parse
from beatd.core.errors import ConfigError
from beatd.core.jobstate import JobState
from beatd.core.schedules import EPOCH
from beatd.runtime import pauses
from beatd.runtime.state import State
from beatd.worker import daemon

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config" / "beatd.yaml"
NOW = "2026-10-24T12:00:00Z"  # a Saturday; Europe's clocks go back early tomorrow


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "beatd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    """A small file with every kind of job, its state kept in tmp_path."""
    return write(
        tmp_path,
        f"""
        timezone: Europe/Berlin
        state: {tmp_path / "state.db"}
        jobs:
          quarter:
            cron: "*/15 * * * *"
            task: sessions.cleanup
          nightly:
            cron: "30 2 * * *"
            timezone: America/New_York
            task: reports.nightly
          heartbeat:
            every: 30s
            task: monitoring.ping
          new-year:
            at: "2027-01-01T00:00:00+01:00"
            task: greetings.send
          paused:
            every: 1h
            task: x.y
            enabled: false
        """,
    )


def table_rows(out: str) -> list[list[str]]:
    """The table's rows split on runs of two or more spaces, header first."""
    lines = out.rstrip("\n").split("\n")
    table = lines[: lines.index("")]  # a blank line, then the summary and the state file
    return [[cell for cell in line.split("  ") if cell] for line in table]


def footer(out: str) -> list[str]:
    """The lines under the table: the count, then which state file LAST came from."""
    lines = out.rstrip("\n").split("\n")
    return lines[lines.index("") + 1 :]


def cells(row: list[str]) -> list[str]:
    return [cell.strip() for cell in row]


# --- check ------------------------------------------------------------------------------------


def test_check_on_a_valid_file_prints_one_summary_line_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "check", "-c", str(EXAMPLE))
    assert code == 0
    assert err == ""
    assert out.count("\n") == 1
    assert out.startswith(f"{EXAMPLE}: OK, 6 jobs (5 enabled), next: ")


def test_check_on_a_broken_file_prints_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """\
        jobs:
          a:
            cron: "61 * * * *"
            task: t
          b:
            every: 0s
            task: t
          c:
            every: 1h
        """,
    )
    code, out, err = run(capsys, "check", "-c", str(path))
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{path}:3: job 'a': cron: minute 61 out of range 0-59",
        f"{path}:6: job 'b': every: '0s' must be positive",
        f"{path}:8: job 'c': task: missing (the name executors run, e.g. reports.nightly)",
        f"{path}: 3 problems",
    ]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.yaml", "no such file"),
        (lambda d: d, "is a directory, not a file"),
        (lambda d: write(d, "", "empty.yaml"), "file is empty (expected broker, jobs, ...)"),
        (
            lambda d: write(d, "[this is: not, {yaml\n", "junk.yaml"),
            "not valid YAML: while parsing a flow",
        ),
        (
            lambda d: write(d, "print('hello')\n", "script.py"),
            "must be a mapping of keys to values, got str \"print('hello')\"",
        ),
        (lambda d: write(d, "x", "file") / "below", "cannot read: Not a directory"),
    ],
    ids=["missing", "directory", "empty", "not YAML", "not a schedule", "unreadable path"],
)
def test_check_on_an_unusable_file_says_why_in_one_line_and_exits_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], Path],
    message: str,
) -> None:
    path = make(tmp_path)
    code, out, err = run(capsys, "check", "-c", str(path))
    assert code == 1
    assert out == ""
    first, summary = err.splitlines()
    assert first.startswith(f"{path}")
    assert message in first
    assert summary == f"{path}: 1 problem"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_check_on_a_file_without_read_permission_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "jobs: {}\n")
    path.chmod(0)
    code, _, err = run(capsys, "check", "-c", str(path))
    assert code == 1
    assert err.splitlines()[0] == f"{path}: cannot read: Permission denied"


def test_check_and_list_take_the_file_from_beatd_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BEATD_CONFIG", str(EXAMPLE))
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert out.startswith(f"{EXAMPLE}: OK")


# --- list: the table --------------------------------------------------------------------------


def test_list_shows_each_job_sorted_by_next_run_with_systemctl_columns(
    schedule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    assert (code, err) == (0, "")
    rows = table_rows(out)
    assert cells(rows[0]) == ["NEXT (Europe/Berlin)", "LEFT", "LAST", "JOB", "SCHEDULE", "TASK"]
    assert [cells(r) for r in rows[1:]] == [
        [
            "Sat 2026-10-24 14:00:30 CEST", "30s", "-", "heartbeat",
            "every 30s", "monitoring.ping",
        ],
        [
            "Sat 2026-10-24 14:15:00 CEST", "15min", "-", "quarter",
            "*/15 * * * * (every 15 minutes)", "sessions.cleanup",
        ],
        [
            "Sun 2026-10-25 07:30:00 CET", "18h 30min", "-", "nightly",
            "30 2 * * * (at 02:30 daily)", "reports.nightly",
        ],
        [
            "Fri 2027-01-01 00:00:00 CET", "68d 11h", "-", "new-year",
            "at 2027-01-01T00:00:00+01:00", "greetings.send",
        ],
        ["-", "disabled", "-", "paused", "every 1h", "x.y"],
    ]  # fmt: skip
    assert footer(out)[0] == "5 jobs listed."


def test_list_columns_line_up(schedule: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    lines = out.split("\n")
    header = lines[0]
    for column in ("LEFT", "LAST", "JOB", "SCHEDULE", "TASK"):
        start = header.index(column)
        for line in lines[1:6]:
            assert line[start - 2 : start] == "  "
            assert line[start] != " "


def test_list_shows_the_last_run_from_the_state_file(
    schedule: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = State(tmp_path / "state.db")
    last = datetime(2026, 10, 24, 6, 30, tzinfo=UTC)
    state.save([JobState("nightly", "f", cursor=last, last_slot=last)])
    state.close()
    _, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    rows = {cells(r)[3]: cells(r) for r in table_rows(out)[1:]}
    assert rows["nightly"][2] == "Sat 2026-10-24 08:30:00 CEST"  # in the file's zone
    assert rows["quarter"][2] == "-"
    _, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW, "--local")
    rows = {cells(r)[3]: cells(r) for r in table_rows(out)[1:]}
    assert rows["nightly"][2] == "Sat 2026-10-24 02:30:00 EDT"  # in the job's zone


def test_list_says_under_the_table_which_state_file_it_read(
    schedule: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    systemd = tmp_path / "var-lib-beatd" / "state.db"
    monkeypatch.setattr(pauses, "SYSTEMD_STATE", systemd)
    configured = tmp_path / "state.db"
    code, out, err = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    assert (code, err) == (0, "")
    assert footer(out) == ["5 jobs listed.", f"state: {configured} (not found: LAST unknown)"]
    # From a shell without STATE_DIRECTORY: the daemon's file under the shipped unit.
    systemd.parent.mkdir()
    last = datetime(2026, 10, 24, 6, 30, tzinfo=UTC)
    state = State(systemd)
    state.save([JobState("nightly", "f", cursor=last, last_slot=last)])
    state.close()
    _, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    assert footer(out)[1:] == [
        f"state: {systemd} (the systemd unit's; {configured} does not exist)"
    ]
    assert {cells(r)[3]: cells(r)[2] for r in table_rows(out)[1:]}["nightly"] != "-"
    State(configured).close()  # the configured file wins once it exists
    _, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    assert footer(out)[1:] == [f"state: {configured}"]
    _, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW, "--json")
    assert "state" not in out  # the JSON array has no room for it: the contract stays


def test_list_with_a_corrupt_state_file_is_a_clear_error(
    schedule: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    code, out, err = run(capsys, "list", "-c", str(schedule), "--now", NOW)
    assert code == 1
    assert out == ""
    assert err.startswith(f"beatd: {tmp_path / 'state.db'}: cannot read the state file")
    assert "Traceback" not in err


def test_list_count_shows_the_next_n_runs_of_all_jobs_in_time_order(
    schedule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW, "--count", "5")
    assert code == 0
    rows = [cells(r) for r in table_rows(out)[1:]]
    assert [(r[0], r[3]) for r in rows] == [
        ("Sat 2026-10-24 14:00:30 CEST", "heartbeat"),
        ("Sat 2026-10-24 14:01:00 CEST", "heartbeat"),
        ("Sat 2026-10-24 14:01:30 CEST", "heartbeat"),
        ("Sat 2026-10-24 14:02:00 CEST", "heartbeat"),
        ("Sat 2026-10-24 14:02:30 CEST", "heartbeat"),
    ]
    assert footer(out)[0] == "5 runs of 1 job listed."


def test_list_until_shows_every_run_in_the_window_in_time_order(
    schedule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(schedule), "--now", NOW, "--until", "24h", "--json"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    runs = json.loads(out)
    by_job: dict[str, list[str]] = {}
    for r in runs:
        by_job.setdefault(r["job"], []).append(r["at"])
    assert len(by_job["heartbeat"]) == 24 * 120
    assert len(by_job["quarter"]) == 24 * 4  # real hours: 25 on Berlin's clocks tonight
    quarter = [r["local"] for r in runs if r["job"] == "quarter"]
    assert "2026-10-25T02:15:00+02:00" in quarter
    assert "2026-10-25T02:15:00+01:00" in quarter
    assert by_job["nightly"] == ["2026-10-25T06:30:00Z"]
    assert "new-year" not in by_job and "paused" not in by_job
    keys = [(r["at"], r["job"]) for r in runs]
    assert keys == sorted(keys)
    assert runs[-1]["at"] <= "2026-10-25T12:00:00Z"


def test_list_job_shows_one_job(schedule: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW, "--job", "nightly")
    assert code == 0
    rows = table_rows(out)
    assert [cells(r)[3] for r in rows[1:]] == ["nightly"]
    assert footer(out)[0] == "1 job listed."


def test_list_job_with_count_plans_that_job_only(
    schedule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(schedule), "--now", NOW, "--job", "nightly", "--count", "3"]
    _, out, _ = run(capsys, *argv, "--json")
    assert [r["local"] for r in json.loads(out)] == [
        "2026-10-25T02:30:00-04:00",
        "2026-10-26T02:30:00-04:00",
        "2026-10-27T02:30:00-04:00",
    ]


def test_list_job_with_an_unknown_name_suggests_the_closest(
    schedule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", "-c", str(schedule), "--job", "nightley")
    assert code == 1
    assert out == ""
    assert err == f"beatd: {schedule}: no job named 'nightley' (did you mean 'nightly'?)\n"


def test_list_now_without_an_offset_is_in_the_files_zone(
    schedule: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(schedule), "--job", "quarter", "--count", "1", "--json"]
    _, naive, _ = run(capsys, *argv, "--now", "2026-07-01T10:05")
    _, explicit, _ = run(capsys, *argv, "--now", "2026-07-01T10:05+02:00")
    assert json.loads(naive) == json.loads(explicit)
    assert json.loads(naive)[0]["at"] == "2026-07-01T08:15:00Z"


def test_list_now_plans_across_a_dst_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        timezone: America/New_York
        jobs:
          fixed: {cron: "30 1 * * *", task: t}
          every-30: {cron: "*/30 1 * * *", task: t}
          skipped: {cron: "30 2 * * *", task: t}
        """,
    )
    argv = ["list", "-c", str(path), "--json", "--now", "2026-11-01T00:00", "--until", "3h"]
    _, out, _ = run(capsys, *argv)
    assert [(r["job"], r["local"]) for r in json.loads(out)] == [
        ("every-30", "2026-11-01T01:00:00-04:00"),
        ("every-30", "2026-11-01T01:30:00-04:00"),
        ("fixed", "2026-11-01T01:30:00-04:00"),  # once, although 01:30 happens twice
        ("every-30", "2026-11-01T01:00:00-05:00"),
        ("every-30", "2026-11-01T01:30:00-05:00"),
    ]
    argv = ["list", "-c", str(path), "--json", "--job", "skipped", "--now", "2026-03-08T00:00"]
    _, out, _ = run(capsys, *argv)
    assert [r["local"] for r in json.loads(out)] == ["2026-03-08T03:00:00-04:00"]


def test_list_json_has_exactly_the_documented_shape(
    schedule: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = State(tmp_path / "state.db")
    last = datetime(2026, 10, 24, 6, 30, tzinfo=UTC)
    state.save([JobState("nightly", "f", last, last, last, published=7, missed=2, unroutable=1)])
    state.close()
    code, out, _ = run(capsys, "list", "-c", str(schedule), "--now", NOW, "--json")
    assert code == 0
    never = {"dst": None, "last": None, "published": 0, "missed": 0, "unroutable": 0}
    assert json.loads(out) == [
        {
            "job": "heartbeat",
            "task": "monitoring.ping",
            "at": "2026-10-24T12:00:30Z",
            "local": "2026-10-24T14:00:30+02:00",
            "zone": "Europe/Berlin",
            "schedule": "every 30s",
            "enabled": True,
            **never,
        },
        {
            "job": "quarter",
            "task": "sessions.cleanup",
            "at": "2026-10-24T12:15:00Z",
            "local": "2026-10-24T14:15:00+02:00",
            "zone": "Europe/Berlin",
            "schedule": "*/15 * * * *",
            "enabled": True,
            **never,
        },
        {
            "job": "nightly",
            "task": "reports.nightly",
            "at": "2026-10-25T06:30:00Z",
            "local": "2026-10-25T02:30:00-04:00",
            "zone": "America/New_York",
            "schedule": "30 2 * * *",
            "enabled": True,
            "dst": None,
            "last": "2026-10-24T06:30:00Z",
            "published": 7,
            "missed": 2,
            "unroutable": 1,
        },
        {
            "job": "new-year",
            "task": "greetings.send",
            "at": "2026-12-31T23:00:00Z",
            "local": "2027-01-01T00:00:00+01:00",
            "zone": "Europe/Berlin",
            "schedule": "at 2027-01-01T00:00:00+01:00",
            "enabled": True,
            **never,
        },
        {
            "job": "paused",
            "task": "x.y",
            "at": None,
            "local": None,
            "zone": "Europe/Berlin",
            "schedule": "every 1h",
            "enabled": False,
            **never,
        },
    ]


def test_list_json_lists_a_finished_one_off_job_with_no_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "jobs:\n  done: {at: '2020-01-01T00:00:00Z', task: t}\n")
    code, out, _ = run(capsys, "list", "-c", str(path), "--json")
    assert code == 0
    assert [(r["job"], r["at"], r["enabled"]) for r in json.loads(out)] == [("done", None, True)]


def test_list_json_with_nothing_in_the_window_is_an_empty_array(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "jobs:\n  daily: {cron: '0 0 * * *', task: t}\n")
    argv = ["list", "-c", str(path), "--json", "--now", "2026-01-01T01:00Z", "--until", "1h"]
    code, out, _ = run(capsys, *argv)
    assert (code, out) == (0, "[]\n")


def test_list_shows_a_finished_one_off_job_without_a_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f"state: {tmp_path / 's.db'}\njobs:\n  done: {{at: '2020-01-01T00:00:00Z', task: t}}\n",
    )
    _, out, _ = run(capsys, "list", "-c", str(path))
    assert cells(table_rows(out)[1])[:4] == ["-", "-", "-", "done"]


def test_list_on_a_broken_file_exits_1_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "jobs:\n  a: {every: 0s, task: t}\n  b: {cron: 'x', task: t}\n")
    code, out, err = run(capsys, "list", "-c", str(path))
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        f"{path}:2: job 'a': every: '0s' must be positive",
        f"{path}:3: job 'b': cron: expected 5 fields (minute hour day-of-month month"
        " day-of-week), or 6 with seconds first; got 1",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["list", "--count", "0"],
        ["list", "--count", "many"],
        ["list", "--until", "soon"],
        ["list", "--until", "0s"],
        ["list", "--now", "yesterday"],
        ["check", "--bogus"],
    ],
)
def test_bad_arguments_exit_2_with_a_usage_message(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    _, err = capsys.readouterr()
    assert "usage: beatd" in err


def test_python_m_beatd_prints_its_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beatd", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"beatd {__version__}"


# --- 10,000 jobs ------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]
CRONS = [
    "*/15 * * * *", "0 * * * *", "30 2 * * *", "0 9 * * 1-5", "5 4 * * sun", "0 0 1 * *",
    "*/7 3-5 * * *", "15,45 */2 * * *", "0 12 13 * 5", "59 23 L * *", "H H * * *",
    "H/10 * * * *", "H H(1-5) * * *", "0 0 * * 6,0",
]  # fmt: skip
EVERY = {"500ms": 0.5, "30s": 30, "5m": 300, "1h30m": 5400, "2d": 172_800, "7s": 7}


def big_schedule(count: int) -> str:
    lines = ["timezone: Europe/Berlin", "jobs:"]
    for i in range(count):
        name = f"job-{i:05d}"
        lines.append(f"  {name}:")
        kind = i % 10
        if kind < 6:
            lines.append(f'    cron: "{CRONS[i % len(CRONS)]}"')
            if i % 3 == 0:
                lines.append(f"    timezone: {ZONES[i % len(ZONES)]}")
        elif kind < 9:
            lines.append(f"    every: {list(EVERY)[i % len(EVERY)]}")
        else:
            lines.append(f'    at: "2027-0{1 + i % 9}-01T0{i % 10}:00:00+01:00"')
        lines.append(f"    task: app.task{i % 37}")
        if i % 11 == 0:
            lines.append(f"    args: [{i}, {{n: {i}}}]")
        if i % 97 == 0:
            lines.append("    enabled: false")
    return "\n".join(lines) + "\n"


def expected_next(spec: dict[str, str], name: str, now: datetime) -> datetime:
    """The next run by other means: cronsim for cron, arithmetic for intervals."""
    if "at" in spec:
        return datetime.fromisoformat(spec["at"]).astimezone(UTC)
    if "every" in spec:
        period = timedelta(seconds=EVERY[spec["every"]])
        return EPOCH + ((now - EPOCH) // period + 1) * period
    expression = spec["cron"]
    if "H" in expression:  # beatd resolves H from the name; cronsim then times the result
        expr = parse(expression, name)
        assert len(expr.hours) in (1, 24) and len(expr.minutes) in (1, 6)
        minutes = ",".join(map(str, expr.minutes))
        hours = "*" if len(expr.hours) == 24 else str(expr.hours[0])
        expression = f"{minutes} {hours} * * *"
    zone = ZoneInfo(spec.get("timezone", "Europe/Berlin"))
    return next(islice(CronSim(expression, now.astimezone(zone)), 1)).astimezone(UTC)


def test_list_json_is_right_for_every_one_of_ten_thousand_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = big_schedule(10_000)
    path = tmp_path / "big.yaml"
    path.write_text(text, encoding="utf-8")
    now = datetime(2026, 6, 15, 10, 7, 13, tzinfo=UTC)  # no DST change anywhere near
    code, out, err = run(capsys, "list", "-c", str(path), "--json", "--now", now.isoformat())
    assert (code, err) == (0, "")
    runs = json.loads(out)

    specs: dict[str, dict[str, str]] = {}
    for line in text.splitlines()[2:]:
        if not line.startswith("    "):
            name = line.strip().rstrip(":")
            specs[name] = {}
        else:
            key, _, value = line.strip().partition(": ")
            specs[name][key] = value.strip('"')
    enabled = {name for name, spec in specs.items() if "enabled" not in spec}
    assert len(enabled) == 10_000 - len(range(0, 10_000, 97))
    assert sorted(r["job"] for r in runs if r["at"] is not None) == sorted(enabled)
    disabled = [r for r in runs if r["at"] is None]  # listed last, not hidden
    assert [r["job"] for r in disabled] == sorted(set(specs) - enabled)
    assert not any(r["enabled"] for r in disabled)
    runs = runs[: -len(disabled)]
    for r in runs:
        spec = specs[r["job"]]
        want = expected_next(spec, r["job"], now)
        assert r["at"] == want.strftime("%Y-%m-%dT%H:%M:%S") + (
            f".{want.microsecond // 1000:03d}Z" if want.microsecond else "Z"
        ), r
        zone = ZoneInfo(spec.get("timezone", "Europe/Berlin"))
        assert datetime.fromisoformat(r["local"]) == want
        assert datetime.fromisoformat(r["local"]).utcoffset() == want.astimezone(zone).utcoffset()
        assert r["task"] == spec["task"]
    keys = [(r["at"], r["job"]) for r in runs]
    assert keys == sorted(keys)


# --- check on a worker's file -----------------------------------------------------------------


def test_check_on_a_worker_file_reports_what_beatd_worker_would_refuse_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n", encoding="utf-8")  # no execute bit
    path = write(
        tmp_path,
        f"""\
        worker: {{queue: q}}
        tasks:
          missing-program: {{command: [no-such-program-beatd-test]}}
          missing-module: {{call: "no_such_module_beatd_test:run"}}
          missing-function: {{call: "json:no_such_function"}}
          not-executable: {{command: [{script}]}}
          fine: {{command: [/bin/true]}}
        """,
    )
    code, out, err = run(capsys, "check", "-c", str(path))
    assert (code, out) == (1, "")
    with pytest.raises(ConfigError) as refused:
        daemon.load(str(path), os.environ)  # what `beatd worker` says before exiting 78
    assert err.splitlines() == [*map(str, refused.value.problems), f"{path}: 4 problems"]
    assert err.splitlines()[:4] == [
        f"{path}:3: task 'missing-program': command: 'no-such-program-beatd-test' not found on"
        f" PATH ({os.environ['PATH']})",
        f"{path}:4: task 'missing-module': call: cannot import 'no_such_module_beatd_test':"
        " ModuleNotFoundError: No module named 'no_such_module_beatd_test'",
        f"{path}:5: task 'missing-function': call: 'json' has no 'no_such_function'",
        f"{path}:6: task 'not-executable': command: '{script}' is not an executable file",
    ]


def test_check_on_a_worker_file_without_tasks_fails_as_the_worker_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "worker: {queue: q}\n")
    assert run(capsys, "check", "-c", str(path)) == (
        1,
        "",
        f"{path}: no tasks: a worker runs only the tasks its file defines\n{path}: 1 problem\n",
    )


def test_check_on_the_example_worker_file_resolves_every_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = ROOT / "config" / "worker.yaml"
    code, out, err = run(capsys, "check", "-c", str(example))
    assert (code, err) == (0, "")
    assert out == f"{example}: OK, 5 tasks, each resolved as `beatd worker` does\n"


def test_check_skip_tasks_checks_only_what_the_scheduler_uses_of_a_shared_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """\
        jobs:
          j: {every: 1h, task: t}
        tasks:
          t: {command: [no-such-program-beatd-test]}
        """,
    )
    code, out, _ = run(capsys, "check", "-c", str(path), "--skip-tasks")
    assert code == 0
    assert out.startswith(f"{path}: OK, 1 jobs (1 enabled), 1 tasks, not resolved, next: ")
    code, _, err = run(capsys, "check", "-c", str(path))
    assert code == 1
    assert err.splitlines()[0].startswith(f"{path}:4: task 't': command: 'no-such-program-beatd")
