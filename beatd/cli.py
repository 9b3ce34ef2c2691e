"""The `beatd` command: argument parsing, exit codes, and turning errors into one-line messages.

Only this module turns a BeatdError into text on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from beatd import __version__
from beatd.core import durations, listing
from beatd.core.config import Config, Job, read_config
from beatd.core.errors import BeatdError, ConfigError
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
    worker = command("worker", _worker, "Run the executor daemon: consume runs and execute tasks.")
    worker.add_argument(
        "--run",
        metavar="TASK",
        help="run TASK once in the foreground, as the worker would, without a broker",
    )
    worker.add_argument("--args", metavar="JSON", help="with --run: the args, a JSON array")
    worker.add_argument("--kwargs", metavar="JSON", help="with --run: the kwargs, a JSON object")
    command("check", _check, "Validate the schedule file: a summary line, or every problem.")
    lister = command("list", _list, "Show upcoming runs, like `systemctl list-timers`.")
    lister.add_argument("--count", type=_positive_int, metavar="N", help="the next N runs")
    lister.add_argument(
        "--until", type=_duration, metavar="DURATION", help="every run within DURATION (e.g. 24h)"
    )
    lister.add_argument("--job", metavar="NAME", help="only this job")
    lister.add_argument(
        "--now", metavar="ISO", type=_iso_time, help="plan from this time (naive: the file's zone)"
    )
    lister.add_argument("--json", action="store_true", help="one JSON array of runs")
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
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.config}: {count} {'problem' if count == 1 else 'problems'}", file=sys.stderr)
        return EXIT_INVALID
    now = datetime.now(UTC)
    enabled = [job for job in config.jobs if job.enabled]
    parts = [f"{len(config.jobs)} jobs ({len(enabled)} enabled)"]
    if config.tasks:
        parts.append(f"{len(config.tasks)} tasks")
    first = next(listing.upcoming(enabled, now), None)
    if first is not None and first.at is not None:
        parts.append(f"next: {first.job.name} at {iso_utc(first.at)}")
    print(f"{args.config}: OK, {', '.join(parts)}")
    return EXIT_OK


# The daemons import pika (tens of milliseconds); `list` and `check` should not pay for it.


def _run(args: argparse.Namespace) -> int:
    from beatd.scheduler import daemon as beat  # noqa: PLC0415

    setup_logging()
    return beat.run(args.config, os.environ)


def _worker(args: argparse.Namespace) -> int:
    from beatd.worker import daemon as worker  # noqa: PLC0415

    if args.run is not None:
        return _run_inline(args)
    if args.args is not None or args.kwargs is not None:
        print("beatd worker: --args and --kwargs go with --run TASK", file=sys.stderr)
        return EXIT_USAGE
    setup_logging()
    return worker.run(args.config, os.environ)


def _run_inline(args: argparse.Namespace) -> int:
    """`beatd worker --run TASK`: one run in the foreground; its output on ours, its status
    as ours, and the worker's own summary line when it did not succeed."""
    import asyncio  # noqa: PLC0415  (not for `list` and `check`: see _trigger)

    from beatd import testing  # noqa: PLC0415
    from beatd.worker import runner  # noqa: PLC0415

    call_args = _json_option(args.args, "--args", list, "a JSON array, like '[30, \"a\"]'")
    call_kwargs = _json_option(args.kwargs, "--kwargs", dict, "a JSON object, like '{\"a\": 1}'")
    if call_args is None or call_kwargs is None:
        return EXIT_USAGE
    task = testing.load_task(args.config, args.run, os.environ)
    run = testing.invocation(args.run, call_args, call_kwargs, now=datetime.now(UTC))
    started = time.monotonic()
    with testing.echoed(sys.stdout, sys.stderr):
        result = asyncio.run(runner.run(task, run, os.environ, runner.Threads(1)))
    took = time.monotonic() - started
    if task.function is not None and result.output:  # a callable's return value or traceback
        ok = result.status is runner.Status.SUCCEEDED
        print(result.output.rstrip("\n"), file=sys.stdout if ok else sys.stderr)
    if result.status is not runner.Status.SUCCEEDED:
        reason = "timed_out" if result.status is runner.Status.TIMED_OUT else "failed"
        print(
            f"beatd: run {run.run_id} (task {run.task}): {reason} after {took:.3f}s "
            f"({result.detail})",
            file=sys.stderr,
        )
    return testing.exit_status(result)


def _json_option(text: str | None, option: str, kind: type, shape: str) -> Any:
    """The option's JSON value (an empty list/dict when not given); None after printing why
    it is unusable."""
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        print(f"beatd worker: {option}: not JSON ({exc}); give {shape}", file=sys.stderr)
        return None
    if not isinstance(value, kind):
        print(f"beatd worker: {option}: got {type(value).__name__}; give {shape}", file=sys.stderr)
        return None
    return value


def _trigger(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415  (40 ms that `list` and `check` should not pay either)

    from beatd.scheduler import daemon as beat  # noqa: PLC0415

    config = _load(args)
    job = _job(config, args.job, args.config)
    run = asyncio.run(beat.publish_manual(config, job))
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
    until = now + args.until if args.until else None
    runs = list(listing.upcoming(jobs, now, args.count, until))
    if args.json:
        print(listing.to_json(runs))
        return EXIT_OK
    if args.count is None and until is None:
        runs = listing.with_inactive(runs, jobs)
    states = read_states(Path(config.state))
    print(listing.table(runs, states, now))
    return EXIT_OK


def _aware(moment: datetime, zone: tzinfo) -> datetime:
    # In UTC, so `--until` adds real time: `now + 3h` on a zoned datetime adds wall-clock time.
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
