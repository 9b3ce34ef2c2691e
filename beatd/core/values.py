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

E = TypeVar("E", bound=Enum)


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and errors."""
    parts = urlsplit(url)
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


def task_name(value: object) -> str:
    name = text(value)
    if len(name.encode()) > 255 or len(name.split()) != 1:
        raise ValueError(f"{name!r}: a task name has no spaces and at most 255 bytes")
    return name


def routing_key(value: object) -> str:
    if not isinstance(value, str) or len(value.encode()) > 255:
        raise ValueError(f"must be a string of at most 255 bytes, got {kind(value)}")
    return value


def exchange_name(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[\w.:-]{0,127}", value):
        raise ValueError(
            f"{value!r} is not an exchange name (letters, digits, _ . : -, at most 127)"
        )
    return value


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
    for item in items:
        if not isinstance(item, str) or urlsplit(item).scheme not in ("amqp", "amqps"):
            shown = redact(item) if isinstance(item, str) else kind(item)
            raise ValueError(f"{shown!r} is not an amqp:// or amqps:// URL")
    return tuple(items)


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
        result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return result


def json_list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list, got {kind(value)}")
    _check_json(value, "")
    return [_plain(item) for item in value]


def json_mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, got {kind(value)}")
    _check_json(value, "")
    return {key: _plain(item) for key, item in value.items()}


def _check_json(value: object, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r}{_at(path)} is not a string (JSON keys are strings)")
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r}{_at(path)} is not valid in JSON")
    elif not isinstance(value, str | int | float | bool) and value is not None:
        raise ValueError(
            f"{_at(path).strip() or 'value'} is a {type(value).__name__} ({value!r}), "
            "not JSON-serialisable; quote it to pass a string"
        )


def _at(path: str) -> str:
    return f" at {path.lstrip('.')}" if path else ""


def _plain(value: object) -> object:
    """YMap/YList to dict/list, so messages serialise without our bookkeeping."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
