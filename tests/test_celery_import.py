"""`beatd import-celery`: a Celery app's beat schedule becomes a beatd file that fires when
Celery's own crontab code says it fires and routes where celery beat sends each task."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from celery.beat import ScheduleEntry, Scheduler
from celery.schedules import crontab, maybe_schedule
from celery.signals import before_task_publish
from kombu import Connection

from beatd import cli
from beatd.compat import celery_import, celery_load
from beatd.compat.celery_codec import celery_message
from beatd.compat.celery_schedules import UnconvertibleError, cron_expression, schedule_spec
from beatd.core import listing
from beatd.core.config import Config, Job, parse_config
from beatd.core.messages import Run
from beatd.core.schedules import Interval

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "tests.celery_app.sample:app"
BERLIN = ZoneInfo("Europe/Berlin")
RENAMED = {"add every 10 seconds": "add-every-10-seconds"}


@pytest.fixture(autouse=True)
def in_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """`celery -A` and `beatd import-celery` import the app from the current directory."""
    monkeypatch.chdir(ROOT)


def import_celery(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["import-celery", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Config]]:
    """The sample app and its conversion, written to a file and parsed as `beatd run` does."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        app = celery_load.load_app(SAMPLE)
    conversion = celery_import.convert(app, SAMPLE)
    assert conversion.problems == []
    path = tmp_path_factory.mktemp("converted") / "beatd.yaml"
    path.write_text(conversion.text)
    yield app, parse_config(conversion.text, str(path), {})


def job_for(config: Config, entry: str) -> Job:
    found = config.job(RENAMED.get(entry, entry))
    assert found is not None, entry
    return found


# --- crontab fields to cron text ------------------------------------------------------------


def cron_of(**fields: Any) -> str:
    kind, text, _ = schedule_spec(crontab(**fields))
    assert kind == "cron"
    return text


def test_celerys_sunday_is_day_0_as_in_cron_and_names_become_numbers() -> None:
    assert cron_of(minute=0, hour=0, day_of_week=0) == "0 0 * * 0"
    assert cron_of(minute=0, hour=0, day_of_week="sunday,wed") == "0 0 * * 0,3"
    assert cron_of(minute=0, hour=0, day_of_week="fri-mon") == "0 0 * * 0,1,5,6"


def test_month_names_and_sets_of_minutes_and_hours_are_spelled_out() -> None:
    assert cron_of(minute={5, 35}, hour=[8, 20], month_of_year="jan,jul") == "5,35 8,20 * 1,7 *"


def test_a_star_step_stays_a_star_step_so_dst_treats_it_as_a_wildcard() -> None:
    assert cron_of(minute="*/30") == "*/30 * * * *"
    assert cron_of(minute="0,30") == "0,30 * * * *"


def test_day_of_month_with_day_of_week_in_whole_weeks_becomes_nth_weekdays() -> None:
    # Celery ANDs the two fields: Mondays among the 1st-7th is the first Monday.
    assert cron_of(minute=0, hour=9, day_of_week="mon", day_of_month="1-7") == "0 9 * * 1#1"
    both = cron_of(minute=0, hour=9, day_of_week="mon,fri", day_of_month="1-7,22-31")
    assert both == "0 9 * * 1#1,1#4,1#5,5#1,5#4,5#5"


def test_both_day_fields_restricted_use_a_star_prefixed_field_so_cron_ands_them() -> None:
    assert cron_of(minute=0, hour=10, day_of_week="sat,sun", day_of_month="*/2") == (
        "0 10 */2 * 0,6"
    )
    assert cron_of(minute=0, hour=8, day_of_week=1, day_of_month=1) == "0 8 */31 * 1"
    assert cron_expression({0}, {8}, {0, 3, 6}, set(range(10, 21)), set(range(1, 13))) == (
        "0 8 10-20 * */3"
    )
    # Two values that happen to be a step from the start: written as the step only when needed.
    assert cron_of(minute=0, hour=8, day_of_month="1,17") == "0 8 1,17 * *"
    assert cron_of(minute=0, hour=8, day_of_week="mon", day_of_month="1,17") == "0 8 */16 * 1"
    assert cron_of(minute=0, hour=8, day_of_week="sun,thu", day_of_month="10-20") == (
        "0 8 10-20 * */4"
    )


def test_day_fields_that_cron_would_or_instead_of_and_are_refused_saying_why() -> None:
    with pytest.raises(UnconvertibleError, match="Celery runs on days matching both, cron on"):
        cron_of(minute=0, hour=9, day_of_week="mon", day_of_month="2,3")


# --- the sample app, end to end --------------------------------------------------------------


def test_the_sample_app_converts_without_problems_and_passes_beatd_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = import_celery(capsys, SAMPLE)
    assert code == 0, err
    assert "renamed to 'add-every-10-seconds'" in err
    assert "Traceback" not in err
    converted = tmp_path / "beatd.yaml"
    converted.write_text(out)
    assert cli.main(["check", "-c", str(converted)]) == 0
    assert "OK, 30 jobs (30 enabled)" in capsys.readouterr().out
    assert yaml.safe_load(out)["defaults"] == {"format": "celery"}


def test_the_apps_time_zone_and_broker_are_carried_over_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = import_celery(capsys, SAMPLE)
    data = yaml.safe_load(out)
    assert data["timezone"] == "Europe/Berlin"
    assert data["broker"]["url"] == "amqp://guest@127.0.0.1:5672//"
    assert "guest:guest" not in out


def celery_fire_times(sched: crontab, app: Any, start: datetime, end: datetime) -> list[datetime]:
    """Celery's own answer, iterated: after a run at t, beat's next run is
    t + crontab.remaining_estimate(t) evaluated with now = t (passed in through nowfun)."""
    mine = crontab(
        sched._orig_minute,
        sched._orig_hour,
        sched._orig_day_of_week,
        sched._orig_day_of_month,
        sched._orig_month_of_year,
        app=app,
    )
    times, t = [], start
    while True:
        mine.nowfun = lambda t=t: t
        t = t + mine.remaining_estimate(t)
        if t > end:
            return times
        times.append(t.astimezone(UTC))


def beatd_list_times(
    capsys: pytest.CaptureFixture[str], config: Config, job: str, start: datetime, days: int
) -> list[datetime]:
    """What `beatd list --json --job JOB --now START --until <days>d` says."""
    argv = ["list", "-c", config.path, "--json", "--job", job, "--now", start.isoformat()]
    assert cli.main([*argv, "--until", f"{days}d"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(run["job"] == job for run in listed)
    return [datetime.fromisoformat(run["at"]) for run in listed]


# Europe/Berlin in 2026: clocks jump 02:00 CET -> 03:00 CEST on 29 March and fall back
# 03:00 CEST -> 02:00 CET on 25 October. There, beatd follows Debian cron and Celery does not:
DST_DIFFERENCES = {
    # A fixed time in the skipped hour: Debian runs it right after the jump (03:00 CEST);
    # Celery's wall-clock arithmetic lands on 03:30 CEST.
    "dst-gap-time": {
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC): "beatd",
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC): "celery",
    },
    # A wildcard minute in the repeated hour: Debian runs every real 02:xx, both times round;
    # Celery skips the second pass.
    "every-15-minutes": {
        datetime(2026, 10, 25, 1, minute, tzinfo=UTC): "beatd" for minute in (0, 15, 30, 45)
    },
}


def test_beatd_list_shows_each_crontab_entry_when_celery_computes_it_over_a_year(
    sample: tuple[Any, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.celery_app.sample import CRONTABS

    app, config = sample
    start = datetime(2026, 1, 1, tzinfo=BERLIN).astimezone(UTC)
    end = start + timedelta(days=366)
    for name, sched in CRONTABS.items():
        celery = set(celery_fire_times(sched, app, start, end))
        beatd = set(beatd_list_times(capsys, config, name, start, 366))
        assert celery, name
        differences = {t: "beatd" if t in beatd else "celery" for t in celery ^ beatd}
        assert differences == DST_DIFFERENCES.get(name, {}), name


def test_each_interval_entry_repeats_at_celerys_interval(sample: tuple[Any, Config]) -> None:
    app, config = sample
    t = datetime(2026, 6, 1, 12, 0, 7, tzinfo=UTC)
    intervals = [
        (name, entry["schedule"])
        for name, entry in app.conf.beat_schedule.items()
        if not isinstance(entry["schedule"], crontab)
    ]
    assert len(intervals) == 8
    for name, value in intervals:
        celery = maybe_schedule(value, app=app)
        celery.nowfun = lambda: t
        every = celery.remaining_estimate(t)
        job = job_for(config, name)
        assert isinstance(job.schedule, Interval), name
        assert job.schedule.every == every, name
        first = job.schedule.next_after(t)
        assert job.schedule.next_after(first) - first == every, name


def test_options_become_the_matching_job_keys(sample: tuple[Any, Config]) -> None:
    _, config = sample
    options = job_for(config, "with-options")
    assert (options.queue, options.priority, options.expires) == (
        "maintenance",
        7,
        timedelta(minutes=10),
    )
    exchange = job_for(config, "with-exchange")
    assert (exchange.exchange, exchange.routing_key, exchange.expires) == (
        "events",
        "events.tick",
        timedelta(seconds=5),
    )
    task_level = job_for(config, "task-level-options")  # from task_routes and the task itself
    assert (task_level.queue, task_level.priority, task_level.expires) == (
        "reports",
        3,
        timedelta(minutes=2),
    )
    assert job_for(config, "routed-by-task-routes").queue == "routed"
    args = job_for(config, "with-args")
    assert args.args == (16, 16)
    assert dict(args.kwargs) == {"note": "hello", "ratio": 0.5, "nested": {"a": [1, None, True]}}


def celery_beat_publishes(app: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    """What celery beat itself publishes for each entry (its Scheduler.apply_async through
    Celery's producer), captured from before_task_publish on an in-memory broker."""
    seen: dict[str, dict[str, Any]] = {}

    def capture(sender: str, body: Any, exchange: str, routing_key: str, **more: Any) -> None:
        declared = [getattr(queue, "name", queue) for queue in more.get("declare") or ()]
        seen[current] = {
            "exchange": exchange,
            "routing_key": routing_key,
            "declare": declared,
            "headers": more["headers"],
            "properties": more["properties"],
            "args": list(body[0]),
            "kwargs": body[1],
        }

    before_task_publish.connect(capture, weak=False)
    scheduler = Scheduler(app, lazy=True)
    try:
        with Connection("memory://") as connection:
            producer = app.amqp.Producer(connection, auto_declare=False)
            for current in names:
                entry = ScheduleEntry(name=current, app=app, **app.conf.beat_schedule[current])
                scheduler.apply_async(entry, producer=producer, advance=False)
    finally:
        before_task_publish.disconnect(capture)
    return seen


def test_converted_jobs_route_and_carry_what_celery_beat_itself_publishes(
    sample: tuple[Any, Config],
) -> None:
    app, config = sample
    names = list(app.conf.beat_schedule)
    beat = celery_beat_publishes(app, names)
    slot = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    for name in names:
        ours = celery_message(Run(job_for(config, name), slot), slot, "beatd")
        theirs = beat[name]
        assert (ours.exchange, ours.routing_key) == (theirs["exchange"], theirs["routing_key"])
        assert [ours.queue] == theirs["declare"], name
        assert ours.properties.priority == theirs["properties"].get("priority"), name
        ttl_s = theirs["properties"].get("expiration")
        expected_ttl = None if ttl_s is None else str(int(ttl_s * 1000))
        assert ours.properties.expiration == expected_ttl, name
        args, kwargs, _ = json.loads(ours.body)
        assert (args, kwargs) == (theirs["args"], theirs["kwargs"]), name
        assert set(theirs["headers"]) <= set(ours.properties.headers), name


# --- what cannot be converted ----------------------------------------------------------------


def test_every_unconvertible_entry_is_reported_by_name_and_the_rest_still_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = import_celery(capsys, "tests.celery_app.unconvertible:app")
    assert code == 1
    reasons = {
        "at-sunset": "solar('sunset', 52.52, 13.4)",
        "relative-interval": "relative=True",
        "second-and-third-on-mondays": "Celery runs on days matching both",
        "expires-at-a-date": "is a fixed moment",
        "time-limit": "options: time_limit=30 has no beatd equivalent",
        "custom-headers": "options: headers={'tenant': 'a'} has no beatd equivalent",
        "lazy-args": "BeatLazyFunc",
        "custom-class": "EveryOtherTuesday is a custom schedule class",
        "sub-millisecond": "not a positive whole number of milliseconds",
    }
    lines = err.splitlines()
    for name, reason in reasons.items():
        matching = [line for line in lines if f"entry {name!r}" in line]
        assert len(matching) == 1, name
        assert reason in matching[0], matching[0]
    assert lines[-1] == "beatd import-celery: 1 converted, 9 not converted"
    assert list(yaml.safe_load(out)["jobs"]) == ["fine"]
    parse_config(out, "partial.yaml", {})


def test_a_solar_entry_is_an_error_naming_the_entry(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = import_celery(capsys, "tests.celery_app.unconvertible:app")
    [line] = [line for line in err.splitlines() if "solar" in line]
    assert line.startswith("not converted: tests.celery_app.unconvertible:app: entry 'at-sunset':")
    assert "beatd has no solar schedules" in line


def test_a_plain_config_module_with_old_setting_names_converts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = import_celery(capsys, "--config-module", "tests.celery_app.celeryconfig")
    assert code == 0, err
    config = parse_config(out, "converted.yaml", {})
    assert str(config.timezone) == "America/New_York"
    assert job_for(config, "nightly").spec == "30 2 * * *"
    assert job_for(config, "heartbeat").schedule == Interval(timedelta(seconds=30))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["tests.celery_app.missing:app"],
            "beatd: cannot import 'tests.celery_app.missing:app': ModuleNotFoundError: "
            "No module named 'tests.celery_app.missing' "
            "(run beatd in the directory where `celery -A` works)",
        ),
        (
            ["tests.celery_app.sample:nope"],
            "beatd: cannot import 'tests.celery_app.sample:nope': "
            "tests.celery_app.sample has no 'nope'",
        ),
        (
            ["tests.celery_app.raising:app"],
            "beatd: cannot import 'tests.celery_app.raising:app': "
            "RuntimeError: cannot reach the database",
        ),
        (
            ["tests.celery_app.sample:CRONTABS"],
            "beatd: 'tests.celery_app.sample:CRONTABS' is a dict, not a Celery app",
        ),
        (
            ["--config-module", "tests.celery_app.nothing"],
            "beatd: cannot read config module 'tests.celery_app.nothing': ModuleNotFoundError: "
            "module 'tests.celery_app' has no attribute 'nothing'",  # Celery's words
        ),
    ],
)
def test_an_app_that_cannot_be_loaded_is_one_line_on_stderr_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = import_celery(capsys, *argv)
    assert (code, out) == (1, "")
    assert err.splitlines() == [expected]


def test_what_the_users_module_prints_goes_to_stderr_not_into_the_yaml(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = import_celery(capsys, "tests.celery_app.noisy:app")
    assert code == 0
    assert "connecting to things..." in err
    assert "connecting" not in out
    [job] = parse_config(out, "noisy.yaml", {}).jobs
    assert job.name == "ping"


# --- issue 13 findings ---------------------------------------------------------------------


def runs_on(expression: str, zone: str, day: str) -> list[datetime]:
    """Every run of `cron: expression` during one local day of zone, in UTC."""
    [job] = parse_config(
        f'timezone: {zone}\njobs:\n  j: {{cron: "{expression}", task: t}}\n', "t.yaml", {}
    ).jobs
    start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(zone))
    end = start + timedelta(days=1, hours=2)  # wall-clock day, longer across a fall-back
    runs = listing.upcoming([job], start.astimezone(UTC) - timedelta(seconds=1), until=end)
    return [
        run.at
        for run in runs
        if run.at is not None and run.at.astimezone(start.tzinfo).date() == start.date()
    ]


def test_an_hour_list_equal_to_a_step_keeps_its_fixed_time_dst_behaviour() -> None:
    # Europe/Berlin 2026: 02:00 CET jumps to 03:00 CEST on 29 March (01:00Z); 03:00 CEST falls
    # back to 02:00 CET on 25 October (01:00Z). A list names fixed hours: 02:00 runs once on both
    # days, as Celery runs it; `*/2` would skip it in March and run it twice in October.
    listed = cron_of(minute=0, hour=",".join(str(h) for h in range(0, 24, 2)))
    assert listed == "0 0-22/2 * * *"
    spring = runs_on(listed, "Europe/Berlin", "2026-03-29")
    assert len(spring) == 12
    assert datetime(2026, 3, 29, 1, 0, tzinfo=UTC) in spring
    autumn = runs_on(listed, "Europe/Berlin", "2026-10-25")
    assert len(autumn) == 12
    assert datetime(2026, 10, 25, 0, 0, tzinfo=UTC) in autumn  # 02:00 CEST, the first one
    assert datetime(2026, 10, 25, 1, 0, tzinfo=UTC) not in autumn
    assert cron_of(minute="0,15,30,45", hour=2) == "0-45/15 2 * * *"
    assert cron_of(hour="*/2", minute=0) == "0 */2 * * *"  # a star stays a star


def test_celerys_own_configuration_error_is_one_line_with_every_part_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = import_celery(capsys, "--config-module", "tests.celery_app.mixed_config")
    assert (code, out) == (1, "")
    [line] = err.splitlines()
    assert "Cannot mix new and old setting keys" in line
    assert "CELERY_TIMEZONE" in line and "-> timezone" in line


def test_relative_daily_and_hourly_intervals_in_a_utc_app_become_exact_cron(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = import_celery(capsys, "tests.celery_app.relative:app")
    assert code == 1
    config = parse_config(out, "relative.yaml", {})
    assert job_for(config, "daily").spec == "0 0 * * *"
    assert job_for(config, "hourly").spec == "0 * * * *"
    [two] = [line for line in err.splitlines() if "'two-hourly'" in line]
    assert "relative=True" in two and "when beat started" in two


def test_a_relative_daily_interval_outside_utc_is_refused_with_a_daily_example() -> None:
    with pytest.raises(UnconvertibleError, match=r"'0 0 \* \* \*'"):
        schedule_spec(timedelta(days=1), relative=True, zone=BERLIN)


def test_a_timedelta_in_args_gets_a_hint_that_fits_a_timedelta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, err = import_celery(capsys, "tests.celery_app.relative:app")
    [line] = [line for line in err.splitlines() if "'timedelta-arg'" in line]
    assert "args[0] is a timedelta" in line
    assert "3600" in line
    assert "quote" not in line


def test_a_minute_picked_at_random_on_import_becomes_h(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = import_celery(capsys, "tests.celery_app.randomised:app")
    assert code == 0, err
    config = parse_config(out, "randomised.yaml", {})
    assert job_for(config, "spread").spec == "H 4 * * *"
    assert job_for(config, "fixed").spec == "7 4 * * *"
    assert "minute differed between two imports" in out
    [note] = [line for line in err.splitlines() if "'spread'" in line]
    assert note.startswith("note: ") and "H" in note
