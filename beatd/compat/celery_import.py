"""`beatd import-celery`: a Celery app's beat schedule as an equivalent beatd schedule file.

Loading the app runs the user's module (I/O, like `celery -A`); everything after that converts
the values it holds. celery is imported lazily and only here, typed Any at this boundary (it
ships no type information). Nothing is silently dropped: what cannot be converted exactly is a
problem naming the entry, and the caller exits non-zero.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import re
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from beatd.compat.celery_codec import DEFAULT_QUEUE
from beatd.core import cron, durations, values
from beatd.core.config import JOB_NAME
from beatd.core.describe import ranges
from beatd.core.errors import BeatdError

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
# Week-of-month blocks: `weekday#n` in cron is that weekday on one of these days.
_WEEKS = ((1, 7), (8, 14), (15, 21), (22, 28), (29, 31))


class UnconvertibleError(ValueError):
    """One value has no exact beatd equivalent; the message says why."""


@dataclass
class Conversion:
    """The schedule file, and what could not be converted (each names its entry)."""

    text: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    jobs: int = 0


def load_app(spec: str) -> Any:
    """Import MODULE:APP (or MODULE, found the way `celery -A` finds it) from the current
    directory; raise BeatdError in one line if that fails."""
    with _user_code(f"cannot import {spec!r}"):
        utils = importlib.import_module("celery.app.utils")
        base = importlib.import_module("celery.app.base")
        imports = importlib.import_module("celery.utils.imports")
        if ":" in spec:
            module_name, _, attribute = spec.partition(":")
            # import_from_cwd puts the current directory on sys.path, as `celery -A` does.
            module = imports.import_from_cwd(module_name)
            if not hasattr(module, attribute):
                raise BeatdError(f"cannot import {spec!r}: {module_name} has no {attribute!r}")
            app = getattr(module, attribute)
        else:
            app = utils.find_app(spec)  # module.app, module.celery, module.celery.app, ...
        if not isinstance(app, base.Celery):
            raise BeatdError(f"{spec!r} is a {type(app).__name__}, not a Celery app")
        app.loader.import_default_modules()  # what `celery beat` does: registers the tasks
        app.conf.beat_schedule  # noqa: B018  (loads the configuration, like beat)
    return app


def load_config_module(name: str) -> Any:
    """A bare Celery app configured from a plain module (celeryconfig.py), old-style setting
    names (CELERYBEAT_SCHEDULE, CELERY_TIMEZONE) included, as Celery itself reads them."""
    with _user_code(f"cannot read config module {name!r}"):
        base = importlib.import_module("celery.app.base")
        app = base.Celery("beatd-import", set_as_current=False)
        app.config_from_object(name)
        app.conf.beat_schedule  # noqa: B018  (config_from_object is lazy: import it now)
    return app


@contextlib.contextmanager
def _user_code(what: str) -> Iterator[None]:
    # The user's module may print; stdout is the YAML, so that goes to stderr instead.
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    except BeatdError:
        raise
    except (Exception, SystemExit) as exc:
        lines = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name in what:
            detail += " (run beatd in the directory where `celery -A` works)"
        raise BeatdError(f"{what}: {detail}") from exc


def convert(app: Any, source: str) -> Conversion:
    """Convert app.conf.beat_schedule (and timezone, broker) to beatd YAML."""
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
            lines = _entry(app, str(name), entry)
        except UnconvertibleError as exc:
            out.problems.append(f"{where}entry {str(name)!r}: {exc}")
            continue
        job_name = _job_name(str(name), taken)
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


def _entry(app: Any, name: str, entry: object) -> list[str]:
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
    kind, spec, comment = schedule_spec(entry["schedule"], bool(entry.get("relative")))
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


def schedule_spec(value: Any, relative: bool = False) -> tuple[str, str, str]:
    """(beatd key, value, what it was) for a beat entry's schedule: a number of seconds, a
    timedelta, schedule(run_every), or crontab(...)."""
    schedules = importlib.import_module("celery.schedules")
    if isinstance(value, bool):
        raise UnconvertibleError(f"schedule: {value!r} is not a schedule")
    if isinstance(value, timedelta):
        return _interval(value, relative, f"timedelta(seconds={value.total_seconds():g})")
    if isinstance(value, int | float):
        return _interval(timedelta(seconds=value), relative, f"{value!r} seconds")
    if isinstance(value, schedules.crontab) and not _overrides(value, schedules.crontab):
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        given = ", ".join(
            f"{f}={getattr(value, '_orig_' + f)!r}"
            for f in fields
            if getattr(value, "_orig_" + f) != "*"
        )
        starred = {f for f in fields if str(getattr(value, "_orig_" + f)).startswith("*")}
        expression = cron_expression(
            value.minute,
            value.hour,
            value.day_of_week,
            value.day_of_month,
            value.month_of_year,
            starred=starred,
        )
        return "cron", expression, f"crontab({given})"
    if isinstance(value, schedules.solar):
        raise UnconvertibleError(
            f"schedule: solar({value.event!r}, {value.lat}, {value.lon}) follows the sun at a "
            "place; beatd has no solar schedules (use a cron time close to it)"
        )
    if type(value) is schedules.schedule:
        return _interval(
            value.run_every, relative or value.relative, f"schedule(run_every={value.run_every})"
        )
    raise UnconvertibleError(
        f"schedule: {type(value).__module__}.{type(value).__qualname__} is a custom schedule "
        "class; only numbers, timedelta, schedule and crontab convert"
    )


def _overrides(value: Any, base: type) -> bool:
    """Whether a subclass decides due times itself (then its crontab fields are not the truth)."""
    methods = ("is_due", "remaining_estimate", "remaining_delta")
    return any(getattr(type(value), m, None) is not getattr(base, m, None) for m in methods)


def _interval(every: timedelta, relative: bool, comment: str) -> tuple[str, str, str]:
    if relative:
        raise UnconvertibleError(
            "relative=True rounds each run to the interval's resolution in the app's zone; "
            "write it as a cron expression instead (e.g. every hour on the hour: '0 * * * *')"
        )
    text = durations.format_duration(every)
    if not _exact_duration(every, text):
        raise UnconvertibleError(
            f"schedule: an interval of {every.total_seconds()!r} s is not a positive whole "
            "number of milliseconds"
        )
    return "every", text, comment


def _exact_duration(delta: timedelta, text: str) -> bool:
    try:
        return delta > timedelta(0) and durations.parse_duration(text) == delta
    except ValueError:  # rounded to 0s
        return False


def cron_expression(
    minute: Iterable[int],
    hour: Iterable[int],
    day_of_week: Iterable[int],
    day_of_month: Iterable[int],
    month_of_year: Iterable[int],
    starred: Collection[str] = (),
) -> str:
    """The 5-field cron expression that fires exactly when Celery's crontab with these expanded
    fields does (day_of_week 0 = Sunday, as in cron).

    Celery requires day_of_month AND day_of_week to match; cron (Debian's and beatd's) ANDs them
    only when one field starts with `*`, and ORs two restricted fields. Both restricted is
    written with `weekday#n` or a `*`-prefixed step where that is exact, else refused.
    starred names the fields written as `*...` in Celery, which stay so here: for beatd, as for
    Debian cron, a `*` minute or hour means "every real matching instant" across DST changes.
    """

    def spell(name: str, found: set[int], low: int, high: int) -> str:
        return _field(found, low, high, star=name in starred)

    dow, dom = set(day_of_week), set(day_of_month)
    minute_text, hour_text = spell("minute", set(minute), 0, 59), spell("hour", set(hour), 0, 23)
    month_text = spell("month_of_year", set(month_of_year), 1, 12)
    dom_text, dow_text = spell("day_of_month", dom, 1, 31), spell("day_of_week", dow, 0, 6)
    if not dom_text.startswith("*") and not dow_text.startswith("*"):
        weeks = [n for n, (a, b) in enumerate(_WEEKS, 1) if set(range(a, b + 1)) <= dom]
        if dom == {d for n in weeks for d in range(_WEEKS[n - 1][0], _WEEKS[n - 1][1] + 1)}:
            dom_text = "*"
            dow_text = ",".join(f"{d}#{n}" for d in sorted(dow) for n in weeks)
        elif (step := _star_step(dom, 1, 31)) is not None:
            dom_text = f"*/{step}"
        elif (step := _star_step(dow, 0, 6)) is not None:
            dow_text = f"*/{step}"
        elif dom == {1}:
            dom_text = "*/31"  # only the 1st, and `*`-prefixed so that cron ANDs it
        else:
            raise UnconvertibleError(
                f"crontab day_of_month {dom_text} with day_of_week {dow_text}: Celery runs on "
                "days matching both, cron on days matching either, and no cron expression says "
                "exactly this; split it into jobs or restrict only one of the two"
            )
    text = f"{minute_text} {hour_text} {dom_text} {month_text} {dow_text}"
    cron.parse(text)  # a bug here must not reach the output
    return text


def _field(found: set[int], low: int, high: int, *, star: bool = False) -> str:
    if found == set(range(low, high + 1)):
        return "*"
    step = _star_step(found, low, high)
    if step is not None and (star or len(found) >= 3):
        return f"*/{step}"
    ordered = sorted(found)
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], ordered[-1] + 1, step)):
            return f"{ordered[0]}-{ordered[-1]}/{step}"
    return ranges(tuple(ordered))


def _star_step(found: set[int], low: int, high: int) -> int | None:
    """n if found is exactly `*/n` over [low, high] with at least two values, else None."""
    ordered = sorted(found)
    if len(ordered) < 2 or ordered[0] != low:
        return None
    step = ordered[1] - ordered[0]
    return step if ordered == list(range(low, high + 1, step)) else None


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
    if not _exact_duration(delta, text):
        raise UnconvertibleError(
            f"options: expires={value!r} is not a positive whole number of milliseconds"
        )
    return text


def _json_value(value: Any, what: str) -> Any:
    try:
        if what == "args":
            return values.json_list(value)
        return values.json_mapping(value)
    except ValueError as exc:
        raise UnconvertibleError(f"{what}: {exc}") from None


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
