"""`beatd import-celery`: a Celery app's beat schedule as an equivalent beatd schedule file.

celery_load imports the app (running the user's module, like `celery -A`); this converts the
values it holds, typed Any at this boundary (celery ships no type information). Nothing is
silently dropped: what cannot be converted exactly is a problem naming the entry, and the caller
exits non-zero.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import yaml

from beatd.compat.celery_codec import DEFAULT_QUEUE
from beatd.compat.celery_schedules import UnconvertibleError, exact_duration, schedule_spec
from beatd.core import durations, values
from beatd.core.config import JOB_NAME

ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative")
# Options celery beat passes to apply_async that beatd already does, or does better: it always
# publishes persistent, mandatory, JSON messages with confirms and retries until confirmed.
_SUPERSEDED: dict[str, tuple[object, ...] | None] = {
    "retry": None,
    "retry_policy": None,
    "mandatory": None,
    "serializer": None,  # beatd's JSON reaches any worker whose accept_content has json
    "delivery_mode": (2, "persistent"),
    "compression": (None,),
}
_ROUTING = ("queue", "exchange", "routing_key", "exchange_type")
# A worker falls back to the task's own limits when the message's are null (Request.__init__).
_WORKER_APPLIES = ("time_limit", "soft_time_limit")


@dataclass
class Conversion:
    """The schedule file, and what could not be converted (each names its entry)."""

    text: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    jobs: int = 0


def convert(
    app: Any, source: str, varying: Mapping[str, frozenset[str]] | None = None
) -> Conversion:
    """Convert app.conf.beat_schedule (and timezone, broker) to beatd YAML. varying names, per
    entry, the crontab fields that came out differently when the app was imported again."""
    varying = varying or {}
    conf = app.conf
    out = Conversion(text="")
    where = f"{source}: "
    zone = _zone(conf, out, where)
    head = [
        f"# Converted from celery beat by `beatd import-celery {source}`.",
        "# format: celery publishes Celery task messages: keep the workers, stop celery beat.",
    ]
    if zone is not UTC:
        head.append(f"timezone: {getattr(zone, 'key', zone)}")
    head += _broker(conf, out, where)
    scheduler = str(conf.beat_scheduler or "")
    if "celery.beat" not in scheduler and "PersistentScheduler" not in scheduler:
        out.problems.append(
            f"{where}beat_scheduler is {scheduler!r}: its schedule lives outside the app's "
            "configuration (a database); only app.conf.beat_schedule was converted"
        )
    accept = {str(c) for c in conf.accept_content or ()}
    if accept and not accept & {"json", "application/json"}:
        out.problems.append(
            f"{where}accept_content is {sorted(accept)}: the workers refuse JSON, which is "
            "all beatd sends; add 'json'"
        )
    head += ["defaults:", "  format: celery", "jobs:"]
    schedule = conf.beat_schedule or {}
    if not schedule:
        out.notes.append(f"{where}beat_schedule is empty: there is nothing to convert")
        head[-1] = "jobs: {}"
    body: list[str] = []
    taken: set[str] = set()
    for name, entry in schedule.items():
        try:
            lines = _entry(app, str(name), entry, zone, varying.get(str(name), frozenset()))
        except UnconvertibleError as exc:
            out.problems.append(f"{where}entry {str(name)!r}: {exc}")
            continue
        job_name = _job_name(str(name), taken)
        if varying.get(str(name)):
            fields = " and ".join(sorted(varying[str(name)]))
            out.notes.append(
                f"{where}entry {str(name)!r}: its {fields} differed between two imports of the "
                "app (picked at random): written as H, a fixed value per job name"
            )
        if job_name != name:
            out.notes.append(
                f"{where}entry {str(name)!r}: renamed to {job_name!r} "
                "(a beatd job name is letters, digits and _ . : / -)"
            )
        body += [f"  {_key(job_name)}:", *(f"    {line}" for line in lines)]
        out.jobs += 1
    out.text = "\n".join([*head, *body]) + "\n"
    return out


def _zone(conf: Any, out: Conversion, where: str) -> tzinfo:
    name = conf.timezone
    if not name:
        if not conf.enable_utc:
            out.problems.append(
                f"{where}enable_utc is False and no timezone is set: Celery uses this "
                "machine's local zone; the schedule was converted as UTC: set `timezone:`"
            )
        return UTC
    key = name if isinstance(name, str) else getattr(name, "key", None) or str(name)
    try:
        return values.parse_zone(key)
    except ValueError as exc:
        out.problems.append(f"{where}timezone: {exc}; the schedule was converted as UTC")
        return UTC


def _broker(conf: Any, out: Conversion, where: str) -> list[str]:
    raw = conf.broker_url
    if not raw:
        return []  # Celery's default and beatd's are the same: amqp://guest:guest@localhost:5672/
    urls = raw if isinstance(raw, list | tuple) else str(raw).split(";")
    lines = []
    for url in urls:
        parts = urlsplit(str(url).strip())
        scheme = {"pyamqp": "amqp", "librabbitmq": "amqp"}.get(parts.scheme, parts.scheme)
        if scheme not in ("amqp", "amqps"):
            out.problems.append(
                f"{where}broker_url {values.redact(str(url))!r}: beatd publishes to RabbitMQ "
                "(amqp://) only, and the workers must consume from it"
            )
            return []
        netloc = parts.hostname or "localhost"
        if parts.port:
            netloc += f":{parts.port}"
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        lines.append(urlunsplit(parts._replace(scheme=scheme, netloc=netloc)))
    note = "  # the password is not copied: use password_file or $BEATD_BROKER_URL"
    has_password = any(urlsplit(str(u).strip()).password for u in urls)
    if len(lines) == 1:
        return ["broker:", f"  url: {_value(lines[0])}" + (note if has_password else "")]
    return ["broker:", "  url:" + (note if has_password else "")] + [
        f"    - {_value(u)}" for u in lines
    ]


def _entry(app: Any, name: str, entry: object, zone: tzinfo, hashed: frozenset[str]) -> list[str]:
    """The YAML lines of one job (under its name), or UnconvertibleError."""
    if not isinstance(entry, Mapping):
        raise UnconvertibleError(f"is a {type(entry).__name__}, not a mapping")
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise UnconvertibleError(f"unknown key {unknown[0]!r} (celery beat takes {ENTRY_KEYS})")
    task = entry.get("task")
    if not isinstance(task, str) or not task:
        raise UnconvertibleError("no task name")
    try:
        values.task_name(task)
    except ValueError as exc:
        raise UnconvertibleError(f"task: {exc}") from None
    if "schedule" not in entry:
        raise UnconvertibleError("no schedule")
    kind, spec, comment = schedule_spec(
        entry["schedule"], bool(entry.get("relative")), zone, hashed
    )
    args = _json_value(list(entry.get("args") or ()), "args")
    kwargs = _json_value(dict(entry.get("kwargs") or {}), "kwargs")
    lines = [f"# celery: {comment}", f"{kind}: {_value(spec)}", f"task: {_value(task)}"]
    if args:
        lines.append(f"args: {_flow(args, 'args')}")
    if kwargs:
        lines.append(f"kwargs: {_flow(kwargs, 'kwargs')}")
    options = entry.get("options") or {}
    if not isinstance(options, Mapping):
        raise UnconvertibleError(f"options: is a {type(options).__name__}, not a mapping")
    lines += [
        f"{key}: {_value(value)}" for key, value in _options(app, task, args, kwargs, options)
    ]
    return lines


def _options(
    app: Any, task: str, args: list[Any], kwargs: dict[str, Any], options: Mapping[str, Any]
) -> list[tuple[str, Any]]:
    """beatd job keys for the entry's options merged over the task's own (as Task.apply_async
    merges them), then routed by the app's own router (task_routes, task_default_queue)."""
    registered = app.tasks.get(task)
    task_options: dict[str, Any] = {}
    if registered is not None:
        task_options = {k: v for k, v in registered._get_exec_options().items() if v is not None}
    try:
        routed = app.amqp.router.route(
            dict(task_options, **options), task, args, kwargs, registered
        )
    except Exception as exc:  # the user's own router functions run here
        raise UnconvertibleError(f"routing it with the app's task_routes failed: {exc}") from exc
    result = _destination(app, routed)
    priority = routed.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255:
            raise UnconvertibleError(f"options: priority {priority!r} is not a whole number 0-255")
        result.append(("priority", priority))
    expires = routed.get("expires")
    if expires is not None:
        result.append(("expires", _expires(expires)))
    for key, value in routed.items():
        if key in (*_ROUTING, "priority", "expires") or (key == "headers" and not value):
            continue
        if key in _WORKER_APPLIES and key not in options and task_options.get(key) == value:
            continue  # the task's own limit, which the worker applies by itself
        allowed = _SUPERSEDED.get(key, ())
        if key in _SUPERSEDED and (allowed is None or value in allowed):
            continue
        raise UnconvertibleError(
            f"options: {key}={value!r} has no beatd equivalent (beatd converts queue, exchange, "
            "routing_key, priority and expires)"
        )
    return result


def _destination(app: Any, routed: Mapping[str, Any]) -> list[tuple[str, Any]]:
    # What Celery's send_task_message (celery/app/amqp.py) does with the routed options.
    queue: Any = routed.get("queue")
    qname = getattr(queue, "name", None) or str(queue or DEFAULT_QUEUE)
    exchange = routed.get("exchange")
    exchange = getattr(exchange, "name", exchange)
    routing_key = routed.get("routing_key")
    kind = routed.get("exchange_type") or getattr(getattr(queue, "exchange", None), "type", None)
    if (not exchange or not routing_key) and (kind or "direct") == "direct":
        exchange, routing_key = "", qname
    elif exchange is None:
        exchange = getattr(queue.exchange, "name", "") or app.amqp.default_exchange.name
        routing_key = routing_key or queue.routing_key or app.conf.task_default_routing_key
    result: list[tuple[str, Any]] = []
    if qname != DEFAULT_QUEUE or exchange:
        result.append(("queue", qname))
    if exchange:
        result += [("exchange", str(exchange)), ("routing_key", str(routing_key or ""))]
    elif routing_key != qname:
        raise UnconvertibleError(f"routes to the default exchange with key {routing_key!r}")
    for key, value in result:
        check = values.exchange_name if key == "exchange" else values.routing_key
        try:
            check(value)
        except ValueError as exc:
            raise UnconvertibleError(f"options: {key}: {exc}") from None
    return result


def _expires(value: Any) -> str:
    if isinstance(value, datetime):
        raise UnconvertibleError(
            f"options: expires={value.isoformat()} is a fixed moment (every run after it "
            "expires at once); beatd's expires is a duration after each run's slot"
        )
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise UnconvertibleError(f"options: expires={value!r} is not seconds or a timedelta")
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    text = durations.format_duration(delta)
    if not exact_duration(delta, text):
        raise UnconvertibleError(
            f"options: expires={value!r} is not a positive whole number of milliseconds"
        )
    return text


def _json_value(value: Any, what: str) -> Any:
    hint = _celery_value_hint(value, what)
    if hint:
        raise UnconvertibleError(hint)
    try:
        if what == "args":
            return values.json_list(value)
        return values.json_mapping(value)
    except ValueError as exc:
        raise UnconvertibleError(f"{what}: {exc}") from None


def _celery_value_hint(value: Any, path: str, depth: int = 0) -> str | None:
    """What to do about the first Python value in args/kwargs that JSON has no form for and
    that Celery's pickle or kombu's JSON would have carried (a timedelta, a datetime, ...)."""
    if depth > 50:
        return None  # values.json_list reports it; a nested structure this deep is not config
    if isinstance(value, dict):
        found = (_celery_value_hint(v, f"{path}[{k!r}]", depth + 1) for k, v in value.items())
        return next((hint for hint in found if hint), None)
    if isinstance(value, list | tuple):
        found = (_celery_value_hint(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        return next((hint for hint in found if hint), None)
    if isinstance(value, timedelta):
        return (
            f"{path} is a timedelta ({value!r}): beatd sends JSON; pass its seconds "
            f"({value.total_seconds():g}) and make the timedelta in the task"
        )
    if isinstance(value, datetime | date | time):
        return (
            f"{path} is a {type(value).__name__} ({value!r}): a fixed value in every run, "
            f"sent as JSON by beatd; pass {value.isoformat()!r} and parse it in the task"
        )
    if isinstance(value, Decimal | UUID):
        return (
            f"{path} is a {type(value).__name__} ({value!r}): beatd sends JSON; pass "
            f"{str(value)!r} and convert it in the task"
        )
    if isinstance(value, set | frozenset | bytes):
        return f"{path} is a {type(value).__name__}: beatd sends JSON; pass a list or a string"
    return None


def _flow(value: Any, what: str) -> str:
    """JSON is YAML flow style; check PyYAML reads it back as the same value (1e-05 it does not)."""
    text = json.dumps(value, ensure_ascii=False)
    if yaml.safe_load(text) != value or _has_nan(value):
        raise UnconvertibleError(f"{what}: {text} does not survive a round trip through YAML")
    return text


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False


_PLAIN = re.compile(r"[\w/][\w./:-]*")


def _value(value: Any) -> str:
    """A scalar as YAML: plain when it reads back as the same string, else double-quoted."""
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and yaml.safe_load(value) == value
        return value if plain else json.dumps(value, ensure_ascii=False)
    return json.dumps(value)


def _key(name: str) -> str:
    return _value(name)


def _job_name(name: str, taken: set[str]) -> str:
    base = name if JOB_NAME.match(name) else re.sub(r"[^\w.:/-]+", "-", name).strip("-")[:190]
    base = base or "job"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    taken.add(candidate)
    return candidate
