"""The schedule file: every key of DESIGN.md's YAML section, and every kind of bad input."""

from __future__ import annotations

import gc
import logging
import os
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from beatd.core import config as config_module
from beatd.core.config import (
    DEFAULT_BROKER_URL,
    Config,
    Job,
    MessageFormat,
    Misfire,
    parse_config,
    read_config,
)
from beatd.core.cron import CronSchedule
from beatd.core.errors import ConfigError
from beatd.core.schedules import At, Cron, Interval

EXAMPLE = Path(__file__).parent.parent / "config" / "beatd.yaml"
HOME = {"HOME": "/home/op"}


def load(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), "beatd.yaml", HOME if env is None else env)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text, env)
    return [str(p) for p in caught.value.problems]


def job(config: Config, name: str) -> Job:
    found = config.job(name)
    assert found is not None
    return found


# --- the shipped example ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Config:
    return read_config(EXAMPLE, HOME)


def test_the_example_file_has_its_six_jobs_in_file_order(example: Config) -> None:
    assert [j.name for j in example.jobs] == [
        "heartbeat",
        "cleanup-sessions",
        "nightly-report",
        "spread-out",
        "new-year",
        "paused",
    ]
    assert example.path == str(EXAMPLE)


def test_the_example_top_level_zone_broker_and_state(example: Config) -> None:
    assert example.timezone == ZoneInfo("Europe/Berlin")
    assert example.broker.urls == ("amqp://guest:guest@localhost:5672/%2F",)
    assert example.broker.exchange == "beatd"
    assert example.broker.exchange_type == "topic"
    assert example.state == Path("/home/op/.local/state/beatd/state.db")
    assert not example.has_worker_section


def test_the_example_interval_job(example: Config) -> None:
    heartbeat = job(example, "heartbeat")
    assert heartbeat.kind == "every"
    assert heartbeat.spec == "30s"
    assert heartbeat.schedule == Interval(timedelta(seconds=30))
    assert heartbeat.task == "monitoring.ping"
    assert heartbeat.routing_key is None  # the task name, when publishing
    assert heartbeat.misfire is Misfire.ONCE  # from defaults
    assert heartbeat.grace == timedelta(seconds=60)


def test_the_example_cron_job_with_args_and_kwargs(example: Config) -> None:
    cleanup = job(example, "cleanup-sessions")
    assert cleanup.kind == "cron"
    assert cleanup.spec == "*/15 * * * *"
    assert isinstance(cleanup.schedule, Cron)
    assert cleanup.schedule.cron.zone == ZoneInfo("Europe/Berlin")  # the top-level zone
    assert cleanup.args == (30,)
    assert dict(cleanup.kwargs) == {"dry_run": False}


def test_the_example_job_with_every_option(example: Config) -> None:
    nightly = job(example, "nightly-report")
    assert nightly.timezone == ZoneInfo("America/New_York")
    assert isinstance(nightly.schedule, Cron)
    assert nightly.schedule.cron.zone == ZoneInfo("America/New_York")
    assert nightly.routing_key == "reports.nightly"
    assert nightly.priority == 5
    assert nightly.expires == timedelta(minutes=10)
    assert nightly.jitter == timedelta(minutes=5)
    assert timedelta(0) <= nightly.schedule.offset < timedelta(minutes=5)
    assert nightly.misfire is Misfire.SKIP  # the job beats defaults
    assert nightly.format is MessageFormat.BEATD


def test_the_example_hashed_one_off_and_disabled_jobs(example: Config) -> None:
    spread = job(example, "spread-out")
    assert spread.expression is not None
    assert len(spread.expression.minutes) == 1
    assert spread.expression.hours[0] in range(1, 6)
    new_year = job(example, "new-year")
    assert new_year.schedule == At(datetime(2026, 12, 31, 23, tzinfo=UTC))
    paused = job(example, "paused")
    assert paused.enabled is False
    assert all(j.enabled for j in example.jobs if j.name != "paused")


def test_job_records_are_immutable(example: Config) -> None:
    with pytest.raises(AttributeError):
        job(example, "heartbeat").task = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        job(example, "cleanup-sessions").kwargs["x"] = 1  # type: ignore[index]


def test_each_job_knows_its_line(example: Config) -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for j in example.jobs:
        assert lines[j.line - 1].strip() == f"{j.name}:"


# --- every key --------------------------------------------------------------------------------


def test_every_job_option_parses_into_its_typed_value() -> None:
    config = load("""
        jobs:
          full:
            cron: "0 3 * * mon"
            task: app.full
            args: [1, "two", 3.5, null, true, [4], {five: 5}]
            kwargs: {a: 1, nested: {b: [2]}}
            timezone: Asia/Tokyo
            routing_key: custom.key
            priority: 0
            expires: 1h30m
            jitter: 500ms
            misfire: all
            grace: 2m
            enabled: true
            format: celery
            queue: celery-queue
            exchange: celery-exchange
    """)
    full = job(config, "full")
    assert full.task == "app.full"
    assert full.args == (1, "two", 3.5, None, True, [4], {"five": 5})
    assert dict(full.kwargs) == {"a": 1, "nested": {"b": [2]}}
    assert type(full.args[6]) is dict  # plain containers, no line bookkeeping in messages
    assert full.timezone == ZoneInfo("Asia/Tokyo")
    assert full.routing_key == "custom.key"
    assert full.priority == 0
    assert full.expires == timedelta(hours=1, minutes=30)
    assert full.jitter == timedelta(milliseconds=500)
    assert full.misfire is Misfire.ALL
    assert full.grace == timedelta(minutes=2)
    assert full.format is MessageFormat.CELERY
    assert full.queue == "celery-queue"
    assert full.exchange == "celery-exchange"


def test_unset_job_options_take_their_defaults() -> None:
    plain = job(load("jobs:\n  p:\n    every: 1h\n    task: t\n"), "p")
    assert plain.args == ()
    assert dict(plain.kwargs) == {}
    assert plain.timezone is UTC
    assert (plain.routing_key, plain.priority, plain.expires) == (None, None, None)
    assert plain.jitter == timedelta(0)
    assert plain.misfire is Misfire.ONCE
    assert plain.grace == timedelta(seconds=60)
    assert plain.enabled is True
    assert plain.format is MessageFormat.BEATD


@pytest.mark.parametrize(
    ("every", "delta"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("45", timedelta(seconds=45)),  # a bare YAML number: seconds
    ],
)
def test_every_accepts_the_documented_durations(every: str, delta: timedelta) -> None:
    config = load(f"jobs:\n  j:\n    every: {every}\n    task: t\n")
    assert job(config, "j").schedule == Interval(delta)


@pytest.mark.parametrize(
    ("cron", "fixed"),
    [
        ("'*/15 * * * *'", False),
        ("'30 2 * * *'", True),
        ("'0 30 2 * * *'", False),  # six fields: seconds first, no Debian DST fixup
        ("'@hourly'", False),
        ("'@daily'", True),
        ("'H H(1-5) * * *'", True),
    ],
)
def test_cron_accepts_five_six_fields_macros_and_h(cron: str, fixed: bool) -> None:
    expression = job(load(f"jobs:\n  j:\n    cron: {cron}\n    task: t\n"), "j").expression
    assert expression is not None
    assert expression.fixed_time is fixed


def test_the_spec_is_the_schedule_as_written_with_spaces_tidied() -> None:
    config = load("""
        jobs:
          c: {cron: "*/5   *  * * *", task: t}
          e: {every: 1h30m, task: t}
          a: {at: 2027-01-01T00:00:00+01:00, task: t}
    """)
    assert [j.spec for j in config.jobs] == ["*/5 * * * *", "1h30m", "2027-01-01T00:00:00+01:00"]


def test_at_takes_an_offset_or_the_jobs_zone_for_a_naive_time() -> None:
    config = load("""
        timezone: America/New_York
        jobs:
          with-offset: {at: "2027-01-01T00:00:00+01:00", task: t}
          naive: {at: "2026-07-01T09:00:00", task: t}
          naive-in-job-zone: {at: "2026-07-01T09:00:00", task: t, timezone: Asia/Tokyo}
          yaml-timestamp: {at: 2026-07-01 09:00:00Z, task: t}
    """)
    assert job(config, "with-offset").schedule == At(datetime(2026, 12, 31, 23, tzinfo=UTC))
    assert job(config, "naive").schedule == At(datetime(2026, 7, 1, 13, tzinfo=UTC))
    assert job(config, "naive-in-job-zone").schedule == At(datetime(2026, 7, 1, 0, tzinfo=UTC))
    assert job(config, "yaml-timestamp").schedule == At(datetime(2026, 7, 1, 9, tzinfo=UTC))


def test_an_at_time_the_clocks_skip_is_an_error() -> None:
    assert problems("""
        timezone: America/New_York
        jobs:
          gap: {at: "2026-03-08T02:30:00", task: t}
    """) == [
        "beatd.yaml:4: job 'gap': at: 2026-03-08T02:30:00 does not exist in America/New_York"
        " (the clocks skip it)"
    ]


def test_defaults_are_merged_under_every_job_and_a_job_overrides_them() -> None:
    config = load("""
        defaults:
          misfire: skip
          grace: 5m
          priority: 3
          expires: 1m
          routing_key: shared
          enabled: false
        jobs:
          inherits: {every: 1h, task: t}
          overrides: {every: 1h, task: t, misfire: all, priority: 9, enabled: true}
    """)
    inherits, overrides = job(config, "inherits"), job(config, "overrides")
    assert inherits.misfire is Misfire.SKIP
    assert inherits.grace == overrides.grace == timedelta(minutes=5)
    assert inherits.priority == 3
    assert inherits.expires == overrides.expires == timedelta(minutes=1)
    assert inherits.routing_key == overrides.routing_key == "shared"
    assert inherits.enabled is False
    assert overrides.misfire is Misfire.ALL
    assert overrides.priority == 9
    assert overrides.enabled is True


def test_a_job_zone_beats_the_defaults_zone_beats_the_top_level_zone_beats_utc() -> None:
    def zones(text: str) -> list[object]:
        return [j.timezone for j in load(text).jobs]

    jobs = """
        jobs:
          own: {cron: "0 0 * * *", task: t, timezone: Asia/Tokyo}
          inherited: {cron: "0 0 * * *", task: t}
    """
    assert zones(jobs) == [ZoneInfo("Asia/Tokyo"), UTC]
    assert zones("timezone: Europe/Berlin\n" + textwrap.dedent(jobs)) == [
        ZoneInfo("Asia/Tokyo"),
        ZoneInfo("Europe/Berlin"),
    ]
    assert zones(
        "timezone: Europe/Berlin\ndefaults:\n  timezone: America/Havana\n" + textwrap.dedent(jobs)
    ) == [ZoneInfo("Asia/Tokyo"), ZoneInfo("America/Havana")]


def test_a_cron_job_is_evaluated_in_its_zone() -> None:
    config = load('jobs:\n  j: {cron: "0 9 * * *", task: t, timezone: Asia/Tokyo}\n')
    schedule = job(config, "j").schedule
    assert schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2026, 1, 2, 0, tzinfo=UTC
    )
    assert isinstance(schedule, Cron)
    assert schedule.cron == CronSchedule(schedule.cron.expr, ZoneInfo("Asia/Tokyo"))


def test_utc_by_any_name_is_the_fast_utc() -> None:
    for name in ("UTC", "Etc/UTC"):
        assert load(f"timezone: {name}\n").timezone is UTC


def test_the_fingerprint_changes_with_the_schedule_zone_and_jitter_only() -> None:
    base = {"cron": '"0 3 * * *"', "task": "t"}

    def fingerprint(**changes: str) -> str:
        fields = {**base, **changes}
        body = "".join(f"    {k}: {v}\n" for k, v in fields.items())
        return job(load(f"jobs:\n  j:\n{body}"), "j").fingerprint

    same = fingerprint()
    assert fingerprint(task="other", priority="4", misfire="all") == same
    assert fingerprint(cron='"0   3 * * *"') == same
    assert fingerprint(cron='"0 4 * * *"') != same
    assert fingerprint(timezone="Asia/Tokyo") != same
    assert fingerprint(jitter="5m") != same


def test_an_empty_jobs_section_is_a_valid_file_with_no_jobs() -> None:
    assert load("jobs: {}\n").jobs == ()
    assert load("jobs:\n").jobs == ()
    assert load("timezone: UTC\n").jobs == ()


# --- broker, secrets and state ----------------------------------------------------------------


def test_the_broker_section_parses_every_key() -> None:
    config = load("""
        broker:
          url: [amqp://a:pw@node1:5672/%2F, amqps://node2/vhost]
          exchange: jobs.x
          exchange_type: direct
          heartbeat: 10s
    """)
    assert config.broker.urls == ("amqp://a:pw@node1:5672/%2F", "amqps://node2/vhost")
    assert config.broker.exchange == "jobs.x"
    assert config.broker.exchange_type == "direct"
    assert config.broker.heartbeat == timedelta(seconds=10)


def test_the_broker_defaults_to_a_local_rabbitmq() -> None:
    broker = load("jobs: {}\n").broker
    assert broker.urls == (DEFAULT_BROKER_URL,)
    assert (broker.exchange, broker.exchange_type) == ("beatd", "topic")


def test_beatd_broker_url_overrides_the_file() -> None:
    text = "broker:\n  url: amqp://file-host/\n"
    env = {**HOME, "BEATD_BROKER_URL": "amqp://u:secret@env-host/ amqp://u:secret@env-2/"}
    assert load(text, env).broker.urls == ("amqp://u:secret@env-host/", "amqp://u:secret@env-2/")
    assert load("jobs: {}\n", env).broker.urls[0] == "amqp://u:secret@env-host/"
    assert load(text, {**HOME, "BEATD_BROKER_URL": ""}).broker.urls == ("amqp://file-host/",)


def test_a_bad_beatd_broker_url_is_reported_without_its_password() -> None:
    env = {**HOME, "BEATD_BROKER_URL": "http://u:secret@host/"}
    assert problems("jobs: {}\n", env) == [
        "beatd.yaml: BEATD_BROKER_URL: 'http://u:***@host/' is not an amqp:// or amqps:// URL"
    ]


def test_redacted_urls_hide_passwords(tmp_path: Path) -> None:
    config = load("""
        broker:
          url: ["amqp://u:hunter2@h:5672/v", "amqp://u:pw@[::1]/", "amqp://h/"]
    """)
    assert config.broker.redacted_urls() == (
        "amqp://u:***@h:5672/v",
        "amqp://u:***@[::1]/",
        "amqp://h/",
    )


def test_the_password_file_is_read_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "rabbit.pw"
    secret.write_text("s3cr3t-Pa55\n", encoding="utf-8")
    path = tmp_path / "beatd.yaml"
    path.write_text(f"broker:\n  url: amqp://beatd@host/\n  password_file: {secret}\n")
    config = read_config(path, HOME)
    assert config.broker.password == "s3cr3t-Pa55"  # stripped of the newline
    assert "s3cr3t" not in repr(config.broker)
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in " ".join(config.broker.redacted_urls())


def test_an_unreadable_password_file_is_a_problem_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_text("broker:\n  url: amqp://h/\n  password_file: /nonexistent/pw\n")
    with pytest.raises(ConfigError) as caught:
        read_config(path, HOME)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3: broker: password_file: /nonexistent/pw: no such file"
    ]


def test_parsing_text_alone_never_reads_the_password_file() -> None:
    config = load("broker:\n  password_file: /nonexistent/pw\n")
    assert config.broker.password is None


@pytest.mark.parametrize(
    ("env", "path"),
    [
        ({"STATE_DIRECTORY": "/var/lib/beatd", **HOME}, "/var/lib/beatd/state.db"),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a/state.db"),
        ({"XDG_STATE_HOME": "/xdg", **HOME}, "/xdg/beatd/state.db"),
        ({"STATE_DIRECTORY": "/sd", "XDG_STATE_HOME": "/xdg"}, "/sd/state.db"),
        (HOME, "/home/op/.local/state/beatd/state.db"),
        ({"XDG_STATE_HOME": "", **HOME}, "/home/op/.local/state/beatd/state.db"),
    ],
)
def test_the_state_path_follows_systemd_then_xdg_then_home(env: dict[str, str], path: str) -> None:
    assert load("jobs: {}\n", env).state == Path(path)


def test_a_state_key_in_the_file_wins_over_the_environment() -> None:
    config = load("state: /srv/beatd.db\n", {"STATE_DIRECTORY": "/sd", **HOME})
    assert config.state == Path("/srv/beatd.db")


# --- worker and tasks -------------------------------------------------------------------------


def test_the_worker_and_tasks_sections_parse() -> None:
    config = load("""
        worker:
          queue: beatd.tasks
          queue_type: quorum
          bindings: ["reports.#", "sessions.*"]
          concurrency: 8
        tasks:
          sessions.cleanup:
            command: ["/usr/local/bin/cleanup", "--days"]
            timeout: 5m
            env: {LANG: C, DEBUG: true, N: 3}
            retries: 2
          reports.nightly:
            call: myapp.reports:nightly
    """)
    assert config.has_worker_section
    assert config.worker.queue == "beatd.tasks"
    assert config.worker.queue_type == "quorum"
    assert config.worker.bindings == ("reports.#", "sessions.*")
    assert config.worker.concurrency == 8
    cleanup = config.tasks["sessions.cleanup"]
    assert cleanup.command == ("/usr/local/bin/cleanup", "--days")
    assert cleanup.call is None
    assert cleanup.timeout == timedelta(minutes=5)
    assert dict(cleanup.env) == {"LANG": "C", "DEBUG": "true", "N": "3"}
    assert cleanup.retries == 2
    nightly = config.tasks["reports.nightly"]
    assert nightly.call == "myapp.reports:nightly"
    assert nightly.command is None


def test_worker_defaults() -> None:
    worker = load("tasks: {}\n").worker
    assert (worker.queue, worker.queue_type, worker.bindings) == ("beatd.tasks", "classic", ("#",))
    assert worker.concurrency == 4


def test_task_errors_name_the_task_and_field() -> None:
    assert problems("""
        tasks:
          shell:
            command: "rm -rf /tmp/x"
          both:
            command: [a]
            call: m:f
          neither:
            timeout: 5m
          bad-call:
            call: not a ref
    """) == [
        "beatd.yaml:4: task 'shell': command: must be an argv list like [/usr/bin/cleanup,"
        " --days], never a shell string",
        "beatd.yaml:5: task 'both': give exactly one of command or call",
        "beatd.yaml:8: task 'neither': give exactly one of command or call",
        "beatd.yaml:11: task 'bad-call': call: 'not a ref' is not module:function"
        " (e.g. myapp.reports:nightly)",
    ]


# --- errors: one line each, naming file, line, job and field ----------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                priorty: 5
            """,
            "beatd.yaml:6: job 'report': unknown key 'priorty' (did you mean 'priority'?)",
            id="unknown job key",
        ),
        pytest.param(
            "timezon: UTC\n",
            "beatd.yaml:1: unknown key 'timezon' (did you mean 'timezone'?)",
            id="unknown top-level key",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                colour: red
            """,
            "beatd.yaml:6: job 'report': unknown key 'colour' (allowed: cron, every, at, task,"
            " args, kwargs, timezone, routing_key, priority, expires, jitter, misfire, grace,"
            " enabled, format, queue, exchange)",
            id="unknown key without a close match",
        ),
        pytest.param(
            "broker:\n  urls: amqp://h/\n",
            "beatd.yaml:2: broker: unknown key 'urls' (did you mean 'url'?)",
            id="unknown broker key",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
              other:
                every: 1m
                task: t
              report:
                every: 2h
                task: t
            """,
            "beatd.yaml:9: job 'report': defined twice (first at line 3)",
            id="duplicate job",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: "0 * * * *"
                every: 1h
                task: t
            """,
            "beatd.yaml:5: job 'report': cron and every given; a job has exactly one schedule",
            id="two schedule kinds",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                cron: "0 * * * *"
                task: t
            """,
            "beatd.yaml:5: job 'report': cron and every given; a job has exactly one schedule",
            id="two schedule kinds, other order",
        ),
        pytest.param(
            """
            jobs:
              report:
                task: t
            """,
            "beatd.yaml:3: job 'report': no schedule: give one of cron, every or at",
            id="no schedule",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: "61 * * * *"
                task: t
            """,
            "beatd.yaml:4: job 'report': cron: minute 61 out of range 0-59",
            id="cron out of range",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: "*/0 * * * *"
                task: t
            """,
            "beatd.yaml:4: job 'report': cron: minute: step must be positive, got 0",
            id="cron step zero",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: "0 0 30 2 *"
                task: t
            """,
            "beatd.yaml:4: job 'report': cron: never matches: no month in '2' has day 30",
            id="cron never matches",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: 5
                task: t
            """,
            "beatd.yaml:4: job 'report': cron: must be a string like '*/15 * * * *', got int 5",
            id="cron not a string",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: "@reboot"
                task: t
            """,
            "beatd.yaml:4: job 'report': cron: @reboot is not a schedule beatd can keep;"
            " use `at:` for a single run",
            id="reboot",
        ),
        pytest.param(
            """
            jobs:
              report:
                cron: "0 * * * *"
                timezone: America/New_Yrok
                task: t
            """,
            "beatd.yaml:5: job 'report': timezone: unknown time zone 'America/New_Yrok'"
            " (did you mean 'America/New_York'?)",
            id="time zone typo",
        ),
        pytest.param(
            "timezone: Mars/Olympus_Mons\n",
            "beatd.yaml:1: timezone: unknown time zone 'Mars/Olympus_Mons'"
            " (an IANA name like Europe/Berlin)",
            id="unknown top-level time zone",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 0s
                task: t
            """,
            "beatd.yaml:4: job 'report': every: '0s' must be positive",
            id="zero duration",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: -5
                task: t
            """,
            "beatd.yaml:4: job 'report': every: -5 must be positive",
            id="negative duration",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: soon
                task: t
            """,
            "beatd.yaml:4: job 'report': every: 'soon' is not a duration"
            " (e.g. 500ms, 30s, 5m, 1h30m, 2d)",
            id="unparseable duration",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                expires: 0
            """,
            "beatd.yaml:6: job 'report': expires: 0 must be positive",
            id="zero expires",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                jitter: -1s
            """,
            "beatd.yaml:6: job 'report': jitter: '-1s' is not a duration"
            " (e.g. 500ms, 30s, 5m, 1h30m, 2d)",
            id="negative jitter",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
            """,
            "beatd.yaml:3: job 'report': task: missing (the name executors run,"
            " e.g. reports.nightly)",
            id="missing task",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: two words
            """,
            "beatd.yaml:5: job 'report': task: 'two words': a task name has no spaces"
            " and at most 255 bytes",
            id="task with a space",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                args: [2026-01-01]
            """,
            "beatd.yaml:6: job 'report': args: at [0] is a date (datetime.date(2026, 1, 1)),"
            " not JSON-serialisable; quote it to pass a string",
            id="args with a YAML date",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                kwargs: {when: 2026-01-01T10:00:00Z}
            """,
            "beatd.yaml:6: job 'report': kwargs: at when is a datetime (datetime.datetime(2026,"
            " 1, 1, 10, 0, tzinfo=datetime.timezone.utc)), not JSON-serialisable;"
            " quote it to pass a string",
            id="kwargs with a YAML timestamp",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                args: [[1, !!set {only}]]
            """,
            "beatd.yaml:6: job 'report': args: at [0][1] is a set ({'only'}),"
            " not JSON-serialisable; quote it to pass a string",
            id="args with a YAML set",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                args: {a: 1}
            """,
            "beatd.yaml:6: job 'report': args: must be a list, got a mapping",
            id="args not a list",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                kwargs: {1: one}
            """,
            "beatd.yaml:6: job 'report': kwargs: key 1 is not a string (JSON keys are strings)",
            id="kwargs key not a string",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                kwargs: {x: .nan}
            """,
            "beatd.yaml:6: job 'report': kwargs: nan at x is not valid in JSON",
            id="kwargs NaN",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                misfire: sometimes
            """,
            "beatd.yaml:6: job 'report': misfire: 'sometimes' is not one of once, skip, all",
            id="bad misfire",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                priority: 256
            """,
            "beatd.yaml:6: job 'report': priority: must be a whole number 0-255, got int 256",
            id="bad priority",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                enabled: maybe
            """,
            "beatd.yaml:6: job 'report': enabled: must be true or false, got str 'maybe'",
            id="bad enabled",
        ),
        pytest.param(
            """
            jobs:
              report:
                every: 1h
                task: t
                queue: q
            """,
            "beatd.yaml:6: job 'report': queue: only used with format: celery",
            id="queue without celery",
        ),
        pytest.param(
            """
            jobs:
              report:
                at: tomorrow
                task: t
            """,
            "beatd.yaml:4: job 'report': at: 'tomorrow' is not an ISO 8601 time like"
            " 2027-01-01T00:00:00+01:00",
            id="bad at",
        ),
        pytest.param(
            """
            jobs:
              "a job":
                every: 1h
                task: t
            """,
            "beatd.yaml:3: job 'a job': a job name is letters, digits and _ . : / -, at most"
            " 200 bytes",
            id="bad job name",
        ),
        pytest.param(
            """
            jobs:
              report:
            """,
            "beatd.yaml:3: job 'report': must be a mapping of keys to values, got nothing",
            id="empty job",
        ),
        pytest.param(
            "jobs:\n  - report\n",
            "beatd.yaml:1: jobs: must be a mapping of job names, got a list",
            id="jobs as a list",
        ),
        pytest.param(
            "defaults:\n  every: 1h\n",
            "beatd.yaml:2: defaults: unknown key 'every' (allowed: timezone, routing_key,"
            " priority, expires, jitter, misfire, grace, enabled, format, queue, exchange)",
            id="schedule in defaults",
        ),
        pytest.param(
            "broker:\n  url: http://h/\n",
            "beatd.yaml:2: broker: url: 'http://h/' is not an amqp:// or amqps:// URL",
            id="not an amqp URL",
        ),
        pytest.param(
            "",
            "beatd.yaml: file is empty (expected broker, jobs, ...)",
            id="empty file",
        ),
        pytest.param(
            "# just a comment\n",
            "beatd.yaml: file is empty (expected broker, jobs, ...)",
            id="only comments",
        ),
        pytest.param(
            "- a\n- b\n",
            "beatd.yaml:1: must be a mapping of keys to values, got a list",
            id="a list, not a mapping",
        ),
        pytest.param(
            "just text\n",
            "beatd.yaml:1: must be a mapping of keys to values, got str 'just text'",
            id="a string, not a mapping",
        ),
        pytest.param(
            "jobs:\n  a: {every: 1h, task: t\n",
            "beatd.yaml:3: not valid YAML: while parsing a flow mapping, did not find expected"
            " ',' or '}'",
            id="invalid YAML",
        ),
        pytest.param(
            "jobs: {}\n---\njobs: {}\n",
            "beatd.yaml:2: not valid YAML: more than one document (remove the '---')",
            id="two documents",
        ),
    ],
)
def test_each_problem_is_one_line_naming_file_line_job_and_field(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_a_file_with_many_problems_reports_all_of_them_at_once() -> None:
    found = problems("""
        timezone: Europe/Berln
        broker:
          exchange_type: fanoutt
        jobs:
          ok:
            every: 1m
            task: fine
          a:
            cron: "61 * * * *"
            task: t
          b:
            every: 0s
          c:
            at: 2027-01-01T00:00:00Z
            every: 1h
            task: t
          d:
            cron: "0 * * * *"
            tsk: t
          ok:
            every: 2m
            task: fine
          e:
            every: 1h
            task: t
            args: [2026-05-01]
    """)
    assert found == [
        "beatd.yaml:2: timezone: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)",
        "beatd.yaml:4: broker: exchange_type: 'fanoutt' is not one of direct, topic, fanout,"
        " headers",
        "beatd.yaml:10: job 'a': cron: minute 61 out of range 0-59",
        "beatd.yaml:12: job 'b': task: missing (the name executors run, e.g. reports.nightly)",
        "beatd.yaml:13: job 'b': every: '0s' must be positive",
        "beatd.yaml:16: job 'c': every and at given; a job has exactly one schedule",
        "beatd.yaml:18: job 'd': task: missing (the name executors run, e.g. reports.nightly)",
        "beatd.yaml:20: job 'd': unknown key 'tsk' (did you mean 'task'?)",
        "beatd.yaml:21: job 'ok': defined twice (first at line 6)",
        "beatd.yaml:27: job 'e': args: at [0] is a date (datetime.date(2026, 5, 1)),"
        " not JSON-serialisable; quote it to pass a string",
    ]


# --- reading files ----------------------------------------------------------------------------


def test_a_missing_file_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config(tmp_path / "nope.yaml", HOME)
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_a_directory_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config(tmp_path, HOME)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a file"


def test_a_file_that_is_not_utf8_text_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ConfigError) as caught:
        read_config(path, HOME)
    assert str(caught.value) == f"{path}:1: not UTF-8 text (byte 0xff)"


def test_a_job_with_two_schedules_also_reports_what_is_wrong_with_each() -> None:
    text = "jobs:\n  j:\n    cron: '61 * * * *'\n    task: t.t\n    every: 0s\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "f.yaml", {})
    assert [str(p) for p in caught.value.problems] == [
        "f.yaml:3: job 'j': cron: minute 61 out of range 0-59",
        "f.yaml:5: job 'j': cron and every given; a job has exactly one schedule",
        "f.yaml:5: job 'j': every: '0s' must be positive",
    ]


# --- hostile and mistaken input (issue 9): one line each, never a traceback -------------------

JOB = "jobs:\n  j:\n    task: a.b\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            JOB + "    at: 2027-02-29T09:00:00\n",
            "beatd.yaml:4: job 'j': at: 2027-02-29T09:00:00 looks like a timestamp but is not"
            " one (day is out of range for month); quote it if it is a string",
            id="unquoted impossible date",
        ),
        pytest.param(
            "jobs: " + "[" * 900 + "]" * 900 + "\n",
            "beatd.yaml:1: not valid YAML here: nested more than 64 deep",
            id="900 nested lists",
        ),
        pytest.param(
            JOB + "    every: 1h\n    priority: " + "9" * 5000 + "\n",
            "beatd.yaml:5: job 'j': priority: a number of 5000 characters (at most 4300)",
            id="5000-digit integer",
        ),
        pytest.param(
            JOB + "    every: 1h\n    kwargs: {n: " + "9" * 5000 + "}\n",
            "beatd.yaml:5: job 'j': kwargs.n: a number of 5000 characters (at most 4300)",
            id="5000-digit integer in kwargs",
        ),
        pytest.param(
            "jobs:\n  ? !!set {a, b}\n  : {}\n",
            "beatd.yaml:2: not valid YAML here: a key must be a scalar, got {",
            id="set as a key",
        ),
        pytest.param(
            JOB + "    every: !!int 1h\n",
            "beatd.yaml:4: job 'j': every: !!int '1h' is not valid",
            id="bad int tag",
        ),
        pytest.param(
            JOB + "    every: !!float soon\n",
            "beatd.yaml:4: job 'j': every: !!float 'soon' is not valid",
            id="bad float tag",
        ),
        pytest.param(
            JOB + "    every: 1h\n    enabled: !!bool maybe\n",
            "beatd.yaml:5: job 'j': enabled: !!bool 'maybe' is not valid",
            id="bad bool tag",
        ),
        pytest.param(
            JOB + "    at: !!timestamp tomorrow\n",
            "beatd.yaml:4: job 'j': at: !!timestamp 'tomorrow' is not valid",
            id="bad timestamp tag",
        ),
        pytest.param(
            JOB + "    at: 0001-01-01T00:00:00+01:00\n",
            "beatd.yaml:4: job 'j': at: 0001-01-01 00:00:00+01:00 is not between the years 1970"
            " and 9000",
            id="at in year 1 with an offset",
        ),
        pytest.param(
            JOB + "    at: '9999-12-31T23:59:59'\n    jitter: 1h\n",
            "beatd.yaml:4: job 'j': at: 9999-12-31T23:59:59 is not between the years 1970 and 9000",
            id="at in year 9999 with jitter",
        ),
        pytest.param(
            JOB + "    at: 9999-12-31\n",
            "beatd.yaml:4: job 'j': at: 9999-12-31 is not between the years 1970 and 9000",
            id="at a date in year 9999",
        ),
        pytest.param(
            'jobs:\n  "evil\\n":\n    task: a.b\n    every: 1h\n',
            "beatd.yaml:2: job 'evil\\n': a job name is letters, digits and _ . : / -, at most"
            " 200 bytes",
            id="job name with a final newline",
        ),
        pytest.param(
            f"jobs:\n  {'é' * 101}:\n    task: a.b\n    every: 1h\n",
            f"beatd.yaml:2: job '{'é' * 101}': a job name is letters, digits and _ . : / -, at"
            " most 200 bytes",
            id="job name of 202 bytes",
        ),
        pytest.param(
            JOB + '    every: 1h\n    routing_key: "a\\x07b"\n',
            "beatd.yaml:5: job 'j': routing_key: 'a\\x07b': a routing key has no control"
            " characters",
            id="control character in a routing key",
        ),
        pytest.param(
            'jobs:\n  j:\n    task: "a\\x00b"\n    every: 1h\n',
            "beatd.yaml:3: job 'j': task: 'a\\x00b': a task name has no control characters",
            id="control character in a task name",
        ),
        pytest.param(
            "jobs:\n  j:\n    task: " + "t" * 256 + "\n    every: 1h\n",
            "beatd.yaml:3: job 'j': task: a task name is 256 bytes in UTF-8; at most 255",
            id="task name over 255 bytes",
        ),
        pytest.param(
            JOB + "    cron: '" + "1," * 600 + "1 * * * *'\n",
            "beatd.yaml:4: job 'j': cron: 1,209 characters is too long (at most 1000)",
            id="cron expression of 1209 characters",
        ),
        pytest.param(  # found by tests/test_config_fuzz.py: float(int) overflowed
            JOB + "    every: 1" + "0" * 309 + "\n",
            "beatd.yaml:4: job 'j': every: 1" + "0" * 309 + " is too long (at most 36500d",
            id="whole number of seconds beyond a float",
        ),
        pytest.param(
            "timezone: UTC\ndefaults: [misfire, skip]\n",
            "beatd.yaml:2: defaults: must be a mapping of keys to values, got a list",
            id="defaults not a mapping",
        ),
        pytest.param(
            "broker:\n  exchange: amq.foo\n",
            "beatd.yaml:2: broker: exchange: 'amq.foo': names starting with amq. are reserved by"
            " RabbitMQ, which refuses to declare them; use another name, or one of amq.direct,"
            " amq.fanout, amq.topic, amq.headers, amq.match",
            id="reserved exchange name",
        ),
        pytest.param(
            "broker:\n  exchange: amq.topic\n  exchange_type: direct\n",
            "beatd.yaml:3: broker: 'amq.topic' is a topic exchange; declaring it as direct is"
            " refused",
            id="standard exchange of another type",
        ),
        pytest.param(
            "broker:\n  exchange: ''\n",
            "beatd.yaml:2: broker: exchange: '' is the default exchange, which cannot be"
            " declared; name one",
            id="default exchange declared",
        ),
        pytest.param(
            JOB + "    every: 1h\n    exchange: amq.fanout\n",
            "beatd.yaml:5: job 'j': exchange: 'amq.fanout' is a fanout exchange; declaring it as"
            " topic is refused",
            id="job exchange of another type",
        ),
        pytest.param(
            JOB + "    every: 1h\n    exchange: " + "x" * 256 + "\n",
            "beatd.yaml:5: job 'j': exchange: an exchange name is 256 bytes in UTF-8; at most 255",
            id="exchange name over 255 bytes",
        ),
        pytest.param(
            JOB + "    every: 1h\n    format: celery\n    queue: " + "q" * 300 + "\n",
            "beatd.yaml:6: job 'j': queue: a queue name is 300 bytes in UTF-8; at most 255",
            id="celery queue over 255 bytes",
        ),
        pytest.param(
            JOB + "    every: 1h\n    format: celery\n    queue: amq.q\n",
            "beatd.yaml:6: job 'j': queue: 'amq.q': queue names starting with amq. are reserved"
            " by RabbitMQ",
            id="reserved queue name",
        ),
        pytest.param(
            "broker:\n  url: amqp://h:99999/\n",
            "beatd.yaml:2: broker: url: 'amqp://h:99999/' is not a valid URL: the port must be a"
            " number 1-65535",
            id="port out of range",
        ),
        pytest.param(
            "broker:\n  url: amqp://u:secret@h:0/\n",
            "beatd.yaml:2: broker: url: 'amqp://u:***@h:0/' is not a valid URL: the port must be"
            " a number 1-65535",
            id="port 0, password hidden",
        ),
        pytest.param(
            "broker:\n  url: 'amqp://u:secret@[::1/'\n",
            "beatd.yaml:2: broker: url: 'amqp://u:***@[::1/' is not a valid URL: Invalid IPv6 URL",
            id="unparseable URL, password hidden",
        ),
        pytest.param(
            "broker:\n  url: amqp://h/?heartbeat=abc\n",
            "beatd.yaml:2: broker: url: 'amqp://h/?heartbeat=abc': options after ? are not"
            " supported (beatd sets the connection options; the heartbeat is broker.heartbeat)",
            id="URL options",
        ),
        pytest.param(
            "broker:\n  url: amqp://h/a/b\n",
            "beatd.yaml:2: broker: url: 'amqp://h/a/b': the path is the vhost, one segment"
            " (write / as %2F)",
            id="vhost of two segments",
        ),
        pytest.param(
            'state: "/var/lib/\\0beatd.db"\n',
            "beatd.yaml:1: state: '/var/lib/\\x00beatd.db': a path has no control characters",
            id="NUL in the state path",
        ),
        pytest.param(
            "worker:\n  queue: " + "q" * 240 + "\n",
            "beatd.yaml:2: worker: queue: a queue name is 240 bytes in UTF-8; at most 233",
            id="worker queue too long for its retry queues",
        ),
        pytest.param(
            "worker:\n  dead_letter_exchange: amq.topic\n",
            "beatd.yaml:2: worker: dead_letter_exchange: 'amq.topic' is a topic exchange;"
            " declaring it as direct is refused (the worker declares direct)",
            id="dead-letter exchange of another type",
        ),
        pytest.param(
            "worker:\n  dead_letter_queue: amq.dead\n",
            "beatd.yaml:2: worker: dead_letter_queue: 'amq.dead': queue names starting with amq."
            " are reserved by RabbitMQ",
            id="reserved dead-letter queue",
        ),
        pytest.param(
            "worker:\n  bindings: ['" + "k" * 256 + "']\n",
            "beatd.yaml:2: worker: bindings: a routing key is 256 bytes in UTF-8; at most 255",
            id="binding over 255 bytes",
        ),
    ],
)
def test_hostile_and_mistaken_values_are_one_problem_each(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected)


def test_the_standard_amq_exchanges_are_accepted_with_their_own_types() -> None:
    config = load("""
        broker:
          exchange: amq.topic
          exchange_type: topic
        worker:
          dead_letter_exchange: amq.direct
          events_exchange: amq.topic
        jobs:
          a: {every: 1h, task: t.a, exchange: amq.topic}
          b: {every: 1h, task: t.b, format: celery, exchange: amq.direct, routing_key: b}
    """)
    assert config.broker.exchange == "amq.topic"
    assert [job.exchange for job in config.jobs] == ["amq.topic", "amq.direct"]
    assert config.worker.dead_letter_exchange == "amq.direct"


def test_celerys_double_slash_for_the_default_vhost_becomes_2f() -> None:
    # kombu reads `//` as the vhost `/`; pika would connect to the vhost '' and be refused.
    config = load("broker:\n  url: [amqp://h//, amqp://u:p@h:5673//]\n")
    assert config.broker.urls == ("amqp://h/%2F", "amqp://u:p@h:5673/%2F")


def test_every_bad_value_in_the_file_is_reported_with_its_job_and_field() -> None:
    assert problems("""
        jobs:
          a:
            task: t.a
            at: 2027-02-30
          b:
            task: t.b
            every: 1h
            args: [1, !!int x]
    """) == [
        "beatd.yaml:5: job 'a': at: 2027-02-30 looks like a timestamp but is not one (day is out"
        " of range for month); quote it if it is a string",
        "beatd.yaml:9: job 'b': args[1]: !!int 'x' is not valid (invalid literal for int() with"
        " base 10: 'x')",
    ]


def test_an_alias_bomb_is_refused_quickly_naming_the_cap() -> None:
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = "x:\n" + "".join(f"  {line}\n" for line in levels) + JOB + "    every: 1h\n"
    text += "    args: *a8\n"
    assert problems(text) == [
        "beatd.yaml:8: not valid YAML here: aliases expand to more than 1,000,000 values (the"
        " cap), at *a5"
    ]


def test_args_repeated_through_aliases_are_checked_once_and_stay_shared() -> None:
    block = "[" + ", ".join(["x"] * 999) + "]"
    text = f"{JOB}    every: 1h\n    args: [&a {block}, {', '.join(['*a'] * 997)}]\n"
    args = job(load(text), "j").args
    assert len(args) == 998
    assert all(item is args[0] for item in args)


def test_a_problem_is_always_one_line_and_at_most_500_characters() -> None:
    (found,) = problems(
        'jobs:\n  j:\n    task: a.b\n    every: 1h\n    misfire: "' + "\\u2028" * 600 + '"\n'
    )
    assert "\u2028" not in found
    assert len(found) == 500
    assert found.endswith("…")


def test_a_bug_becomes_one_problem_rather_than_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(config_module, "_broker", broken)
    assert problems("jobs: {}\n") == [
        "beatd.yaml: cannot be read (a bug in beatd, please report it): RuntimeError: boom"
    ]


# --- reading the file: regular files only, bounded ----------------------------------------------


def read_in_thread(path: Path) -> list[str]:
    """read_config's problems, from a thread: a read that blocked would fail the test, not hang."""
    found: list[str] = []

    def target() -> None:
        try:
            read_config(path, HOME)
        except ConfigError as exc:
            found.extend(str(p) for p in exc.problems)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"reading {path} blocked"
    return found


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "beatd.yaml"
    os.mkfifo(fifo)
    assert read_in_thread(fifo) == [f"{fifo}: is a FIFO (named pipe), not a regular file"]


def test_a_device_is_refused_without_reading_it() -> None:
    assert read_in_thread(Path("/dev/zero")) == [
        "/dev/zero: is a character device, not a regular file"
    ]


def test_a_file_over_16_mib_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)  # sparse: nothing is written
    assert read_in_thread(path) == [f"{path}: is 16,777,217 bytes; the limit is 16 MiB"]


def test_a_file_of_exactly_16_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"jobs: {}\n" + b"#" * (16 * 1024 * 1024 - 10) + b"\n")
    assert read_config(path, HOME).jobs == ()


def test_a_password_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "password"
    os.mkfifo(fifo)
    path = tmp_path / "beatd.yaml"
    path.write_text(f"broker:\n  password_file: {fifo}\n")
    assert read_in_thread(path) == [
        f"{path}:2: broker: password_file: {fifo}: is a FIFO (named pipe), not a regular file"
    ]


def test_bad_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "beatd.yaml"
    path.write_bytes(b"jobs:\n  a:\n    task: caf\xe9\n")
    assert read_in_thread(path) == [f"{path}:3: not UTF-8 text (byte 0xe9)"]


def test_reading_leaves_the_garbage_collector_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemons' other threads run while a reload parses: a process-wide gc.disable() would
    # be theirs too.
    calls: list[str] = []
    monkeypatch.setattr(gc, "disable", lambda: calls.append("disable"))
    monkeypatch.setattr(gc, "enable", lambda: calls.append("enable"))
    path = tmp_path / "beatd.yaml"
    path.write_text("jobs: {a: {every: 1h, task: t.a}}\n")
    read_config(path, HOME)
    assert calls == []


# --- the daemons: a file they cannot start from is exit 78, not a traceback ---------------------

HOSTILE_FILES = {
    "impossible date": JOB + "    at: 2027-02-29T09:00:00\n",
    "deep nesting": "jobs: " + "[" * 900 + "]" * 900 + "\n",
    "huge integer": JOB + "    every: 1h\n    priority: " + "9" * 5000 + "\n",
    "reserved exchange": "broker:\n  exchange: amq.foo\n" + JOB + "    every: 1h\n",
    "at in year 1": JOB + "    at: 0001-01-01T00:00:00+01:00\n",
}


@pytest.mark.parametrize("daemon", ["scheduler", "worker"])
@pytest.mark.parametrize("text", HOSTILE_FILES.values(), ids=HOSTILE_FILES.keys())
def test_a_daemon_exits_78_on_a_file_it_cannot_start_from(
    tmp_path: Path, daemon: str, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    from beatd.scheduler import daemon as scheduler
    from beatd.worker import daemon as worker

    path = tmp_path / "beatd.yaml"
    path.write_text(text + "tasks:\n  a.b:\n    command: [/bin/true]\n")
    env = {**HOME, "STATE_DIRECTORY": str(tmp_path)}
    run = scheduler.run if daemon == "scheduler" else worker.run
    with caplog.at_level(logging.ERROR):
        assert run(str(path), env) == 78
    assert any(str(path) in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            'command: [/bin/echo, "a\\0b"]',
            "beatd.yaml:3: task 't': command: 'a\\x00b': an argument cannot hold a NUL character",
        ),
        (
            "command: [/bin/true]\n    env: {A=B: x}",
            "beatd.yaml:4: task 't': env: 'A=B': a name is not empty and has no = or NUL; a value"
            " no NUL",
        ),
        (
            'command: [/bin/true]\n    env: {A: "x\\0"}',
            "beatd.yaml:4: task 't': env: 'A': a name is not empty and has no = or NUL; a value"
            " no NUL",
        ),
    ],
)
def test_what_a_command_cannot_be_started_with_is_refused(task: str, expected: str) -> None:
    assert problems(f"tasks:\n  t:\n    {task}\n") == [expected]
