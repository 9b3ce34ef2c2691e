"""`beatd status`, `beatd pause JOB` and `beatd resume JOB`: asking the running schedulers
through the broker (from any host, every instance of an HA group), else the one on this host
through its socket (runtime.control), and what to do when none answers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from beatd.core import control as requests
from beatd.core.config import Config, read_config
from beatd.core.durations import parse_duration
from beatd.core.errors import BeatdError, BrokerError, ConfigError
from beatd.runtime import control
from beatd.runtime.clock import system_clock

EXIT_OK, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 3  # 3: as `systemctl status` for inactive
WAIT_DEFAULT, WAIT_MAX = timedelta(seconds=1), timedelta(seconds=30)

Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add(command: Command) -> None:
    status = command("status", _status, "Ask the running scheduler(s) how they are.")
    status.add_argument("--json", action="store_true", help="the answers as one JSON object")
    status.add_argument(
        "--socket",
        action="store_true",
        help="ask only the scheduler on this host, through its socket (every job is listed)",
    )
    pause = command("pause", _pause, "Publish nothing of JOB until `beatd resume JOB`.")
    pause.add_argument("job", metavar="JOB")
    pause.add_argument("--note", default="", help="why (shown by `beatd status`)")
    resume = command("resume", _resume, "Publish JOB again; its misfire policy decides the rest.")
    resume.add_argument("job", metavar="JOB")
    for sub in (pause, resume):
        sub.set_defaults(socket=False)
    for sub in (status, pause, resume):
        sub.add_argument(
            "--wait",
            type=_wait,
            default=WAIT_DEFAULT,
            metavar="DURATION",
            help="how long to collect answers through the broker (default 1s, at most 30s)",
        )


def _wait(text: str) -> timedelta:
    try:
        wait = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if wait > WAIT_MAX:
        raise argparse.ArgumentTypeError(f"at most 30s, got {text!r}")
    return wait


def _config(path: str) -> Config | None:
    """The file as it is now (None if it cannot be read: the daemon may still run an older,
    valid version of it, and its socket on this host can still answer)."""
    try:
        return read_config(path, os.environ)
    except ConfigError:
        return None


def _ask(
    args: argparse.Namespace, config: Config | None, request: requests.Request
) -> tuple[list[dict[str, Any]], Path, str]:
    """The answers, the state file whose socket was asked, and where nobody answered: first
    through the broker, then, if none came, on this host's socket (the broker may be away)."""
    state = config.state if config is not None else control.SYSTEMD_STATE
    tried = "not asked through the broker (the file cannot be read)"
    if args.socket:
        tried = "not asked through the broker (--socket)"
    elif config is not None:
        exchange, key = config.broker.control_exchange, requests.routing_key(config)
        try:
            answers = control.ask_broker(
                config, request, now=system_clock(), wait_s=args.wait.total_seconds()
            )
        except BrokerError as exc:
            tried = f"unreachable through the broker ({exc})"
        else:
            if answers:
                return answers, state, ""
            tried = f"not answering on the broker (exchange {exchange}, key {key})"
    answer = control.ask(state, request.as_dict())
    if answer is not None:
        return [{**answer, "via": "socket"}], state, "" if args.socket else tried
    return [], state, f"{tried}, nor on this host (no answer at {control.socket_path(state)})"


def _request(command: str, job: str = "", note: str = "") -> requests.Request:
    try:
        return requests.Request(command, job, note)
    except ValueError as exc:
        raise BeatdError(f"{command}: {exc}") from None


def _status(args: argparse.Namespace) -> int:
    config = _config(args.config)
    answers, _, nobody = _ask(args, config, _request("status"))
    if not answers:
        print(f"beatd run is {nobody}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    failed = [a["error"] for a in answers if "error" in a]
    if failed:
        raise BeatdError(f"beatd run: {failed[0]}")
    # The leader's table first: it is the one publishing; standbys only follow it.
    answers.sort(key=lambda a: not a.get("leading", True))
    leader, others = answers[0], answers[1:]
    if args.json:
        print(json.dumps({**leader, "others": others}, indent=1))
        return EXIT_OK
    if nobody:
        print(f"note: beatd run is {nobody}; this host's answered on its socket", file=sys.stderr)
    print(_table(leader))
    if leader.get("jobs_left_out"):
        print(f"... and {leader['jobs_left_out']} more jobs, not sent through the broker "
              "(`beatd status --socket` on the scheduler's host lists all)")  # fmt: skip
    if others:
        print("\nalso answering (their tables: --json):")
        for other in others:
            differs = "; its file differs: reload it" if other.get("file_differs") else ""
            print(f"  {_who(other)}: broker {other['broker']}; {other['role']}{differs}")
    return EXIT_OK


def _who(answer: dict[str, Any]) -> str:
    return f"{answer.get('host', 'this host')} (pid {answer['pid']})"


def _table(answer: dict[str, Any]) -> str:
    differs = " (the file on disk differs: reload to run it)" if answer["file_differs"] else ""
    lines = [
        f"beatd run on {_who(answer)}: broker {answer['broker']}; {answer['role']}",
        f"schedule: {answer['file']}{differs}; state: {answer['state']}",
        "",
    ]
    rows = [("JOB", "NEXT", "LAST SLOT", "PUBLISHED", "MISSED", "UNROUTABLE", "PAUSED")]
    for job in answer["jobs"]:
        paused = job["paused"]
        rows.append(
            (
                job["job"],
                job["next"] or ("-" if job["enabled"] else "disabled"),
                job["last_slot"] or "-",
                str(job["published"]),
                str(job["missed"]),
                str(job["unroutable"]),
                "-" if paused is None else f"paused: {paused}" if paused else "paused",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
              for row in rows]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def _pause(args: argparse.Namespace) -> int:
    return _change(args, _request("pause", args.job, args.note))


def _resume(args: argparse.Namespace) -> int:
    return _change(args, _request("resume", args.job))


def _change(args: argparse.Namespace, request: requests.Request) -> int:
    """Pause or resume in every scheduler that answers (each keeps its own paused.json); with
    none answering, write this host's paused.json for the next start."""
    config = _config(args.config)
    answers, state, nobody = _ask(args, config, request)
    done = request.command + "d"
    confirmed = [a for a in answers if "error" not in a]
    for answer in answers:
        if "error" in answer:
            print(f"{_who(answer)}: {answer['error']}", file=sys.stderr)
        if "warning" in answer:
            print(f"{_who(answer)}: warning: {answer['warning']}", file=sys.stderr)
    if confirmed:
        who = ", ".join(_who(a) for a in confirmed)
        print(f"{args.job}: {done} in {len(confirmed)} running scheduler(s): {who}")
        return EXIT_OK
    if answers:
        raise BeatdError(f"{args.job}: not {done}: no running scheduler took it")
    if config is not None and config.job(args.job) is None:
        raise BeatdError(f"{args.config}: no job named {args.job!r}")
    pauses = control.read_pauses(state)
    if request.command == "pause":
        pauses[args.job] = request.note
    else:
        pauses.pop(args.job, None)
    control.write_pauses(state, pauses)
    print(f"{args.job}: {done} in {control.pauses_path(state)}: it takes effect when beatd run "
          f"starts on this host (beatd run is {nobody})")  # fmt: skip
    return EXIT_OK
