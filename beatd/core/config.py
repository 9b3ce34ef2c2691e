"""The schedule file: YAML in, validated immutable records out.

`parse_config` is pure (text and environment in, Config out) and collects every problem in
the file before raising one ConfigError; `read_config` is the thin I/O wrapper around it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import operator
import re
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

from beatd.core import commands, cron, durations, textfile, values
from beatd.core.commands import ArgsPolicy
from beatd.core.describe import describe
from beatd.core.errors import ConfigError, CronError, Problem
from beatd.core.schedules import At, Cron, Interval, Schedule
from beatd.core.signing import Signing, key_from_text
from beatd.core.yamlfile import YamlError, YList, YMap, dotted, parse

T = TypeVar("T")

DEFAULT_BROKER_URL = "amqp://guest:guest@localhost:5672/%2F"
SCHEDULE_KINDS = ("cron", "every", "at")
# \Z, not $: `$` also matches before a final newline, and "evil\n" made every message of its
# job invalid JSON. \w has no control characters. Names are in message ids (AMQP shortstrs).
JOB_NAME = re.compile(r"[\w.:/-]{1,200}\Z")
JOB_NAME_BYTES = 200
MAX_CRON_CHARS = 1000


def valid_job_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(JOB_NAME.match(name))
        and (name.isascii() or len(name.encode()) <= JOB_NAME_BYTES)  # 200 characters at most
    )


class Misfire(Enum):
    """What to do with slots that were missed (more than `grace` late)."""

    ONCE = "once"  # publish only the newest missed slot
    SKIP = "skip"  # publish none
    ALL = "all"  # publish each, oldest first (bounded)


class MessageFormat(Enum):
    BEATD = "beatd"
    CELERY = "celery"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """`broker.tls`: files for amqps:// connections (paths resolved beside the file)."""

    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None  # a client certificate, for brokers that require one
    key_file: Path | None = None  # its private key, unless cert_file holds it too
    verify: bool = True  # false: no certificate or hostname check (logged loudly)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    # Not in repr: a URL may carry a password. redacted_urls() is for showing.
    urls: tuple[str, ...] = field(default=(DEFAULT_BROKER_URL,), repr=False)
    exchange: str = "beatd"
    exchange_type: str = "topic"
    heartbeat: timedelta = timedelta(seconds=30)
    password: str | None = field(default=None, repr=False)  # from password_file
    tls: TlsConfig = TlsConfig()  # used for amqps:// URLs
    control_exchange: str = "beatd.control"  # beatd status/pause/resume (core.control)

    def redacted_urls(self) -> tuple[str, ...]:
        return tuple(values.redact(url) for url in self.urls)


class Job(NamedTuple):
    """One scheduled job, fully resolved (defaults merged, schedule built).

    A NamedTuple rather than a frozen dataclass: as immutable, and built in 0.4 us, not 2.8
    (a frozen dataclass sets each of its 21 fields through object.__setattr__): 100k jobs,
    0.25 s of every start, check and list."""

    name: str
    task: str
    kind: str  # "cron", "every" or "at"
    spec: str  # the schedule as written
    schedule: Schedule
    timezone: tzinfo
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = MappingProxyType({})
    routing_key: str | None = None  # None: the task name (or Celery's queue, for that format)
    priority: int | None = None
    expires: timedelta | None = None
    jitter: timedelta = timedelta(0)
    misfire: Misfire = Misfire.ONCE
    grace: timedelta = timedelta(seconds=60)
    enabled: bool = True
    format: MessageFormat = MessageFormat.BEATD
    queue: str | None = None
    exchange: str | None = None
    line: int = 0
    # Identifies what decides the slots; when it changes, nothing before now counts as missed.
    fingerprint: str = ""

    @property
    def expression(self) -> cron.CronExpr | None:
        return self.schedule.cron.expr if isinstance(self.schedule, Cron) else None


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """A task an executor will run: an argv (`command`) or a Python callable (`call`)."""

    name: str
    command: tuple[str, ...] | None = None
    call: str | None = None
    timeout: timedelta | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user: str | None = None
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=10)
    args: ArgsPolicy = field(default_factory=ArgsPolicy)
    line: int = 0  # where it is defined, for the worker's startup errors


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    queue: str = "beatd.tasks"
    queue_type: str = "classic"
    bindings: tuple[str, ...] = ("#",)
    concurrency: int = 4
    dead_letter_exchange: str = "beatd.dlx"
    dead_letter_queue: str = "beatd.dead"
    events_exchange: str = "beatd.events"
    dedupe_size: int = 100_000
    max_body: int = 1024 * 1024  # bytes; a bigger message is dead-lettered unparsed
    state: Path | None = None  # default: beside the scheduler's, worker-<queue>.db


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """The run history: a stream queue bound to the events exchange (see beatd.history)."""

    exchange: str = "beatd.events"  # where the scheduler and the workers publish events
    stream: str = "beatd.history"
    max_age: str = "30D"  # RabbitMQ's x-max-age: a number and Y, M, D, h, m or s


@dataclass(frozen=True, slots=True)
class HaConfig:
    """High availability: instances sharing a file and a broker elect one leader."""

    name: str = "beatd"  # names the lock and progress queues: beatd.ha.<name>.*
    poll: timedelta = timedelta(seconds=1)  # how often a standby asks for the lock
    queue_type: str = "classic"  # of the progress queue: classic or quorum

    @property
    def lock_queue(self) -> str:
        return f"beatd.ha.{self.name}.lock"

    @property
    def progress_queue(self) -> str:
        return f"beatd.ha.{self.name}.progress"

    @property
    def token_queue(self) -> str:
        return f"beatd.ha.{self.name}.token"


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    timezone: tzinfo = UTC
    broker: BrokerConfig = BrokerConfig()
    state: Path = Path("state.db")
    jobs: tuple[Job, ...] = ()
    worker: WorkerConfig = WorkerConfig()
    tasks: Mapping[str, TaskConfig] = field(default_factory=lambda: MappingProxyType({}))
    has_worker_section: bool = False
    signing: Signing | None = None  # None: runs are published unsigned, accepted unsigned
    metrics: tuple[str, int] | None = None  # (host, port) of the Prometheus endpoint; None: off
    history: HistoryConfig | None = None  # None: the scheduler publishes no events
    ha: HaConfig | None = None  # None: one instance, no election (the default)

    def job(self, name: str) -> Job | None:
        return next((job for job in self.jobs if job.name == name), None)


def read_config(path: str | Path, env: Mapping[str, str]) -> Config:
    """Read and validate a schedule file; raise ConfigError naming every problem."""
    name = str(path)
    try:
        text = textfile.read_text(path, textfile.MAX_CONFIG_BYTES)
    except textfile.Unreadable as exc:
        raise ConfigError([Problem(name, exc.line, str(exc))]) from None
    return parse_config(text, name, env, read_secret=_read_secret)


def _read_secret(path: str) -> str:
    try:
        return textfile.read_text(path, textfile.MAX_SECRET_BYTES).strip()
    except textfile.Unreadable as exc:
        raise ValueError(f"{path}: {exc}") from None


_MEMO_KEPT = 4096  # conversions of strings _Reader.cached keeps
_MISSING = object()


class _Reader:
    """Collects problems while converting one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.memo: dict[tuple[object, str], object] = {}  # see cached()
        # (kind, as written, zone): (schedule, spec, fingerprint) that no job's name changes
        self.schedules: dict[tuple[str, str, tzinfo] | None, tuple[Schedule, str, str]] = {}

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def section(
        self, data: object, where: str, allowed: Collection[str], line: int | None
    ) -> YMap | None:
        """Check a mapping's keys; None (problem recorded) if it is not a mapping."""
        if not isinstance(data, YMap):
            self.problem(
                line, f"{where}must be a mapping of keys to values, got {values.kind(data)}"
            )
            return None
        for key, dup_line, first in data.duplicates:
            self.problem(dup_line, f"{where}duplicate key {key!r} (first at line {first})")
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key)[:100], allowed, n=1)
                also = (
                    f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(allowed)})"
                )
                self.problem(data.lines[key], f"{where}unknown key {key!r}{also}")
        return data

    def cached(
        self, data: YMap, key: str, where: str, convert: Callable[[Any], T], default: T
    ) -> T:
        """get(), remembering what a plain value converts to: 100k jobs have a few hundred
        distinct `every`, `task` or `jitter` texts. convert must be pure, its result immutable."""
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return default
        memo_key = (convert, value) if type(value) is str else None
        found = self.memo.get(memo_key, _MISSING) if memo_key is not None else _MISSING
        if found is not _MISSING:
            return cast(T, found)
        try:
            result = convert(value)
        except ValueError as exc:
            self.problem(data.lines[key], f"{where}{key}: {exc}")
            return default
        if memo_key is not None and len(self.memo) < _MEMO_KEPT:
            self.memo[memo_key] = result
        return result

    def get(self, data: YMap, key: str, where: str, convert: Callable[[Any], T], default: T) -> T:
        """Convert data[key]; on a bad value record the problem and return the default (the
        file is rejected as a whole once every problem is collected, so it is never used)."""
        if key not in data:
            return default
        try:
            return convert(data[key])
        except ValueError as exc:
            self.problem(data.lines[key], f"{where}{key}: {exc}")
            return default


def parse_config(
    text: str,
    file: str,
    env: Mapping[str, str],
    read_secret: Callable[[str], str] | None = None,
) -> Config:
    """Validate a schedule file's text; raise ConfigError naming every problem.

    read_secret reads the password, TLS and key files named in it (read_config passes one);
    without it none is read or checked, and a signing: section yields no keys (signing=None).
    """
    try:
        return _parse_config(text, file, env, read_secret)
    except ConfigError:
        raise
    # The last resort, so that a bug cannot crash-loop a daemon on a reload or turn `check`
    # into a traceback; every input known to get here is fixed at its cause and tested.
    except Exception as exc:
        message = f"cannot be read (a bug in beatd, please report it): {type(exc).__name__}"
        raise ConfigError([Problem(file, None, f"{message}: {exc}")]) from exc


def _parse_config(
    text: str,
    file: str,
    env: Mapping[str, str],
    read_secret: Callable[[str], str] | None,
) -> Config:
    reader = _Reader(file)
    stream = _JobStream(file)
    try:
        data = parse(text, file, _where, stream=("jobs", stream))
        if isinstance(data, YMap) and not stream.settled_by(data):
            data = parse(text, file, _where)  # what the jobs depend on came after them: again
    except YamlError as exc:
        raise ConfigError(exc.problems) from None
    if data is None:
        raise ConfigError([Problem(file, None, "file is empty (expected broker, jobs, ...)")])
    top = reader.section(data, "", _TOP_KEYS, 1)
    if top is None:
        raise ConfigError(reader.problems)
    zone = reader.get(top, "timezone", "", values.parse_zone, _UTC)
    defaults = _defaults(reader, top, zone)
    broker = _broker(reader, top, env, read_secret)
    config = Config(
        path=file,
        timezone=zone,
        broker=broker,
        state=_state_path(reader, top, env),
        jobs=_jobs(reader, top, defaults, broker.exchange_type),
        worker=_worker(reader, top),
        tasks=MappingProxyType(_tasks(reader, top)),
        has_worker_section="worker" in top or "tasks" in top,
        signing=_signing(reader, top, env, read_secret),
        metrics=_metrics(reader, top),
        history=_history(reader, top),
        ha=_ha(reader, top),
    )
    if reader.problems:  # in file order; problems without a line (the environment) first
        raise ConfigError(sorted(reader.problems, key=lambda p: p.line or 0))
    return config


def _where(path: tuple[Any, ...]) -> str:
    """`job 'a': args[0]: ` for a bad value at jobs.a.args[0], as the other problems say it."""
    if len(path) >= 2 and path[0] in ("jobs", "tasks"):
        prefix, rest = f"{'job' if path[0] == 'jobs' else 'task'} {path[1]!r}: ", path[2:]
    elif len(path) >= 2 and path[0] in ("broker", "worker", "defaults"):
        prefix, rest = f"{path[0]}: ", path[1:]
    else:
        prefix, rest = "", path
    return prefix + dotted(rest)


_UTC: tzinfo = UTC
_TOP_KEYS = (
    "timezone", "broker", "state", "defaults", "jobs", "worker", "tasks", "signing", "metrics",
    "history", "ha",
)  # fmt: skip
_BROKER_KEYS = (
    "url", "exchange", "exchange_type", "password_file", "heartbeat", "tls", "control_exchange"
)  # fmt: skip


def _metrics(reader: _Reader, top: YMap) -> tuple[str, int] | None:
    if "metrics" not in top:
        return None
    data = reader.section(top["metrics"], "metrics: ", ("listen",), top.lines["metrics"])
    if data is None:
        return None
    return reader.get(data, "listen", "metrics: ", values.listen_address, ("127.0.0.1", 9464))


def _history(reader: _Reader, top: YMap) -> HistoryConfig | None:
    if "history" not in top:
        return None
    where, default = "history: ", HistoryConfig()
    data = reader.section(
        top["history"], where, ("exchange", "stream", "max_age"), top.lines["history"]
    )
    if data is None:
        return None
    return HistoryConfig(
        exchange=reader.get(data, "exchange", where, values.exchange_name, default.exchange),
        stream=reader.get(data, "stream", where, values.text, default.stream),
        max_age=reader.get(data, "max_age", where, values.max_age, default.max_age),
    )


def _broker(
    reader: _Reader,
    top: YMap,
    env: Mapping[str, str],
    read_secret: Callable[[str], str] | None,
) -> BrokerConfig:
    where = "broker: "
    data = reader.section(top.get("broker", _EMPTY), where, _BROKER_KEYS, top.lines.get("broker"))
    if data is None:
        return BrokerConfig()
    urls = reader.get(data, "url", where, values.urls, _BROKER.urls)
    if env.get("BEATD_BROKER_URL"):  # the environment wins, so secrets can stay out of the file
        try:
            urls = values.urls(env["BEATD_BROKER_URL"].split())
        except ValueError as exc:
            reader.problem(None, f"BEATD_BROKER_URL: {exc}")
    secret_file = reader.get(data, "password_file", where, values.path, None)
    password = None
    if secret_file is not None and read_secret is not None:
        try:
            password = read_secret(secret_file)
        except ValueError as exc:
            reader.problem(data.lines["password_file"], f"{where}password_file: {exc}")
    exchange = reader.get(data, "exchange", where, values.declared_exchange, "beatd")
    exchange_type = reader.get(data, "exchange_type", where, _EXCHANGE_TYPES, "topic")
    mismatch = values.exchange_type_problem(exchange, exchange_type)
    if mismatch:
        reader.problem(data.lines.get("exchange_type", data.lines["exchange"]), where + mismatch)
    tls = _tls(reader, data, env, read_secret)
    if "tls" in data and not any(url.startswith("amqps://") for url in urls):
        reader.problem(data.lines["tls"], f"{where}tls: given, but no broker URL is amqps://")
    return BrokerConfig(
        urls=urls,
        exchange=exchange,
        exchange_type=exchange_type,
        heartbeat=reader.get(data, "heartbeat", where, values.duration, _BROKER.heartbeat),
        password=password,
        tls=tls,
        control_exchange=reader.get(
            data, "control_exchange", where, values.declared_exchange, _BROKER.control_exchange
        ),
    )


_TLS_KEYS = ("ca_file", "cert_file", "key_file", "verify")


def _tls(
    reader: _Reader,
    broker: YMap,
    env: Mapping[str, str],
    read_secret: Callable[[str], str] | None,
) -> TlsConfig:
    where = "broker: tls: "
    data = reader.section(broker.get("tls", _EMPTY), where, _TLS_KEYS, broker.lines.get("tls"))
    if data is None:
        return TlsConfig()
    files = {
        key: _file(reader, data, key, where, env, read_secret)
        for key in ("ca_file", "cert_file", "key_file")
    }
    if "key_file" in data and "cert_file" not in data:
        reader.problem(data.lines["key_file"], f"{where}key_file: given without cert_file")
    return TlsConfig(**files, verify=reader.get(data, "verify", where, values.boolean, True))


def _file(
    reader: _Reader,
    data: YMap,
    key: str,
    where: str,
    env: Mapping[str, str],
    read: Callable[[str], str] | None,
) -> Path | None:
    """A file named in the config: beside the config file if relative, `$CREDENTIALS_DIRECTORY`
    expanded (systemd's LoadCredential=), and proven readable when read is given."""
    name = reader.get(data, key, where, values.text, None)
    if name is None:
        return None
    prefix = "$CREDENTIALS_DIRECTORY/"
    if name.startswith(prefix):
        if not env.get("CREDENTIALS_DIRECTORY"):
            message = "$CREDENTIALS_DIRECTORY is not set (systemd sets it for LoadCredential=)"
            reader.problem(data.lines[key], f"{where}{key}: {message}")
            return None
        name = str(Path(env["CREDENTIALS_DIRECTORY"]) / name[len(prefix) :])
    path = Path(reader.file).parent / name
    if read is not None:
        try:
            read(str(path))
        except ValueError as exc:
            reader.problem(data.lines[key], f"{where}{key}: {exc}")
    return path


def _signing(
    reader: _Reader,
    top: YMap,
    env: Mapping[str, str],
    read_secret: Callable[[str], str] | None,
) -> Signing | None:
    where = "signing: "
    if "signing" not in top:
        return None
    data = reader.section(top["signing"], where, ("key", "keys", "window"), top.lines["signing"])
    if data is None:
        return None
    window = reader.get(data, "window", where, values.duration, None)
    current = reader.get(data, "key", where, values.text, "")
    if not current:
        reader.problem(data.line, f"{where}key: missing (the id of the key that signs)")
    listed = data.get("keys")
    if not isinstance(listed, YMap) or not listed:
        message = f"must map key ids to key files, got {values.kind(listed)}"
        reader.problem(data.lines.get("keys", data.line), f"{where}keys: {message}")
        return None
    reader.section(listed, f"{where}keys: ", tuple(map(str, listed)), None)  # duplicate ids
    keys = {}
    for key_id in listed:
        line = listed.lines[key_id]
        path = _file(reader, listed, key_id, f"{where}keys: ", env, None)
        if path is None or read_secret is None:
            continue
        try:  # the key's text goes nowhere but Key.secret: not into a problem, not into a log
            keys[str(key_id)] = key_from_text(str(key_id), read_secret(str(path)))
        except ValueError as exc:
            reader.problem(line, f"{where}keys: {key_id}: {exc}")
    if current and current not in listed:
        reader.problem(data.lines["key"], f"{where}key: {current!r} is not one of keys")
    if current not in keys:
        return None
    return Signing(keys[current], MappingProxyType(keys), window)


_HA_KEYS = ("enabled", "name", "poll", "queue_type")
_HA = HaConfig()


def _ha(reader: _Reader, top: YMap) -> HaConfig | None:
    """The ha: section; absent or `enabled: false`, HA is off."""
    where = "ha: "
    if "ha" not in top:
        return None
    if top["ha"] is None:  # `ha:` alone turns it on with the defaults
        return HaConfig()
    data = reader.section(top["ha"], where, _HA_KEYS, top.lines["ha"])
    if data is None or not reader.get(data, "enabled", where, values.boolean, True):
        return None
    return HaConfig(
        name=reader.get(data, "name", where, _ha_name, _HA.name),
        poll=reader.get(data, "poll", where, _ha_poll, _HA.poll),
        queue_type=reader.get(data, "queue_type", where, _QUEUE_TYPES, _HA.queue_type),
    )


_QUEUE_TYPES = values.choice("classic", "quorum")


def _ha_name(value: object) -> str:
    name = values.text(value)
    if not re.fullmatch(r"[\w.:-]{1,100}", name):
        raise ValueError(f"{name!r}: letters, digits, _ . : - only, at most 100")
    return name


def _ha_poll(value: object) -> timedelta:
    poll = values.duration(value)
    if not timedelta(milliseconds=100) <= poll <= timedelta(seconds=60):
        raise ValueError(f"must be between 100ms and 60s, got {value!r}")
    return poll


_BROKER = BrokerConfig()
_EXCHANGE_TYPES = values.choice("direct", "topic", "fanout", "headers")
_EMPTY = YMap()
_EMPTY.line, _EMPTY.lines, _EMPTY.duplicates = 0, {}, []


def _state_path(reader: _Reader, top: YMap, env: Mapping[str, str]) -> Path:
    if "state" in top:  # a relative path is beside the file, wherever beatd was started
        return Path(reader.file).parent / reader.get(top, "state", "", values.path, "state.db")
    if env.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "state.db"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else home / ".local" / "state"
    return base / "beatd" / "state.db"


_JOB_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "timezone": values.parse_zone,
    "routing_key": values.routing_key,
    "priority": values.int_between(0, 255),
    "expires": values.duration,
    "jitter": functools.partial(durations.parse_duration, allow_zero=True),
    "misfire": values.enum(Misfire),
    "grace": values.duration,
    "enabled": values.boolean,
    "format": values.enum(MessageFormat),
    "queue": values.queue_name,
    "exchange": values.exchange_name,
}
_JOB_KEYS = (*SCHEDULE_KINDS, "task", "args", "kwargs", *_JOB_OPTIONS)
# The options after Job's kwargs field, in Job's order: a Job is made as a tuple of its fields
# (by keyword, 100k jobs take 0.04 s more), its options taken in one go from a mapping of all.
_OPTION_FIELDS = Job._fields[Job._fields.index("kwargs") + 1 : Job._fields.index("line")]
assert set(_OPTION_FIELDS) == set(_JOB_OPTIONS) - {"timezone"}
_OPTION_DEFAULTS = {key: Job._field_defaults[key] for key in _OPTION_FIELDS}
_options_in_order = operator.itemgetter(*_OPTION_FIELDS)


def _defaults(reader: _Reader, top: YMap, zone: tzinfo) -> dict[str, Any]:
    where = "defaults: "
    line = top.lines.get("defaults")
    data = reader.section(top.get("defaults", _EMPTY), where, tuple(_JOB_OPTIONS), line)
    result: dict[str, Any] = {**_OPTION_DEFAULTS, "timezone": zone}
    for key, convert in _JOB_OPTIONS.items():
        if data is not None and key in data:
            value = reader.get(data, key, where, convert, None)
            if value is not None:  # None: not valid (a problem), the Job's own default stands
                result[key] = value
    return result


# What validating a job depends on besides the job: the file's timezone and defaults, and the
# broker's exchange_type (_job_context).
_JOB_CONTEXT = ("timezone", "defaults", "broker")


def _job_context(reader: _Reader, top: YMap) -> tuple[dict[str, Any], str]:
    """The defaults every job starts from (with the zone) and the broker's exchange type, as
    _parse_config finds them (their problems are its to report)."""
    zone = reader.get(top, "timezone", "", values.parse_zone, _UTC)
    broker = reader.section(top.get("broker", _EMPTY), "broker: ", _BROKER_KEYS, None)
    exchange_type = "topic"
    if broker is not None:
        exchange_type = reader.get(broker, "exchange_type", "", _EXCHANGE_TYPES, "topic")
    return _defaults(reader, top, zone), exchange_type


class _Checked:
    """A job whose mapping was validated while the file was read, with problems (no Job)."""

    __slots__ = ("problems",)

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


class _JobStream:
    """Validates each job as its mapping ends while the file is read (yamlfile's stream), so
    that the parsed mappings of 100k jobs never all exist at once: the jobs mapping keeps a Job,
    or the problems, in each one's place.

    It needs what jobs depend on (_JOB_CONTEXT) before the first job, so takes them from the
    top-level keys read so far; if the whole file says otherwise (they came after `jobs:`, or
    through a `<<` merge), settled_by() is false and the file must be read again without it.
    """

    def __init__(self, file: str) -> None:
        self.reader = _Reader(file)
        self.context: tuple[dict[str, Any], str] | None = None
        self.used: dict[str, object] = {}  # the top-level values the context came from

    def __call__(self, top: YMap, name: object, body: object, line: int) -> object:
        if self.context is None:
            self.used = {key: top.get(key) for key in _JOB_CONTEXT}
            self.context = _job_context(_Reader(self.reader.file), top)  # reported later
        problems = self.reader.problems
        job = _checked_job(self.reader, name, body, line, *self.context)
        if not problems and job is not None:
            return job
        self.reader.problems = []
        return _Checked(problems)

    def settled_by(self, top: YMap) -> bool:
        return self.context is None or all(top.get(k) is v for k, v in self.used.items())


def _jobs(
    reader: _Reader, top: YMap, defaults: Mapping[str, Any], exchange_type: str
) -> tuple[Job, ...]:
    data = top.get("jobs")
    if data is None:
        return ()
    if not isinstance(data, YMap):
        message = f"jobs: must be a mapping of job names, got {values.kind(data)}"
        reader.problem(top.lines["jobs"], message)
        return ()
    for name, line, first in data.duplicates:
        reader.problem(line, f"job {name!r}: defined twice (first at line {first})")
    jobs = []
    for name, body in data.items():
        if type(body) is Job:  # validated as the file was read (_JobStream)
            jobs.append(body)
        elif type(body) is _Checked:
            reader.problems += body.problems
        else:
            job = _checked_job(reader, name, body, data.lines[name], defaults, exchange_type)
            if job is not None:
                jobs.append(job)
    return tuple(jobs)


def _checked_job(
    reader: _Reader,
    name: object,
    body: object,
    line: int,
    defaults: Mapping[str, Any],
    exchange_type: str,
) -> Job | None:
    if not valid_job_name(name):
        message = "a job name is letters, digits and _ . : / -, at most 200 bytes"
        reader.problem(line, f"job {name!r}: {message}")
        return None
    # Interned: the state store's rows name the jobs too, and share this string (100k jobs).
    return _job(reader, sys.intern(str(name)), body, line, defaults, exchange_type)


def _job(
    reader: _Reader,
    name: str,
    body: object,
    line: int,
    defaults: Mapping[str, Any],
    exchange_type: str,
) -> Job | None:
    where = f"job {name!r}: "
    if type(body) is YMap and not body.duplicates and body.keys() <= _JOB_KEY_SET:
        data = body  # most jobs: nothing for section() to say
    else:
        checked = reader.section(body, where, _JOB_KEYS, line)
        if checked is None:
            return None
        data = checked
    problems_before = len(reader.problems)
    options = dict(defaults)
    for key in data:
        if key in _JOB_OPTIONS:
            options[key] = reader.cached(data, key, where, _JOB_OPTIONS[key], None)
    zone = options["timezone"]
    jitter = options["jitter"] or _NO_OFFSET
    kinds = [kind for kind in SCHEDULE_KINDS if kind in data]
    if not kinds:
        reader.problem(line, f"{where}no schedule: give one of cron, every or at")
    elif len(kinds) > 1:
        both = " and ".join(kinds)
        second = max(data.lines[kind] for kind in kinds)  # the line that made it two
        reader.problem(second, f"{where}{both} given; a job has exactly one schedule")
    if "task" not in data:
        reader.problem(line, f"{where}task: missing (the name executors run, e.g. reports.nightly)")
    if options.get("format") is not MessageFormat.CELERY and "queue" in data:
        reader.problem(data.lines["queue"], f"{where}queue: only used with format: celery")
    if options.get("format") is not MessageFormat.CELERY and options.get("exchange"):
        # beatd declares a job's exchange with broker.exchange_type (Celery's it only uses)
        mismatch = values.exchange_type_problem(options["exchange"], exchange_type)
        if mismatch:
            reader.problem(data.lines.get("exchange", line), f"{where}exchange: {mismatch}")
    # A schedule that does not depend on the job (no jitter, no `H` of the job's name) is
    # shared with every job that writes it the same way, in the same zone: found once.
    written = data[kinds[0]] if len(kinds) == 1 and not jitter else None
    shared_key = (kinds[0], written, zone) if isinstance(written, str) else None
    shared = reader.schedules.get(shared_key) if shared_key is not None else None
    schedule: Schedule | None
    if shared is not None:
        schedule, spec, fingerprint = shared
    else:
        # Every kind given is checked, so `beatd check` reports all of a job's problems at once.
        schedules = [_schedule(reader, data, kind, name, where, zone, jitter) for kind in kinds]
        schedule = schedules[0] if len(kinds) == 1 else None
        spec = fingerprint = ""
    task = reader.cached(data, "task", where, values.task_name, "")
    args = _plain_args(data.get("args", ()))
    if args is None:
        args = tuple(reader.get(data, "args", where, values.json_list, []))
    kwargs: dict[str, Any] | None = _plain_kwargs(data.get("kwargs", _NO_KWARGS))
    if kwargs is None:
        kwargs = reader.get(data, "kwargs", where, values.json_mapping, _NO_PLAIN_KWARGS)
    if len(reader.problems) > problems_before or schedule is None:
        return None
    if shared is None:
        spec = _spec_text(data[kinds[0]])
        fingerprint = _fingerprint(kinds[0], spec, zone, jitter)
        if (
            shared_key is not None
            and len(reader.schedules) < _MEMO_KEPT
            and _alike(shared_key[1], kinds[0])
        ):
            reader.schedules[shared_key] = (schedule, spec, fingerprint)
    return tuple.__new__(
        Job,
        (
            name,
            task,
            kinds[0],
            spec,
            schedule,
            zone,
            args,
            MappingProxyType(kwargs) if kwargs else _NO_KWARGS,
            *_options_in_order(options),
            line,
            fingerprint,
        ),
    )


def _alike(written: str, kind: str) -> bool:
    """Whether a schedule written so is the same for every job (an `H` hashes its name)."""
    return kind != "cron" or not cron.uses_name(written)


_JOB_KEY_SET = frozenset(_JOB_KEYS)
_NO_PLAIN_KWARGS: dict[str, Any] = {}  # read only: a job without kwargs gets _NO_KWARGS
_JSON_LEAVES = (str, int, bool, type(None))


def _plain_args(value: object) -> tuple[Any, ...] | None:
    """args that are a list of strings, whole numbers, booleans and nulls as they are (most
    are; () when absent); None: anything else, for values.json_list to check and explain."""
    if type(value) is not YList:
        return () if value == () else None
    for item in value:
        if type(item) not in _JSON_LEAVES:
            return None
    return tuple(value)


def _plain_kwargs(value: object) -> dict[str, Any] | None:
    """kwargs mapping strings to plain scalars, copied (most are; {} when absent); None:
    anything else, for values.json_mapping to check and explain."""
    if type(value) is not YMap:
        return {} if value is _NO_KWARGS else None
    for key, item in value.items():
        if type(key) is not str or type(item) not in _JSON_LEAVES:
            return None
    return dict(value)


def _schedule(
    reader: _Reader,
    data: YMap,
    kind: str,
    name: str,
    where: str,
    zone: tzinfo,
    jitter: timedelta,
) -> Schedule | None:
    offset = _jitter_offset(name, jitter) if jitter else _NO_OFFSET
    if kind == "every":
        every = reader.cached(data, "every", where, values.duration, None)
        return None if every is None else _interval(every, offset)
    if kind == "at":
        at = reader.get(data, "at", where, lambda v: values.instant(v, zone), None)
        return None if at is None else At(at + offset)

    def expression(value: object) -> cron.CronExpr:
        if not isinstance(value, str):
            raise ValueError(f"must be a string like '*/15 * * * *', got {values.kind(value)}")
        if len(value) > MAX_CRON_CHARS:  # parsing a 16 MiB list of minutes takes seconds
            raise ValueError(f"{len(value):,} characters is too long (at most {MAX_CRON_CHARS})")
        try:
            return cron.parse(value, hash_key=name)
        except CronError as exc:
            raise ValueError(str(exc)) from None

    expr = reader.get(data, "cron", where, expression, None)
    return None if expr is None else _cron(expr, zone, offset)


# Jobs with the same schedule share one immutable schedule object (memory at 100k jobs); the
# caches are bounded, and a miss only costs a new object.
_NO_OFFSET = timedelta(0)
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})
_interval = functools.lru_cache(maxsize=4096)(Interval)
# 100k jobs: about 6,000 distinct (expression, zone), `H` expressions being many
_cron_schedule = functools.lru_cache(maxsize=16384)(cron.CronSchedule)


def _cron(expr: cron.CronExpr, zone: tzinfo, offset: timedelta) -> Cron:
    if offset:  # a jittered job's offset is its own: nothing to share
        return Cron(_cron_schedule(expr, zone), offset)
    return _shared_cron(expr, zone)


@functools.lru_cache(maxsize=16384)
def _shared_cron(expr: cron.CronExpr, zone: tzinfo) -> Cron:
    return Cron(_cron_schedule(expr, zone))


def croniter_order_warnings(config: Config) -> list[Problem]:
    """Warn about 6-field cron expressions that croniter, which puts the seconds last, would
    read differently: once per expression, at the first job using it, with both readings."""
    jobs_by_spec: dict[str, list[Job]] = {}
    for job in config.jobs:
        if job.kind == "cron" and len(job.spec.split()) == 6:
            jobs_by_spec.setdefault(job.spec, []).append(job)
    warnings = []
    for spec, jobs in jobs_by_spec.items():
        first = jobs[0]
        ours, theirs = first.expression, cron.croniter_reading(spec, first.name)
        if ours is None or theirs is None:
            continue
        fields = spec.split()
        also = f" (and {len(jobs) - 1} more)" if len(jobs) > 1 else ""
        message = (
            f"job {first.name!r}{also}: cron: warning: {spec!r} puts seconds first "
            f"({describe(ours)}); if you meant croniter's seconds last "
            f"({describe(theirs)}), write {' '.join(fields[-1:] + fields[:-1])!r}"
        )
        warnings.append(Problem(config.path, first.line, message))
    return warnings


@functools.lru_cache(maxsize=4096)  # most jobs share their schedule, zone and jitter with others
def _fingerprint(kind: str, spec: str, zone: tzinfo, jitter: timedelta) -> str:
    zone_name = getattr(zone, "key", str(zone))
    text = f"{kind}\0{spec}\0{zone_name}\0{jitter.total_seconds()}"
    return sys.intern(hashlib.sha256(text.encode()).hexdigest()[:16])  # the state's rows share it


def _jitter_offset(name: str, jitter: timedelta) -> timedelta:
    """A fixed delay in [0, jitter) from the job name: whole seconds, or ms under 2 s."""
    spread = int.from_bytes(hashlib.sha256(f"jitter\0{name}".encode()).digest()[:8], "big")
    ms = round(jitter.total_seconds() * 1000)
    if ms >= 2000:
        return timedelta(seconds=spread % (ms // 1000))
    return timedelta(milliseconds=spread % ms)


def _spec_text(value: object) -> str:
    if type(value) is str:
        return _spaced(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return _spaced(str(value))


@functools.lru_cache(maxsize=4096)  # jobs share their schedules' texts
def _spaced(text: str) -> str:
    return sys.intern(" ".join(text.split()))  # one string for every job that shares it


_WORKER_KEYS = (
    "queue", "queue_type", "bindings", "concurrency", "dead_letter_exchange",
    "dead_letter_queue", "events_exchange", "dedupe_size", "max_body", "state",
)  # fmt: skip


def _worker(reader: _Reader, top: YMap) -> WorkerConfig:
    w = "worker: "
    data = reader.section(top.get("worker", _EMPTY), w, _WORKER_KEYS, top.lines.get("worker"))
    d = WorkerConfig()
    if data is None:
        return d
    state = reader.get(data, "state", w, values.path, None)
    exchanges = {}
    for key, kind in (("dead_letter_exchange", "direct"), ("events_exchange", "topic")):
        exchanges[key] = reader.get(data, key, w, values.declared_exchange, getattr(d, key))
        mismatch = values.exchange_type_problem(exchanges[key], kind)
        if mismatch:
            reader.problem(data.lines[key], f"{w}{key}: {mismatch} (the worker declares {kind})")
    return WorkerConfig(
        queue=reader.get(data, "queue", w, _WORK_QUEUE, d.queue),
        queue_type=reader.get(data, "queue_type", w, _QUEUE_TYPES, d.queue_type),
        bindings=tuple(reader.get(data, "bindings", w, values.routing_keys, list(d.bindings))),
        concurrency=reader.get(data, "concurrency", w, values.int_between(1, 1000), d.concurrency),
        dead_letter_queue=reader.get(
            data, "dead_letter_queue", w, values.queue_name, d.dead_letter_queue
        ),
        **exchanges,
        dedupe_size=reader.get(
            data, "dedupe_size", w, values.int_between(1, 10_000_000), d.dedupe_size
        ),
        max_body=reader.get(data, "max_body", w, _byte_size, d.max_body),
        state=None if state is None else Path(state),
    )


_SIZE = re.compile(r"(\d{1,12})\s*(B|KiB|MiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024}


def _byte_size(value: object) -> int:
    """1048576, 512KiB or 1MiB; between 1 KiB and 128 MiB (RabbitMQ's own largest message)."""
    match = _SIZE.fullmatch(str(value)) if isinstance(value, int | str) else None
    if isinstance(value, bool) or match is None:
        raise ValueError(f"must be a size like 1MiB, 512KiB or 1048576, got {values.kind(value)}")
    size = int(match[1]) * _SIZE_UNITS[match[2]]
    if not 1024 <= size <= 128 * 1024 * 1024:
        raise ValueError(f"{value!r} is not between 1KiB and 128MiB")
    return size


_QUEUE_TYPES = values.choice("classic", "quorum")
# Retries wait in `<queue>.retry.<ms>ms` (verdicts.retry_queue): room for 13 digits of ms, the
# longest duration beatd takes.
_WORK_QUEUE = functools.partial(
    values.queue_name, limit=values.SHORTSTR_BYTES - len(".retry.3153600000000ms")
)
_TASK_KEYS = (
    "command", "call", "args", "args_separator", "timeout", "cwd", "env", "user", "retries",
    "retry_delay",
)  # fmt: skip
_COMMAND_ONLY = ("cwd", "env", "user", "args", "args_separator")


def _tasks(reader: _Reader, top: YMap) -> dict[str, TaskConfig]:
    data = top.get("tasks")
    if data is None:
        return {}
    if not isinstance(data, YMap):
        message = f"tasks: must be a mapping of task names, got {values.kind(data)}"
        reader.problem(top.lines["tasks"], message)
        return {}
    for name, line, first in data.duplicates:
        reader.problem(line, f"task {name!r}: defined twice (first at line {first})")
    tasks = {}
    for name, body in data.items():
        where = f"task {name!r}: "
        section = reader.section(body, where, _TASK_KEYS, data.lines[name])
        if section is None:
            continue
        if ("command" in section) == ("call" in section):
            reader.problem(data.lines[name], f"{where}give exactly one of command or call")
        # A callable runs in a thread of the worker, which has one cwd, environment and user;
        # its args are Python values, never argv.
        for key in _COMMAND_ONLY:
            if "call" in section and key in section:
                reader.problem(section.lines[key], f"{where}{key}: only for command tasks")
        command = reader.get(section, "command", where, commands.argv, None)
        separator = reader.get(section, "args_separator", where, commands.separator, "--")
        tasks[str(name)] = TaskConfig(
            name=str(name),
            command=None if command is None else tuple(command),
            call=reader.get(section, "call", where, values.callable_ref, None),
            timeout=reader.get(section, "timeout", where, values.duration, None),
            cwd=reader.get(section, "cwd", where, commands.cwd, None),
            env=MappingProxyType(reader.get(section, "env", where, commands.environment, {})),
            user=reader.get(section, "user", where, values.text, None),
            retries=reader.get(section, "retries", where, values.int_between(0, 100), 0),
            retry_delay=reader.get(
                section, "retry_delay", where, values.duration, timedelta(seconds=10)
            ),
            args=reader.get(section, "args", where, commands.args_policy(separator), ArgsPolicy()),
            line=data.lines[name],
        )
    return tasks
