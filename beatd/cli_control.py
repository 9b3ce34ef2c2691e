"""`beatd status`, `beatd pause JOB` and `beatd resume JOB`: asking the scheduler running on
this host (runtime.control), and what to do when none answers."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beatd.core.config import read_config
from beatd.core.errors import BeatdError, ConfigError
from beatd.runtime import control

if TYPE_CHECKING:
    from beatd.history import Outcomes

EXIT_OK, EXIT_INVALID, EXIT_NOT_RUNNING = 0, 1, 3  # 3: as `systemctl status` for inactive

Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add(command: Command) -> None:
    status = command("status", _status, "Ask the scheduler running on this host how it is.")
    status.add_argument("--json", action="store_true", help="the answer as one JSON object")
    pause = command("pause", _pause, "Publish nothing of JOB until `beatd resume JOB`.")
    pause.add_argument("job", metavar="JOB")
    pause.add_argument("--note", default="", help="why (shown by `beatd status`)")
    resume = command("resume", _resume, "Publish JOB again; its misfire policy decides the rest.")
    resume.add_argument("job", metavar="JOB")


def _state(path: str) -> tuple[Path, set[str] | None]:
    """The state file the daemon of this file uses, and the file's job names (None if the file
    cannot be read now: the daemon may still run an older, valid version of it)."""
    try:
        config = read_config(path, os.environ)
    except ConfigError:
        return control.SYSTEMD_STATE, None
    return config.state, {job.name for job in config.jobs}


def _status(args: argparse.Namespace) -> int:
    state, _ = _state(args.config)
    answer = control.ask(state, {"command": "status"})
    if answer is None:
        print(
            f"beatd run is not running on this host (no answer at {control.socket_path(state)})",
            file=sys.stderr,
        )
        return EXIT_NOT_RUNNING
    if "error" in answer:
        raise BeatdError(f"beatd run: {answer['error']}")
    outcomes = _outcomes(args.config)
    if outcomes is not None:  # the run history's word, beside the scheduler's
        answer["history"] = outcomes.note
        if (last := outcomes.by_job) is not None:
            for job in answer["jobs"]:
                job["last_outcome"] = last.get(job["job"])
    if args.json:
        print(json.dumps(answer, indent=1))
        return EXIT_OK
    print(_table(answer))
    return EXIT_OK


def _outcomes(path: str) -> Outcomes | None:
    from beatd import history  # noqa: PLC0415  (pika: not for pause and resume)

    try:
        config = read_config(path, os.environ)
    except ConfigError:
        return None  # the daemon runs an older, valid version: no `history:` to go by
    return history.last_outcomes(config)


def _table(answer: dict[str, Any]) -> str:
    differs = " (the file on disk differs: reload to run it)" if answer["file_differs"] else ""
    lines = [
        f"beatd run (pid {answer['pid']}): broker {answer['broker']}; {answer['role']}",
        f"schedule: {answer['file']}{differs}; state: {answer['state']}",
        *([answer["history"]] if "history" in answer else []),
        "",
    ]
    known = any("last_outcome" in job for job in answer["jobs"])
    outcome = ("LAST OUTCOME",) if known else ()
    rows = [("JOB", "NEXT", "LAST SLOT", "PUBLISHED", "MISSED", "UNROUTABLE", *outcome, "PAUSED")]
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
                *((job["last_outcome"] or "-",) if outcome else ()),
                "-" if paused is None else f"paused: {paused}" if paused else "paused",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
              for row in rows]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def _pause(args: argparse.Namespace) -> int:
    return _change(args, "pause", note=args.note)


def _resume(args: argparse.Namespace) -> int:
    return _change(args, "resume", note="")


def _change(args: argparse.Namespace, command: str, note: str) -> int:
    state, names = _state(args.config)
    answer = control.ask(state, {"command": command, "job": args.job, "note": note})
    if answer is not None:
        if "error" in answer:
            raise BeatdError(f"beatd run: {answer['error']}")
        print(f"{args.job}: {command}d in the running scheduler")
        if "warning" in answer:
            print(f"warning: {answer['warning']}", file=sys.stderr)
        return EXIT_OK
    if names is not None and args.job not in names:
        raise BeatdError(f"{args.config}: no job named {args.job!r}")
    pauses = control.read_pauses(state)
    if command == "pause":
        pauses[args.job] = note
    else:
        pauses.pop(args.job, None)
    control.write_pauses(state, pauses)
    print(f"{args.job}: {command}d; beatd run is not running here, it takes effect at its start")
    return EXIT_OK
