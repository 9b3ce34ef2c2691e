"""`beatd list`: bounded streaming, one zone by default, DST notes, the JSON record, the calendar's
edges. Called through the entry point with argv, except the memory bound (on the generators)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from beatd.cli import main
from beatd.core import calendar, listing
from beatd.core.config import read_config
from beatd.core.durations import format_left
from beatd.core.jobstate import JobState
from beatd.core.messages import iso_utc

ROOT = Path(__file__).parent.parent


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "beatd.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rows(out: str) -> list[list[str]]:
    """The table's rows (header first) split on runs of two or more spaces."""
    lines = out.rstrip("\n").split("\n")
    table = lines[: lines.index("")]
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in table]


def footer(out: str) -> list[str]:
    """The lines under the table: the count, then which state file LAST came from."""
    lines = out.rstrip("\n").split("\n")
    return lines[lines.index("") + 1 :]


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    """Jobs in three zones around New York's fall-back night (2026-11-01 06:00Z: 02:00 EDT
    becomes 01:00 EST) and Berlin's spring-forward one (2027-03-28 01:00Z: 02:00 -> 03:00)."""
    return write(
        tmp_path,
        f"""
        timezone: UTC
        state: {tmp_path / "state.db"}
        jobs:
          ny-fixed: {{cron: "30 1 * * *", timezone: America/New_York, task: t}}
          ny-half-hourly: {{cron: "*/30 1 * * *", timezone: America/New_York, task: t}}
          berlin-fixed: {{cron: "30 2 * * *", timezone: Europe/Berlin, task: t}}
          kolkata: {{cron: "0 6 * * *", timezone: Asia/Kolkata, task: t}}
        """,
    )


# --- one zone, time order -----------------------------------------------------------------------


def test_list_shows_every_row_in_the_files_zone_so_the_table_reads_in_time_order(
    zones: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(zones), "--now", "2026-10-31T00:00Z", "--until", "2d"]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    table = rows(out)
    assert table[0][0] == "NEXT (UTC)"
    times = [r[0] for r in table[1:]]
    assert all(t.endswith(" UTC") for t in times)
    assert times == sorted(times)  # one zone: text order is time order


def test_list_local_shows_each_jobs_own_zone_and_says_so(
    zones: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(zones), "--now", "2026-10-31T00:00Z", "--local", "--count", "2"]
    _, out, _ = run(capsys, *argv)
    table = rows(out)
    assert table[0][0] == "NEXT (each job's zone)"
    assert [(r[0], r[3]) for r in table[1:]] == [
        ("Sat 2026-10-31 06:00:00 IST", "kolkata"),  # 00:30Z
        ("Sat 2026-10-31 02:30:00 CET", "berlin-fixed"),  # 01:30Z: later, though it reads earlier
    ]


# --- DST notes ----------------------------------------------------------------------------------


def test_list_notes_a_repeated_hour_and_names_the_jobs_zone_when_showing_another(
    zones: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(zones), "--now", "2026-11-01T04:00Z", "--until", "3h"]
    argv += ["--job", "ny-half-hourly"]
    _, out, _ = run(capsys, *argv)
    lines = out.split("\n")[1:5]
    assert [line.split("  ")[0] for line in lines] == [
        "Sun 2026-11-01 05:00:00 UTC",  # 01:00 EDT
        "Sun 2026-11-01 05:30:00 UTC",
        "Sun 2026-11-01 06:00:00 UTC",  # 01:00 EST: the same wall time again
        "Sun 2026-11-01 06:30:00 UTC",
    ]
    notes = [line.rsplit("  ", 1)[1] for line in lines]
    assert notes == [
        "DST in America/New_York: repeated hour, first time",
        "DST in America/New_York: repeated hour, first time",
        "DST in America/New_York: repeated hour, second time",
        "DST in America/New_York: repeated hour, second time",
    ]


def test_list_json_notes_a_skipped_time_that_runs_right_after_the_jump(
    zones: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(zones), "--json", "--now", "2027-03-27T00:00Z", "--count", "3"]
    _, out, _ = run(capsys, *argv, "--job", "berlin-fixed")
    assert [(r["local"], r["dst"]) for r in json.loads(out)] == [
        ("2027-03-27T02:30:00+01:00", None),
        ("2027-03-28T03:00:00+02:00", "DST: 02:30 skipped, runs at 03:00"),
        ("2027-03-29T02:30:00+02:00", None),
    ]


def test_list_notes_a_fixed_time_in_a_repeated_hour_runs_once(
    zones: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(zones), "--json", "--now", "2026-10-31T12:00Z", "--count", "2"]
    _, out, _ = run(capsys, *argv, "--job", "ny-fixed")
    assert [(r["local"], r["dst"]) for r in json.loads(out)] == [
        ("2026-11-01T01:30:00-04:00", "DST: 01:30 comes twice, runs at the first only"),
        ("2026-11-02T01:30:00-05:00", None),
    ]


# --- bounded ------------------------------------------------------------------------------------


@pytest.fixture
def busy(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        f"""
        state: {tmp_path / "state.db"}
        jobs:
          heartbeat: {{every: 30s, task: ping}}
          quarter: {{cron: "*/15 * * * *", task: q}}
          daily: {{cron: "0 3 * * *", task: d}}
        """,
    )


def test_list_count_above_the_cap_shows_the_cap_and_says_so(
    busy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_ROWS", 50)
    argv = ["list", "-c", str(busy), "--now", "2026-06-01T00:00Z", "--count", "100000000"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    assert len(rows(out)) == 1 + 50
    assert err == "beatd list: showing the first 50 runs, not 100,000,000\n"


def test_list_until_with_more_rows_than_the_cap_stops_and_says_how_to_narrow_it(
    busy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_ROWS", 50)
    argv = ["list", "-c", str(busy), "--now", "2026-06-01T00:00Z", "--until", "1d", "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    assert len(json.loads(out)) == 50
    assert err == (
        "beatd list: stopped after 50 runs; more fall before 2026-06-02T00:00:00Z"
        " (narrow it with --job or a shorter --until)\n"
    )


def test_list_within_the_cap_prints_no_note(
    busy: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing, "MAX_ROWS", 50)
    for extra in (["--count", "50"], ["--until", "10m"], ["--count", "3", "--until", "1d"]):
        code, _, err = run(capsys, "list", "-c", str(busy), "--now", "2026-06-01T00:00Z", *extra)
        assert (code, err) == (0, ""), extra


def test_list_summary_says_which_job_fills_the_table(
    busy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "list", "-c", str(busy), "--now", "2026-06-01T00:00Z", "--until", "2h")
    assert footer(out)[0] == "248 runs of 2 jobs listed (240 of them heartbeat)."


def test_streamed_rows_line_up_with_the_header_beyond_the_measured_ones(
    busy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["list", "-c", str(busy), "--now", "2026-06-01T00:00Z", "--count", "3000"]
    _, out, _ = run(capsys, *argv)
    lines = out.split("\n")
    for column in ("LEFT", "LAST", "JOB", "SCHEDULE", "TASK"):
        start = lines[0].index(column)
        for line in lines[1:3001]:
            assert line[start - 2 : start] == "  " and line[start] != " ", (column, line)


def test_last_outcomes_are_a_column_after_last_only_when_given(busy: Path) -> None:
    config = read_config(busy, {})
    now = datetime(2026, 6, 1, tzinfo=UTC)
    outcomes = {"daily": "failed, dead-lettered", "heartbeat": "succeeded"}

    def table(outcomes: dict[str, str] | None) -> list[str]:
        runs = listing.upcoming(config.jobs, now, 3000)  # streamed past the measured rows
        return list(
            listing.table(runs, {}, now, UTC, jobs=config.jobs, stream=True, outcomes=outcomes)
        )

    lines = table(outcomes)
    assert lines[0].split()[:7] == ["NEXT", "(UTC)", "LEFT", "LAST", "LAST", "OUTCOME", "JOB"]
    start = lines[0].index("JOB")
    by_job = {line[start:].split()[0]: line for line in lines[1:3001]}
    outcome = lines[0].index("LAST OUTCOME")
    assert by_job["daily"][outcome:start].rstrip() == "failed, dead-lettered"
    assert by_job["quarter"][outcome:start].rstrip() == "-"  # no event of it read
    for line in lines[1:3001]:  # every streamed row lines up, the widest outcome included
        assert line[start - 2 : start] == "  " and line[start] != " ", line
    assert "OUTCOME" not in table(None)[0]
    records = listing.json_chunks(listing.upcoming(config.jobs, now), {}, outcomes)
    assert [r.get("last_outcome") for r in json.loads("".join(records))] == [
        "succeeded", None, "failed, dead-lettered"
    ]  # fmt: skip
    plain = listing.json_chunks(listing.upcoming(config.jobs, now), {})
    assert all("last_outcome" not in r for r in json.loads("".join(plain)))


def test_list_memory_stays_flat_however_many_runs_are_asked_for(busy: Path) -> None:
    config = read_config(busy, {})
    now = datetime(2026, 6, 1, tzinfo=UTC)

    def peak(rows: int) -> int:
        tracemalloc.start()
        try:
            runs = listing.upcoming(config.jobs, now, count=100_000_000)
            lines = listing.table(runs, {}, now, UTC, jobs=config.jobs, stream=True)
            for _, _ in zip(range(rows), lines, strict=False):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(20_000)
    # A list of 20,000 rows would take several MB; streamed, ten times the rows is the same peak.
    assert large < small * 1.2 + 50_000, (small, large)
    assert large < 2_000_000, large


def test_list_count_of_a_hundred_million_runs_in_a_small_address_space(busy: Path) -> None:
    # 256 MB of address space: the old list of rows ran out of it after about 300,000 rows.
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2**28, 2**28)); "
        "from beatd.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "list", "-c", str(busy), "--count", "100000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    cap = f"{listing.MAX_ROWS:,}"
    assert done.stderr == f"beatd list: showing the first {cap} runs, not 100,000,000\n"


# --- the end of the calendar ---------------------------------------------------------------------


@pytest.mark.parametrize("extra", [["--until", "1h"], [], ["--count", "5"], ["--json"]])
def test_list_at_the_end_of_the_calendar_shows_what_is_left_without_a_traceback(
    busy: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    code, out, err = run(capsys, "list", "-c", str(busy), "--now", "9999-12-31T23:59:59", *extra)
    assert (code, err) == (0, "")
    if "--json" in extra:
        assert [r["at"] for r in json.loads(out)] == [None, None, None]
    else:
        assert footer(out)[0].endswith("listed.")


def test_list_now_outside_the_calendar_in_utc_is_one_line_and_exit_1(
    busy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", "-c", str(busy), "--now", "9999-12-31T23:59:59-05:00")
    assert (code, out) == (1, "")
    assert err == "beatd: --now 9999-12-31T23:59:59-05:00: outside years 1-9999 in UTC\n"


def test_list_of_a_yearly_job_in_its_last_year_shows_no_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, f"state: {tmp_path / 's.db'}\njobs:\n  y: {{cron: '@yearly', task: t}}\n"
    )
    code, out, err = run(capsys, "list", "-c", str(path), "--now", "9999-06-01", "--count", "3")
    assert (code, err) == (0, "")
    assert rows(out) == [["NEXT (UTC)", "LEFT", "LAST", "JOB", "SCHEDULE", "TASK"]]


def test_jobs_sharing_a_schedule_each_get_their_own_row_and_the_earliest_comes_first(
    tmp_path: Path,
) -> None:
    # One next run is worked out per shared schedule object; every job still gets its row,
    # its name, and the schedule's DST note, in time order (then by name).
    path = tmp_path / "shared.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            timezone: Europe/Berlin
            jobs:
              c: {cron: "30 2 * * *", task: t}
              a: {cron: "30 2 * * *", task: t}
              early: {every: 1m, task: t}
              b: {cron: "30 2 * * *", task: t}
            """
        ),
        encoding="utf-8",
    )
    config = read_config(path, {"HOME": str(tmp_path)})
    assert config.jobs[0].schedule is config.jobs[1].schedule
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    runs = list(listing.upcoming(config.jobs, now))
    assert [run.job.name for run in runs] == ["early", "a", "b", "c"]
    assert len({run.at for run in runs[1:]}) == 1
    assert all(run.note.startswith("DST: 02:30 skipped") for run in runs[1:])


def test_texts_rows_share_are_each_rows_own_in_any_order_and_zone(tmp_path: Path) -> None:
    # The table works out NEXT and LEFT once per instant and zone, LAST once per last slot and
    # zone, and SCHEDULE once per schedule object as written (the JSON its times likewise):
    # every row still reads as if its cells were worked out for it alone, whatever the order
    # of the runs.
    path = write(
        tmp_path,
        """
        timezone: UTC
        jobs:
          berlin: {every: 1h, timezone: Europe/Berlin, task: t}
          kolkata: {every: 60m, timezone: Asia/Kolkata, task: t}
          hourly: {cron: "0 * * * *", timezone: Europe/Berlin, task: t}
          late: {cron: "H * * * *", task: t, jitter: 5m}
          once: {at: "2026-06-01T09:00:00Z", task: t}
          jittered-once: {at: "2026-06-01T09:00:00Z", task: t, jitter: 5m}
        """,
    )
    config = read_config(path, {"HOME": str(tmp_path)})
    by_name = {job.name: job for job in config.jobs}
    assert by_name["berlin"].schedule is by_name["kolkata"].schedule  # `1h` and `60m`
    now = datetime(2026, 6, 1, 8, 0, 30, tzinfo=UTC)
    last = datetime(2026, 6, 1, 8, tzinfo=UTC)
    states = {name: JobState(name, "f", cursor=last, last_slot=last) for name in by_name}
    runs = list(listing.upcoming(config.jobs, now))
    times = {run.job.name: run.at for run in runs if run.at is not None}
    assert len(times) == len(runs)
    for order in (runs, runs[::-1]):
        for zone in (None, UTC):
            lines = list(listing.table(order, states, now, zone))
            for cells, run in zip(rows("\n".join(lines))[1:], order, strict=True):
                job, at, place = run.job, times[run.job.name], zone or run.job.timezone
                assert cells[:5] == [
                    calendar.wall(at, place),
                    format_left(at - now),
                    calendar.wall(last, place),
                    job.name,
                    listing.schedule_words(job),
                ]
        records = json.loads("".join(listing.json_chunks(order, states)))
        assert [(r["job"], r["at"], r["local"], r["last"]) for r in records] == [
            (
                run.job.name,
                iso_utc(times[run.job.name]),
                calendar.in_zone(times[run.job.name], run.job.timezone).isoformat(),
                iso_utc(last),
            )
            for run in order
        ]


def test_zones_equal_as_tzinfos_but_named_apart_keep_their_names(tmp_path: Path) -> None:
    # timezone(0, "GMT") == UTC, yet wall() shows their names: shared texts are per zone object.
    path = write(tmp_path, "jobs:\n  a: {every: 1h, task: t}\n  b: {every: 1h, task: t}\n")
    a, b = read_config(path, {"HOME": str(tmp_path)}).jobs
    gmt = timezone(timedelta(0), "GMT")
    b = b._replace(timezone=gmt)
    now = datetime(2026, 6, 1, 8, 0, 30, tzinfo=UTC)
    last = datetime(2026, 6, 1, 8, tzinfo=UTC)
    states = {name: JobState(name, "f", cursor=last, last_slot=last) for name in ("a", "b")}
    lines = list(listing.table(listing.upcoming([a, b], now), states, now, None))
    assert [(cells[0][-3:], cells[2][-3:]) for cells in rows("\n".join(lines))[1:]] == [
        ("UTC", "UTC"),
        ("GMT", "GMT"),
    ]
