"""Converters for schedule-file values: each takes what YAML produced and returns a typed value
or raises ValueError with a message that says what is allowed. Pure."""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from beatd.core import durations
from beatd.core.errors import CONTROL_CHARACTERS

E = TypeVar("E", bound=Enum)

SHORTSTR_BYTES = 255  # AMQP's limit for exchange, queue and routing key names, type, message id

# The exchanges every RabbitMQ vhost has, with their types. Declaring any other amq.* exchange
# is refused (403 ACCESS_REFUSED), and so is declaring one of these with another type (406).
# amq.rabbitmq.trace is left out: it is internal, so publishing to it is refused too.
STANDARD_EXCHANGES = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}
# `at` must leave room for jitter, grace and expires (at most 100 years each) before datetime's
# year 9999, and nothing before the Unix epoch is a time an operator means.
AT_YEARS = (1970, 9000)


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL (a bad IPv6 host): hide whatever could be a password
        return re.sub(r"(//[^/@]*?):[^/@]*@", r"\1:***@", url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: keeps an IPv6 host's brackets
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {kind(value)}")
    return value


def path(value: object) -> str:
    name = text(value)
    if CONTROL_CHARACTERS.search(name):
        raise ValueError(f"{name!r}: a path has no control characters")
    return name


def _amqp_name(value: object, what: str, limit: int = SHORTSTR_BYTES) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {kind(value)}")
    if CONTROL_CHARACTERS.search(value):
        raise ValueError(f"{value!r}: {what} has no control characters")
    size = len(value.encode())
    if size > limit:
        raise ValueError(f"{what} is {size} bytes in UTF-8; at most {limit}")
    return value


def task_name(value: object) -> str:
    if isinstance(value, str):
        return _task_name(value)
    return _task_name_uncached(value)


def _task_name_uncached(value: object) -> str:
    name = text(value)
    if len(name.split()) != 1:
        raise ValueError(f"{name!r}: a task name has no spaces and at most 255 bytes")
    return _amqp_name(name, "a task name")  # it is also the AMQP `type` property


_task_name = functools.lru_cache(maxsize=4096)(_task_name_uncached)  # jobs share their tasks


def routing_key(value: object) -> str:
    return _amqp_name(value, "a routing key")


def exchange_name(value: object) -> str:
    """An exchange to publish to; '' is the default exchange."""
    if not isinstance(value, str) or not re.fullmatch(r"[\w.:-]*", value):
        raise ValueError(f"{value!r} is not an exchange name (letters, digits, _ . : -)")
    name = _amqp_name(value, "an exchange name")
    if name.startswith("amq.") and name not in STANDARD_EXCHANGES:
        raise ValueError(
            f"{name!r}: names starting with amq. are reserved by RabbitMQ, which refuses to"
            f" declare them; use another name, or one of {', '.join(STANDARD_EXCHANGES)}"
        )
    return name


def declared_exchange(value: object) -> str:
    """An exchange beatd declares: not the default exchange, which cannot be declared."""
    name = exchange_name(value)
    if not name:
        raise ValueError("'' is the default exchange, which cannot be declared; name one")
    return name


def exchange_type_problem(name: str, exchange_type: str) -> str | None:
    """Why declaring a standard amq.* exchange with exchange_type would fail, if it would."""
    standard = STANDARD_EXCHANGES.get(name)
    if standard is None or standard == exchange_type:
        return None
    return f"{name!r} is a {standard} exchange; declaring it as {exchange_type} is refused"


def queue_name(value: object, limit: int = SHORTSTR_BYTES) -> str:
    name = _amqp_name(text(value), "a queue name", limit)
    if name.startswith("amq."):
        raise ValueError(f"{name!r}: queue names starting with amq. are reserved by RabbitMQ")
    return name


def routing_keys(value: object) -> list[str]:
    return [routing_key(key) for key in str_list(value)]


def listen_address(value: object) -> tuple[str, int]:
    """ "host:port" (IPv6 in brackets) as (host, port); port 0 takes any free port."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"127.0.0.1:{value}"
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"give host:port, like 127.0.0.1:9464, got {kind(value)}")
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
    return host or "0.0.0.0", int(port)  # noqa: S104  (":9464" asks for every interface)


def max_age(value: object) -> str:
    """A stream retention as RabbitMQ takes it: 30D, 12h, 1Y (Y, M, D, h, m, s)."""
    if not isinstance(value, str) or not re.fullmatch(r"[1-9][0-9]{0,5}[YMDhms]", value):
        raise ValueError(f"give a number and Y, M, D, h, m or s, like 30D, got {kind(value)}")
    return value


def duration(value: object) -> timedelta:
    return durations.parse_duration(value)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {kind(value)}")
    return value


def int_between(low: int, high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number {low}-{high}, got {kind(value)}")
        return value

    return convert


def choice(*allowed: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return str(value)

    return convert


def enum(kind: type[E]) -> Callable[[object], E]:
    def convert(value: object) -> E:
        for member in kind:
            if member.value == value:
                return member
        raise ValueError(f"{value!r} is not one of {', '.join(m.value for m in kind)}")

    return convert


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_zone(value: object) -> tzinfo:
    """An IANA zone name to a tzinfo; UTC itself becomes datetime.UTC (the fast path)."""
    if not isinstance(value, str):
        raise ValueError(f"must be an IANA time zone name like Europe/Berlin, got {kind(value)}")
    if value in ("UTC", "Etc/UTC"):
        return UTC
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        hint = difflib.get_close_matches(value, _zone_names(), n=1, cutoff=0.7)
        also = f" (did you mean {hint[0]!r}?)" if hint else " (an IANA name like Europe/Berlin)"
        raise ValueError(f"unknown time zone {value!r}{also}") from None


def instant(value: object, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)  # the zone is applied below
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 time like 2027-01-01T00:00:00+01:00"
            ) from None
    else:
        raise ValueError(f"must be an ISO 8601 time, got {kind(value)}")
    low, high = AT_YEARS
    if not low <= moment.year < high:  # checked before any arithmetic can overflow
        raise ValueError(f"{value!s} is not between the years {low} and {high}")
    if moment.tzinfo is None:  # a wall time in the job's zone
        moment = moment.replace(tzinfo=zone)
        if moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment.replace(
            tzinfo=None
        ):
            raise ValueError(f"{value!s} does not exist in {zone} (the clocks skip it)")
    return moment.astimezone(UTC)


def urls(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("give at least one amqp:// URL")
    return tuple(_check_url(item) for item in items)


def _check_url(url: object) -> str:
    """What pika would refuse only when connecting (and the daemon would retry forever);
    Celery's `//` for the vhost / becomes `/%2F`, which is what pika understands by it."""
    if not isinstance(url, str):
        raise ValueError(f"{kind(url)} is not an amqp:// or amqps:// URL")
    shown = redact(url)
    if CONTROL_CHARACTERS.search(url) or len(url.split()) != 1:
        raise ValueError(f"{shown!r}: a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        why = "the port must be a number 1-65535" if "Port" in str(exc) else str(exc)
        raise ValueError(f"{shown!r} is not a valid URL: {why}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(f"{shown!r} is not an amqp:// or amqps:// URL")
    if port == 0:
        raise ValueError(f"{shown!r} is not a valid URL: the port must be a number 1-65535")
    if parts.query:
        raise ValueError(
            f"{shown!r}: options after ? are not supported (beatd sets the connection options;"
            " the heartbeat is broker.heartbeat)"
        )
    if parts.path == "//":  # pika would connect to the vhost '', which does not exist
        return urlunsplit(parts._replace(path="/%2F"))
    if parts.path.count("/") > 1:
        raise ValueError(f"{shown!r}: the path is the vhost, one segment (write / as %2F)")
    return url


def str_list(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of strings, got {kind(value)}")
    return list(value)


def argv(value: object) -> list[str]:
    if isinstance(value, str):
        raise ValueError(
            "must be an argv list like [/usr/bin/cleanup, --days], never a shell string"
        )
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a non-empty list of strings, got {kind(value)}")
    for arg in value:
        if "\0" in arg:  # execve() takes C strings: the run would fail on every attempt
            raise ValueError(f"{arg!r}: an argument cannot hold a NUL character")
    return list(value)


def callable_ref(value: object) -> str:
    ref = text(value)
    if not re.fullmatch(r"[\w.]+:[\w.]+", ref):
        raise ValueError(f"{ref!r} is not module:function (e.g. myapp.reports:nightly)")
    return ref


def environment(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of names to values, got {kind(value)}")
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or isinstance(item, dict | list) or item is None:
            raise ValueError(f"{key!r}: values must be strings or numbers")
        shown = str(item).lower() if isinstance(item, bool) else str(item)
        if not key or "=" in key or "\0" in key or "\0" in shown:  # what execve() cannot pass
            raise ValueError(f"{key!r}: a name is not empty and has no = or NUL; a value no NUL")
        result[key] = shown
    return result


def json_list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list, got {kind(value)}")
    _check_json(value)
    plain: list[Any] = _plain(value, {})
    return plain


def json_mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, got {kind(value)}")
    _check_json(value)
    plain: dict[str, Any] = _plain(value, {})
    return plain


_JSON_LEAVES = frozenset({str, int, bool, type(None)})


def _check_json(value: object) -> None:
    found = _not_json(value, set())
    if found is None:
        return
    parts, what, bad = found
    path = "".join(reversed(parts)).lstrip(".")
    at = f" at {path}" if path else ""
    if what == "key":
        raise ValueError(f"key {bad!r}{at} is not a string (JSON keys are strings)")
    if what == "float":
        raise ValueError(f"{bad!r}{at} is not valid in JSON")
    raise ValueError(
        f"{at.strip() or 'value'} is a {type(bad).__name__} ({bad!r}), "
        "not JSON-serialisable; quote it to pass a string"
    )


def _not_json(value: object, seen: set[int]) -> tuple[list[str], str, object] | None:
    """The first thing JSON cannot carry: (path, innermost part first; what; the value). Each
    container is looked at once: a list repeated through aliases need not be checked again."""
    if isinstance(value, dict | list):
        if id(value) in seen:
            return None
        seen.add(id(value))
        is_dict = isinstance(value, dict)
        for key, item in value.items() if is_dict else enumerate(value):  # type: ignore[union-attr]
            if is_dict and not isinstance(key, str):
                return [], "key", key
            if type(item) in _JSON_LEAVES:  # most values: skip the call
                continue
            found = _not_json(item, seen)  # recursion: yamlfile caps the depth at 64
            if found is not None:
                found[0].append(f".{key}" if is_dict else f"[{key}]")
                return found
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else ([], "float", value)
    if isinstance(value, str | int) or value is None:
        return None
    return [], "type", value


def _plain(value: Any, done: dict[int, Any]) -> Any:
    """YMap/YList to dict/list, so messages serialise without our bookkeeping; what aliases
    share stays shared, rather than being copied once per alias."""
    if not isinstance(value, dict | list):
        return value
    known = done.get(id(value))
    if known is None:
        if isinstance(value, dict):
            known = {k: _plain(v, done) for k, v in value.items()}
        else:
            known = [_plain(v, done) for v in value]
        done[id(value)] = known
    return known
