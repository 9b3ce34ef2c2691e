"""`beatd import-crontab`: a crontab becomes a schedule file whose runs are the ones cron makes
(cronsim, the oracle, over a year) and a worker file that runs each line through the shell."""

from __future__ import annotations

import itertools
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from cronsim import CronSim

from beatd import cli
from beatd.compat import crontab_import
from beatd.core import listing
from beatd.core.config import Config, parse_config

VARIED = r"""# m h  dom mon dow   command
SHELL=/bin/bash
PATH=/usr/local/bin:/usr/bin:/bin
MAILTO=ops@example.com
*/15 * * * * /usr/local/bin/poll --quiet
5 4 * * sun /usr/local/bin/backup.sh --full
0 9-17/2 * * mon-fri cd /srv/app && ./bin/report
30 2 1,15 * * nice -n 10 /usr/bin/vacuumdb --all
0 0 1 jan,jul * /usr/local/bin/rotate
@daily /usr/local/bin/backup.sh --incremental
@hourly test -x /usr/sbin/anacron || run-parts --report /etc/cron.hourly
45 23 * * 7 date +\%F > /tmp/last-sunday
CRON_TZ=America/New_York
30 1 * * * /usr/local/bin/nightly
0 */6 * 2-11 1-5 /usr/local/bin/quarterly
@weekly /usr/local/bin/weekly
CRON_TZ="Asia/Kolkata"
TZ=Asia/Kolkata
15 10 32 * * /usr/local/bin/never-valid
0 12 29 2 * /usr/local/bin/leap-day
"""


# crontab(5)'s words for them; cronsim takes only the five fields.
MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0"}


def convert(
    text: str, zone: str = "Europe/Berlin", system: bool = False, path: str = "crontab"
) -> tuple[crontab_import.Conversion, Config, Config]:
    out = crontab_import.Conversion()
    crontab_import.parse(text, path, zone, system=system, out=out)
    schedule, worker = crontab_import.render(out, path, zone)
    return out, parse_config(schedule, "beatd.yaml", {}), parse_config(worker, "worker.yaml", {})


def test_every_line_fires_when_cron_fires_it_over_a_year() -> None:
    out, config, _ = convert(VARIED)
    assert [p.split(": ", 1)[0] for p in out.problems] == ["crontab:19"]  # day 32
    assert len(config.jobs) == len(out.entries) == 12
    # A year with both DST changes in each zone that has them, and 29 February 2028.
    start = datetime(2027, 7, 1, tzinfo=UTC)
    end = start + timedelta(days=366)
    for job, entry in zip(config.jobs, out.entries, strict=True):
        zone = ZoneInfo(entry.zone)
        expression = MACROS.get(entry.expression, entry.expression)
        oracle = CronSim(expression, start.astimezone(zone))
        expected = [t.astimezone(UTC) for t in itertools.takewhile(lambda t: t <= end, oracle)]
        runs = listing.upcoming([job], start, until=end)
        assert [run.at for run in runs] == expected, (job.name, entry.line)
        assert expected, entry.line


def test_cron_tz_sets_the_zone_of_the_lines_after_it() -> None:
    _, config, _ = convert(VARIED)
    zones = {job.name: str(job.timezone) for job in config.jobs}
    assert str(config.timezone) == "Europe/Berlin"
    assert zones["poll"] == "Europe/Berlin"
    assert zones["nightly"] == zones["weekly"] == "America/New_York"
    assert zones["leap-day"] == "Asia/Kolkata"


def test_each_task_runs_its_line_through_the_crontabs_shell_with_its_environment() -> None:
    _, config, worker = convert(VARIED)
    report = worker.tasks["crontab.report"]
    assert report.command == ("/bin/bash", "-c", "cd /srv/app && ./bin/report")
    assert report.env == {"PATH": "/usr/local/bin:/usr/bin:/bin"}  # SHELL, MAILTO: not env
    assert report.user is None
    # \% is a literal % for the shell, as cron hands it over.
    assert worker.tasks["crontab.date"].command[2] == "date +%F > /tmp/last-sunday"
    assert worker.tasks["crontab.leap-day"].env["TZ"] == "Asia/Kolkata"
    assert {job.task for job in config.jobs} == set(worker.tasks)
    assert worker.worker.bindings == ("crontab.#",)


def test_job_names_come_from_the_program_and_are_unique() -> None:
    _, config, _ = convert(VARIED)
    assert [job.name for job in config.jobs] == [
        "poll",
        "backup.sh",
        "report",
        "vacuumdb",
        "rotate",
        "backup.sh-2",
        "cron.hourly",
        "date",
        "nightly",
        "quarterly",
        "weekly",
        "leap-day",
    ]


def test_system_crontab_lines_keep_their_user() -> None:
    text = (
        "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n"
        "5 3 * * * www-data php /srv/cron.php\n"
    )
    out, _, worker = convert(text, system=True, path="/etc/crontab")
    assert out.problems == []
    assert worker.tasks["crontab.cron.hourly"].user == "root"
    assert worker.tasks["crontab.php"].user == "www-data"
    assert worker.tasks["crontab.php"].command == ("/bin/sh", "-c", "php /srv/cron.php")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0 5 * * * mail -s hi root%body", "crontab:2: an unescaped % makes the rest"),
        ("@reboot /usr/local/bin/start", "crontab:2: @reboot runs when cron starts"),
        ("61 * * * * /bin/true", "crontab:2: '61 * * * *': minute"),
        ("* * * * *", "crontab:2: '* * * * *' is not five time fields and a command"),
        ("@fortnightly /bin/true", "crontab:2: '@fortnightly'"),
    ],
)
def test_a_line_that_cannot_be_converted_names_file_and_line(line: str, reason: str) -> None:
    out, config, _ = convert(f"@daily /bin/true\n{line}\n")
    [problem] = out.problems
    assert problem.startswith(reason), problem
    assert [job.name for job in config.jobs] == ["true"]


def test_a_system_line_without_a_user_is_refused() -> None:
    out, _, _ = convert("@daily /bin/true\n", system=True)
    assert out.problems == [
        "crontab:1: a system crontab line needs a user field before the command"
    ]


# --- the command ----------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "crontab") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_output_dir_gets_two_files_that_beatd_check_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "MAILTO=root\n*/5 * * * * /usr/bin/poll\n")
    target = tmp_path / "out"
    target.mkdir()
    code = cli.main(["import-crontab", str(source), "--timezone", "UTC", "-o", str(target)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "note: " in err and "MAILTO=root" in err
    for name in ("beatd.yaml", "worker.yaml"):
        assert cli.main(["check", "-c", str(target / name)]) == 0
        assert "OK" in capsys.readouterr().out
    assert cli.main(["import-crontab", str(source), "-o", str(target)]) == 1
    assert "exists; not overwriting it" in capsys.readouterr().err


def test_printed_output_splits_at_the_marked_line_into_two_valid_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "0 3 * * * /usr/bin/backup\n@reboot /bin/start\n")
    code = cli.main(["import-crontab", str(source), "--timezone", "Europe/Berlin"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.splitlines()[-2:] == [
        f"not converted: {source}:2: @reboot runs when cron starts, which is not a schedule: run "
        "it from a systemd unit (WantedBy=multi-user.target) instead",
        "beatd import-crontab: 1 converted, 1 not",
    ]
    schedule, worker = out.split(cli.CRONTAB_SPLIT + "\n")
    assert yaml.safe_load(schedule)["timezone"] == "Europe/Berlin"
    assert parse_config(schedule, "s.yaml", {}).jobs[0].spec == "0 3 * * *"
    assert parse_config(worker, "w.yaml", {}).tasks["crontab.backup"].command == (
        "/bin/sh",
        "-c",
        "/usr/bin/backup",
    )


def test_without_a_file_it_reads_crontab_l(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "crontab"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -l ] && echo '@hourly /usr/bin/tick'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cli.main(["import-crontab", "--timezone", "UTC"]) == 0
    assert 'task: "crontab.tick"' in capsys.readouterr().out
    fake.write_text("#!/bin/sh\necho 'no crontab for nobody' >&2; exit 1\n")
    assert cli.main(["import-crontab", "--timezone", "UTC"]) == 1
    assert capsys.readouterr().err == "beatd: crontab -l: no crontab for nobody\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/nonexistent/crontab"], "beatd: /nonexistent/crontab: No such file or directory"),
        (["--timezone", "Mars/Olympus"], "beatd: --timezone: "),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["import-crontab", *argv]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(expected)
