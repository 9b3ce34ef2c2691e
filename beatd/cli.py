"""The `beatd` command: argument parsing, exit codes, and turning errors into one-line messages.

Only this module turns a BeatdError into text on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beatd import __version__, cli_control
from beatd.core import calendar, cron, durations, listing, values
from beatd.core.config import Config, Job, croniter_order_warnings, read_config
from beatd.core.errors import BeatdError, ConfigError, CronError
from beatd.core.messages import iso_utc
from beatd.runtime import collector, pauses
from beatd.runtime.state import read_states

if TYPE_CHECKING:
    from beatd.history import Outcomes

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
    cli_control.add(command)
    worker = command("worker", _worker, "Run the executor daemon: consume runs and execute tasks.")
    worker.add_argument(
        "--run",
        metavar="TASK",
        help="run TASK once in the foreground, as the worker would, without a broker",
    )
    worker.add_argument("--args", metavar="JSON", help="with --run: the args, a JSON array")
    worker.add_argument("--kwargs", metavar="JSON", help="with --run: the kwargs, a JSON object")
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
    _add_history(command)
    _add_import_crontab(commands)
    _add_shell(commands)
    return parser


def setup_logging() -> None:
    """Log to stderr (see beatd.runtime.logs: priorities under journald, job=/run_id=)."""
    from beatd.runtime import logs  # noqa: PLC0415

    logs.setup(os.environ)


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
        with collector.paused():  # a one-shot command: no other thread
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

    from beatd.scheduler.manual import publish_manual  # noqa: PLC0415

    config = _load(args)
    job = _job(config, args.job, args.config)
    run = asyncio.run(publish_manual(config, job))
    print(f"published {run.id}")
    return EXIT_OK


def _import_celery(args: argparse.Namespace) -> int:
    # celery is imported only for this command
    from beatd.compat import celery_import, celery_load  # noqa: PLC0415

    if args.app is not None:
        app, source = celery_load.load_app(args.app), args.app
        argv = [args.app]
    else:
        app = celery_load.load_config_module(args.config_module)
        source = f"--config-module {args.config_module}"
        argv = ["--config-module", args.config_module]
    varying, trouble = celery_load.find_varying(argv, celery_load.observe(app))
    result = celery_import.convert(app, source, varying)
    if trouble:
        result.notes.append(trouble)
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
    # A one-shot command, no other thread: the collector stays paused after the load too. What
    # it builds then (states, runs, rows) lives until printed, and makes no cycles (a history
    # read's broker client may: one read's worth); its passes over 100k of them took 0.3 s.
    with collector.paused():
        return _listed(args)


def _listed(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _aware(args.now, config.timezone) if args.now else datetime.now(UTC)
    jobs = list(config.jobs)
    if args.job is not None:
        jobs = [_job(config, args.job, args.config)]
    until = listing.window_end(now, args.until) if args.until else None
    state_file = _state_file(Path(config.state))
    states = read_states(state_file)  # a bad file: one clean error first
    paused = pauses.read_pauses(state_file)
    outcomes = _outcomes(config)
    last = None if outcomes is None else outcomes.by_job
    zone = None if args.local else config.timezone
    bounded: listing.Bounded | None = None
    runs: Iterable[listing.Upcoming]
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
        sys.stdout.writelines(listing.json_chunks(runs, states, last))
        if outcomes is not None and last is None:  # the array has no room for why
            print(f"beatd list: {outcomes.note}", file=sys.stderr)
    else:
        enabled = [job for job in jobs if job.enabled]
        if paused:
            runs = (_paused(run, paused) for run in runs)
        lines = listing.table(
            runs, states, now, zone, jobs=enabled, stream=bounded is not None, outcomes=last
        )
        sys.stdout.writelines(_lines(lines))
        footer = [_state_line(Path(config.state), state_file)]
        sys.stdout.writelines(_lines(footer if outcomes is None else [*footer, outcomes.note]))
    if bounded is not None and bounded.cut and args.count is None:  # --until held more
        end = iso_utc(until or now)
        print(
            f"beatd list: stopped after {bounded.limit:,} runs; more fall before {end}"
            " (narrow it with --job or a shorter --until)",
            file=sys.stderr,
        )
    return EXIT_OK


def _paused(run: listing.Upcoming, pauses: Mapping[str, str]) -> listing.Upcoming:
    """A run of a paused job says so (beatd pause), with the operator's note."""
    note = pauses.get(run.job.name)
    if note is None:
        return run
    said = f"PAUSED: {note}" if note else "PAUSED"
    return dataclasses.replace(run, note=f"{said}; {run.note}" if run.note else said)


def _state_file(configured: Path) -> Path:
    """The state file `beatd run` uses: the configured one, else, from a shell without
    systemd's STATE_DIRECTORY, the one the shipped unit keeps in /var/lib/beatd."""
    if configured.exists() or os.environ.get("STATE_DIRECTORY"):
        return configured
    systemd = pauses.SYSTEMD_STATE
    return systemd if systemd.exists() else configured


def _state_line(configured: Path, used: Path) -> str:
    """Which state file LAST came from: the operator sees whether it is the daemon's."""
    if used != configured:
        return f"state: {used} (the systemd unit's; {configured} does not exist)"
    return f"state: {used}" if used.exists() else f"state: {used} (not found: LAST unknown)"


def _outcomes(config: Config) -> Outcomes | None:
    """The run history's last outcome per job; None without a `history:` section."""
    if config.history is None:  # no broker connection, no pika import
        return None
    from beatd import history  # noqa: PLC0415  (see _trigger)

    return history.last_outcomes(config)


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


def _add_history(command: Callable[..., argparse.ArgumentParser]) -> None:
    text = "What became of each run: read the run history kept on RabbitMQ (history:)."
    sub = command("history", _history, text)
    sub.add_argument("job", nargs="?", metavar="JOB", help="only this job")
    sub.add_argument(
        "--since",
        type=_duration,
        default=timedelta(hours=24),
        metavar="DURATION",
        help="how far back (default 24h)",
    )
    sub.add_argument(
        "--limit",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="keep the newest N events (default 10000, at most 1000000)",
    )
    sub.add_argument("--json", action="store_true", help="one JSON array, one object per run")


def _history(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415  (see _trigger)

    from beatd import history as reader  # noqa: PLC0415
    from beatd.core import history  # noqa: PLC0415

    config = _load(args)
    if args.job is not None and config.job(args.job) is None:  # it may have been removed
        print(f"beatd history: note: no job {args.job!r} in {args.config}", file=sys.stderr)
    since = datetime.now(UTC) - args.since
    limit = min(args.limit, 1_000_000)
    read = asyncio.run(reader.read_events(config, since, limit=limit, job=args.job))
    rows = history.fold(read.events, args.job)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=None))
        return EXIT_OK
    if not rows:
        print(f"no runs since {since:%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
        return EXIT_OK
    for line in history.table(rows):
        print(line)
    return EXIT_OK


def _add_import_crontab(commands: Any) -> None:
    text = "Print a crontab as a beatd schedule file and a worker file (shell-string tasks)."
    importer = commands.add_parser("import-crontab", help=text, description=text)
    importer.set_defaults(func=_import_crontab)
    importer.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="crontab files (default: yours, from `crontab -l`); /etc/crontab and "
        "/etc/cron.d/* have a user field",
    )
    importer.add_argument(
        "--system", action="store_true", help="the files have a user field (as /etc/crontab)"
    )
    importer.add_argument(
        "--timezone", metavar="ZONE", help="the zone cron runs in (default: this machine's)"
    )
    importer.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        help="write DIR/beatd.yaml and DIR/worker.yaml instead of printing both",
    )


def _import_crontab(args: argparse.Namespace) -> int:
    from beatd.compat import crontab_import as cti  # noqa: PLC0415

    zone = args.timezone or _local_zone()
    try:
        values.parse_zone(zone)
    except ValueError as exc:
        raise BeatdError(f"--timezone: {exc}") from None
    out = cti.Conversion()
    for name, text in _crontabs(args.files):
        system = args.system or name == "/etc/crontab" or name.startswith("/etc/cron.d/")
        cti.parse(text, name, zone, system=system, out=out)
    source = " ".join(args.files)
    schedule, worker = cti.render(out, source or "(crontab -l)", zone)
    if args.output_dir:
        target = Path(args.output_dir)
        paths = (target / "beatd.yaml", target / "worker.yaml")
        for path in paths:
            if path.exists():
                raise BeatdError(f"{path}: exists; not overwriting it")
        for path, content in zip(paths, (schedule, worker), strict=True):
            _write(path, content)
        print(f"wrote {paths[0]} ({len(out.entries)} jobs) and {paths[1]}", file=sys.stderr)
    else:
        sys.stdout.write(schedule + CRONTAB_SPLIT + "\n" + worker)
    for line in out.notes:
        print(f"note: {line}", file=sys.stderr)
    for line in out.problems:
        print(f"not converted: {line}", file=sys.stderr)
    if out.problems:
        count = len(out.problems)
        print(f"beatd import-crontab: {len(out.entries)} converted, {count} not", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


CRONTAB_SPLIT = "# --- worker.yaml: the worker's file is everything below this line ---"


def _crontabs(files: Sequence[str]) -> list[tuple[str, str]]:
    if not files:
        try:
            done = subprocess.run(
                ["crontab", "-l"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BeatdError(f"crontab -l: {exc}") from None
        if done.returncode != 0:
            raise BeatdError(f"crontab -l: {done.stderr.strip() or done.returncode}")
        return [("(crontab -l)", done.stdout)]
    found = []
    for name in files:
        try:
            found.append((name, Path(name).read_text(encoding="utf-8", errors="replace")))
        except OSError as exc:
            raise BeatdError(f"{name}: {exc.strerror or exc}") from None
    return found


def _local_zone() -> str:
    """This machine's zone name, which cron runs in: $TZ, /etc/timezone, /etc/localtime."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    with contextlib.suppress(OSError):
        candidates.append(str(Path("/etc/localtime").readlink()).partition("zoneinfo/")[2])
    for name in candidates:
        with contextlib.suppress(ValueError):
            if name:
                values.parse_zone(name)
                return name
    return "UTC"


def _write(path: Path, content: str) -> None:
    try:
        path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise BeatdError(f"{path}: {exc.strerror or exc}") from None


def _add_shell(commands: Any) -> None:
    text = "Print a shell completion script (jobs and tasks are completed from the file)."
    completion = commands.add_parser("completion", help=text, description=text)
    completion.set_defaults(func=_completion)
    completion.add_argument("shell", choices=("bash", "zsh"))
    text = "Print this manual page (roff): `beatd man | man -l -`."
    commands.add_parser("man", help=text, description=text).set_defaults(func=_man)
    # Hidden (no help): what the completion scripts call for job and task names.
    complete = commands.add_parser("_complete")
    complete.set_defaults(func=_complete)
    complete.add_argument("what", choices=("jobs", "tasks"))
    complete.add_argument("-c", "--config", default=os.environ.get("BEATD_CONFIG", DEFAULT_CONFIG))


def _completion(args: argparse.Namespace) -> int:
    from beatd import shell  # noqa: PLC0415

    script = shell.bash(_parser()) if args.shell == "bash" else shell.zsh(_parser())
    sys.stdout.write(script)
    return EXIT_OK


def _man(args: argparse.Namespace) -> int:
    from beatd import shell  # noqa: PLC0415

    sys.stdout.write(shell.man(_parser(), __version__, MAN_SECTIONS))
    return EXIT_OK


MAN_SECTIONS = {
    "exit status": """0 ok; 1 invalid input (a bad file, an unknown job, an unreachable broker for
        trigger, an entry import-celery or import-crontab could not convert); 2 usage; 78
        (EX_CONFIG) when a daemon cannot start from its file.""",
    "environment": """BEATD_CONFIG: the file for -c (default /etc/beatd/beatd.yaml).

        BEATD_BROKER_URL: the broker URL, which wins over the file's broker.url.

        BEATD_LOG_LEVEL: DEBUG, INFO (default), WARNING or ERROR.""",
    "files": """/etc/beatd/beatd.yaml: the schedule. /var/lib/beatd/state.db: the scheduler's
        state under systemd.""",
    "see also": """systemctl(1), crontab(5), and README.md of beatd for the file's keys.""",
}


def _complete(args: argparse.Namespace) -> int:
    """Job or task names from the file, for the completion scripts: fast, and silent on any
    problem (a half-edited file completes nothing rather than printing errors at a prompt)."""
    import yaml  # noqa: PLC0415

    try:
        with Path(args.config).open(encoding="utf-8") as file:
            data = yaml.load(file, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
        names = data.get(args.what) or {}
        print("\n".join(str(name) for name in names if " " not in str(name)))
    except Exception:  # noqa: S110  (see the docstring)
        pass
    return EXIT_OK
