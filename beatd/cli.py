"""The `beatd` command: argument parsing, exit codes, and turning errors into one-line messages.

Only this module turns a BeatdError into text on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from beatd import __version__
from beatd.core import calendar, cron, durations, listing, values
from beatd.core.config import Config, Job, croniter_order_warnings, read_config
from beatd.core.errors import BeatdError, ConfigError, CronError
from beatd.core.messages import iso_utc
from beatd.runtime.state import read_states

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78
DEFAULT_CONFIG = "/etc/beatd/beatd.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except BeatdError as exc:
        print(f"beatd: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:  # `beatd list | head`
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beatd", description="A cron-like scheduler that publishes due runs to RabbitMQ."
    )
    parser.add_argument("--version", action="version", version=f"beatd {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(func=func)
        sub.add_argument(
            "-c",
            "--config",
            default=os.environ.get("BEATD_CONFIG", DEFAULT_CONFIG),
            metavar="FILE",
            help="schedule file (default: $BEATD_CONFIG, else %(default)s)",
        )
        return sub

    command("run", _run, "Run the scheduler daemon in the foreground (systemd daemonises).")
    command("worker", _worker, "Run the executor daemon: consume runs and execute their tasks.")
    checker = command("check", _check, "Validate the file: a summary line, or every problem.")
    checker.add_argument(
        "--skip-tasks",
        action="store_true",
        help="do not resolve a worker's tasks (imports, executables): check what `beatd run` uses",
    )
    lister = command("list", _list, "Show upcoming runs, like `systemctl list-timers`.")
    lister.add_argument("--count", type=_positive_int, metavar="N", help="the next N runs")
    lister.add_argument(
        "--until", type=_duration, metavar="DURATION", help="every run within DURATION (e.g. 24h)"
    )
    lister.add_argument("--job", metavar="NAME", help="only this job")
    lister.add_argument(
        "--now", metavar="ISO", type=_iso_time, help="plan from this time (naive: the file's zone)"
    )
    lister.add_argument(
        "--local", action="store_true", help="times in each job's zone, not the file's timezone"
    )
    lister.add_argument("--json", action="store_true", help="one JSON array of runs")
    text = "Show when a cron expression fires, like `systemd-analyze calendar --iterations`."
    preview = commands.add_parser("calendar", help=text, description=text)
    preview.set_defaults(func=_calendar)
    preview.add_argument("expression", metavar="EXPR", help='e.g. "30 2 * * *" or @daily')
    preview.add_argument(
        "--tz", default="UTC", metavar="ZONE", help="IANA time zone (default: %(default)s)"
    )
    preview.add_argument(
        "--count", type=_positive_int, default=5, metavar="N", help="fire times (default: 5)"
    )
    preview.add_argument(
        "--now", metavar="ISO", type=_iso_time, help="start from this time (naive: in --tz)"
    )
    preview.add_argument("--job", metavar="NAME", help="the job name that `H` fields hash")
    trigger = command("trigger", _trigger, "Publish one run of JOB now (trigger: manual).")
    trigger.add_argument("job", metavar="JOB")
    text = "Print a Celery app's beat_schedule as a beatd schedule file (format: celery)."
    importer = commands.add_parser("import-celery", help=text, description=text)
    importer.set_defaults(func=_import_celery)
    source = importer.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "app", nargs="?", metavar="MODULE:APP", help="the app, as given to `celery -A`"
    )
    source.add_argument(
        "--config-module",
        metavar="MODULE",
        help="read beat_schedule/CELERYBEAT_SCHEDULE and timezone from a plain config module",
    )
    return parser


def setup_logging() -> None:
    """Log to stderr: journald adds timestamps itself, so leave them out under systemd."""
    level = os.environ.get("BEATD_LOG_LEVEL", "INFO").upper()
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, stream=sys.stderr)
    logging.getLogger("pika").setLevel(logging.ERROR)  # beatd.broker logs what matters, once


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _duration(text: str) -> timedelta:
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _iso_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2026-10-25T01:30 or 2026-10-25T01:30:00+02:00"
        ) from None


def _load(args: argparse.Namespace) -> Config:
    return read_config(args.config, os.environ)


def _check(args: argparse.Namespace) -> int:
    try:
        config = _load(args)
        if config.has_worker_section and not args.skip_tasks:
            _resolve_tasks(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.config}: {count} {'problem' if count == 1 else 'problems'}", file=sys.stderr)
        return EXIT_INVALID
    for warning in croniter_order_warnings(config):
        print(warning, file=sys.stderr)
    now = datetime.now(UTC)
    enabled = [job for job in config.jobs if job.enabled]
    parts = []
    if config.jobs or not config.has_worker_section:
        parts.append(f"{len(config.jobs)} jobs ({len(enabled)} enabled)")
    if config.has_worker_section:
        resolved = "not resolved" if args.skip_tasks else "each resolved as `beatd worker` does"
        parts.append(f"{len(config.tasks)} tasks, {resolved}")
    first = next(listing.upcoming(enabled, now), None)
    if first is not None and first.at is not None:
        parts.append(f"next: {first.job.name} at {iso_utc(first.at)}")
    print(f"{args.config}: OK, {', '.join(parts)}")
    return EXIT_OK


# The daemons import pika (tens of milliseconds); `list` and `check` should not pay for it.


def _resolve_tasks(path: str) -> None:
    """Import every `call:` and find every `command:` exactly as `beatd worker` does at start,
    so `check` (and `systemctl reload`) fail on what the worker would refuse with exit 78."""
    from beatd.worker import daemon as worker  # noqa: PLC0415

    worker.load(path, os.environ)


def _run(args: argparse.Namespace) -> int:
    from beatd.scheduler import daemon as beat  # noqa: PLC0415

    setup_logging()
    return beat.run(args.config, os.environ)


def _worker(args: argparse.Namespace) -> int:
    from beatd.worker import daemon as worker  # noqa: PLC0415

    setup_logging()
    return worker.run(args.config, os.environ)


def _trigger(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415  (40 ms that `list` and `check` should not pay either)

    from beatd.scheduler.manual import publish_manual  # noqa: PLC0415

    config = _load(args)
    job = _job(config, args.job, args.config)
    run = asyncio.run(publish_manual(config, job))
    print(f"published {run.id}")
    return EXIT_OK


def _import_celery(args: argparse.Namespace) -> int:
    from beatd.compat import celery_import  # noqa: PLC0415  (imports celery: only for this command)

    if args.app is not None:
        app, source = celery_import.load_app(args.app), args.app
    else:
        app = celery_import.load_config_module(args.config_module)
        source = f"--config-module {args.config_module}"
    result = celery_import.convert(app, source)
    sys.stdout.write(result.text)
    for line in result.notes:
        print(f"note: {line}", file=sys.stderr)
    for line in result.problems:
        print(f"not converted: {line}", file=sys.stderr)
    if result.problems:
        count = len(result.problems)
        print(
            f"beatd import-celery: {result.jobs} converted, {count} not converted", file=sys.stderr
        )
        return EXIT_INVALID
    return EXIT_OK


def _job(config: Config, name: str, path: str) -> Job:
    job = config.job(name)
    if job is None:
        hint = difflib.get_close_matches(name, [j.name for j in config.jobs], n=1)
        also = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise BeatdError(f"{path}: no job named {name!r}{also}")
    return job


def _list(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _aware(args.now, config.timezone) if args.now else datetime.now(UTC)
    jobs = list(config.jobs)
    if args.job is not None:
        jobs = [_job(config, args.job, args.config)]
    until = listing.window_end(now, args.until) if args.until else None
    states = read_states(Path(config.state))  # before any output: a bad file is one clean error
    zone = None if args.local else config.timezone
    bounded: listing.Bounded | None = None
    runs: Iterable[listing.Run]
    if args.count is None and until is None:  # one row per job: bounded by the file
        runs = listing.with_inactive(list(listing.upcoming(jobs, now)), jobs)
    else:
        limit = min(args.count or listing.MAX_ROWS, listing.MAX_ROWS)
        if limit < (args.count or 0):
            print(
                f"beatd list: showing the first {limit:,} runs, not {args.count:,}", file=sys.stderr
            )
        runs = bounded = listing.Bounded(listing.upcoming(jobs, now, args.count, until), limit)
    if args.json:
        sys.stdout.writelines(listing.json_chunks(runs, states))
    else:
        enabled = [job for job in jobs if job.enabled]
        lines = listing.table(runs, states, now, zone, jobs=enabled, stream=bounded is not None)
        sys.stdout.writelines(_lines(lines))
    if bounded is not None and bounded.cut and args.count is None:  # --until held more
        end = iso_utc(until or now)
        print(
            f"beatd list: stopped after {bounded.limit:,} runs; more fall before {end}"
            " (narrow it with --job or a shorter --until)",
            file=sys.stderr,
        )
    return EXIT_OK


def _lines(lines: Iterable[str]) -> Iterator[str]:
    return (line + "\n" for line in lines)


def _calendar(args: argparse.Namespace) -> int:
    try:
        zone = values.parse_zone(args.tz)
    except ValueError as exc:
        raise BeatdError(f"calendar: --tz: {exc}") from None
    try:
        expr = cron.parse(args.expression, args.job or "")
    except CronError as exc:
        raise BeatdError(f"calendar: {args.expression!r}: {exc}") from None
    now = _aware(args.now, zone) if args.now else datetime.now(UTC)
    if args.count > listing.MAX_ROWS:
        print(f"beatd calendar: showing {listing.MAX_ROWS:,} fire times", file=sys.stderr)
    count = min(args.count, listing.MAX_ROWS)
    sys.stdout.writelines(_lines(calendar.preview(cron.CronSchedule(expr, zone), now, count)))
    return EXIT_OK


def _aware(moment: datetime, zone: tzinfo) -> datetime:
    # In UTC, so `--until` adds real time: `now + 3h` on a zoned datetime adds wall-clock time.
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
    except OverflowError:
        raise BeatdError(f"--now {moment.isoformat()}: outside years 1-9999 in UTC") from None
