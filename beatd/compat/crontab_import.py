"""`beatd import-crontab`: a crontab as a beatd schedule file and a worker file (pure: text in,
text out; reading the crontab and finding the machine's zone is the CLI's job).

Follows crontab(5) as Vixie/Debian cron and cronie read it: environment lines apply to the
entries after them, `CRON_TZ` (cronie) and `TZ` set the zone of the entries after them, an
unescaped `%` starts the command's stdin, and system crontabs (/etc/crontab, /etc/cron.d/*)
have a user field after the five time fields. Nothing is dropped silently: a line that cannot
be converted is a problem naming file:line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from beatd.core import cron, values
from beatd.core.errors import CronError

TASK_PREFIX = "crontab."
WORKER_QUEUE = "beatd.crontab"
DEFAULT_SHELL = "/bin/sh"
MAX_NAME = 60  # characters of a job name taken from a command
_ENV_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
# Words that only wrap the program a line runs: the job is named for what they run.
_WRAPPERS = frozenset(
    ("nice", "ionice", "nohup", "exec", "chronic", "env", "sudo", "timeout", "time", "sh", "bash")
)
_WRAPPER_ARG = re.compile(r"^\d+(\.\d+)?[smhd]?$")
_NAME_JUNK = re.compile(r"[^\w.-]+")
# Not passed to the task: the schedule's zone, cron's mailer, and the shell (the argv[0]).
_NOT_ENV = frozenset(("CRON_TZ", "MAILTO", "MAILFROM", "SHELL", "CONTENT_TYPE"))


@dataclass(frozen=True, slots=True)
class Entry:
    """One crontab line that runs a command."""

    where: str  # file:line
    line: str
    expression: str
    zone: str
    command: str
    shell: str
    env: Mapping[str, str]
    user: str | None


@dataclass
class Conversion:
    """The two files, what could not be converted (each names file:line) and notes."""

    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse(text: str, path: str, zone: str, *, system: bool, out: Conversion) -> None:
    """Add the entries of one crontab (zone: the one its lines run in without CRON_TZ/TZ)."""
    env: dict[str, str] = {}
    mail_noted = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        assignment = _ENV_LINE.match(raw)
        if assignment and not line.startswith(("*", "@")) and not line[0].isdigit():
            name, value = assignment.group(1), _unquote(assignment.group(2))
            env[name] = value
            if name in ("CRON_TZ", "TZ"):
                try:
                    values.parse_zone(value)
                except ValueError as exc:
                    out.problems.append(f"{where}: {name}: {exc}")
            if name in ("MAILTO", "MAILFROM") and not mail_noted:
                mail_noted = True
                out.notes.append(
                    f"{where}: {name}={value}: beatd mails nothing; the worker logs each "
                    "command's output and publishes a `failed` event for a non-zero exit"
                )
            continue
        try:
            out.entries.append(_entry(line, where, zone, env, system))
        except ValueError as exc:
            out.problems.append(f"{where}: {exc}")


def _unquote(value: str) -> str:
    # crontab(5): the value may be in matching single or double quotes, to keep blanks.
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _entry(line: str, where: str, zone: str, env: Mapping[str, str], system: bool) -> Entry:
    words = line.split(None, 1)
    if line.startswith("@"):
        macro, rest = words[0], (words[1] if len(words) > 1 else "")
        if macro.lower() == "@reboot":
            raise ValueError(
                "@reboot runs when cron starts, which is not a schedule: run it from a "
                "systemd unit (WantedBy=multi-user.target) instead"
            )
        expression = macro.lower()
    else:
        fields = line.split(None, 5)
        if len(fields) < 6:
            raise ValueError(f"{line!r} is not five time fields and a command")
        expression, rest = " ".join(fields[:5]), fields[5]
    user = None
    if system:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise ValueError("a system crontab line needs a user field before the command")
        user, rest = parts
    zone_name = env.get("CRON_TZ") or env.get("TZ") or zone
    try:
        cron.parse(expression)
    except CronError as exc:
        raise ValueError(f"{expression!r}: {exc}") from None
    command = _command(rest.strip())
    if not command:
        raise ValueError("no command")
    task_env = {k: v for k, v in env.items() if k not in _NOT_ENV}
    shell = env.get("SHELL") or DEFAULT_SHELL
    return Entry(where, line, expression, zone_name, command, shell, task_env, user)


def _command(text: str) -> str:
    """The command as cron hands it to the shell: `\\%` becomes `%`; an unescaped `%` ends the
    command and starts its stdin, which a beatd task cannot be given, so it is refused."""
    result: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            result.append(ch if ch == "%" else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            raise ValueError(
                "an unescaped % makes the rest of the line the command's stdin, which a beatd "
                "task cannot be given: write it as `printf 'line1\\nline2\\n' | command`, or "
                "escape it as \\% if it is a literal % (as in `date +\\%F`)"
            )
        else:
            result.append(ch)
    if escaped:
        result.append("\\")
    return "".join(result)


def job_name(command: str, taken: set[str]) -> str:
    """A valid, unique job name for a command: the program it runs (or the directory that
    run-parts runs), so `beatd list` reads like the crontab did."""
    words = command.replace("&&", " && ").replace(";", " ; ").split()
    if "run-parts" in words:
        targets = [w for w in words[words.index("run-parts") + 1 :] if not w.startswith("-")]
        words = [w.strip("()") for w in targets[:1]]
    while len(words) >= 2 and words[0] == "cd":
        rest = [i for i, w in enumerate(words) if w in ("&&", ";")]
        words = words[rest[0] + 1 :] if rest else []
    picked = ""
    for word in words:
        if ("=" in word and not word.startswith(("/", "."))) or word in _WRAPPERS:
            continue
        if word.startswith("-") or word in ("(", "{") or _WRAPPER_ARG.match(word):
            continue  # an option, or the argument of one (`nice -n 10`, `timeout 5m`)
        picked = word.rstrip("/").rsplit("/", 1)[-1]
        break
    base = _NAME_JUNK.sub("-", picked).strip("-.")[:MAX_NAME] or "job"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate


def render(out: Conversion, source: str, zone: str) -> tuple[str, str]:
    """The schedule file and the worker file for the entries, in crontab order."""
    taken: set[str] = set()
    named = [(job_name(entry.command, taken), entry) for entry in out.entries]
    schedule = [
        f"# Converted from crontab by `beatd import-crontab {source}`.",
        "# Each job's task runs its crontab line through the shell: see the worker file.",
        f"timezone: {zone}",
        "defaults:",
        "  misfire: skip   # cron does not run what it missed while it was down",
        "jobs:" if named else "jobs: {}",
    ]
    worker = [
        f"# The tasks of the jobs converted by `beatd import-crontab {source}`.",
        "# Each runs its crontab line as a shell string, exactly as cron did.",
        "worker:",
        f"  queue: {WORKER_QUEUE}",
        f'  bindings: ["{TASK_PREFIX}#"]',
        "tasks:" if named else "tasks: {}",
    ]
    for name, entry in named:
        task = TASK_PREFIX + name
        # Quoted: a program named `true`, `yes` or `10` is not a YAML boolean or number here.
        schedule += [
            f"  {json.dumps(name)}:",
            f"    # {entry.where}: {entry.line}",
            f"    cron: {json.dumps(entry.expression)}",
            f"    task: {json.dumps(task)}",
        ]
        if entry.zone != zone:
            schedule.append(f"    timezone: {entry.zone}")
        worker += [
            f"  {json.dumps(task)}:",
            f"    # {entry.where}",
            f"    command: {_flow([entry.shell, '-c', entry.command])}",
        ]
        if entry.env:
            worker.append(f"    env: {_flow(dict(entry.env))}")
        if entry.user is not None:
            worker.append(f"    user: {json.dumps(entry.user)}")
    return "\n".join(schedule) + "\n", "\n".join(worker) + "\n"


def _flow(value: Iterable[str] | Mapping[str, str]) -> str:
    # JSON is YAML's flow style, and its escapes are YAML's double-quoted escapes.
    return json.dumps(value if isinstance(value, Mapping) else list(value))
