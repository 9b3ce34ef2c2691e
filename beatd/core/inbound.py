"""What a worker accepts from the broker before it decides anything about a delivery: its size,
properties and headers, then its body (messages.parse_beatd). Pure.

Anyone who can publish to the worker's exchange can send anything: every check here is total
(a result or MalformedMessage, never another exception) and bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from beatd.core.messages import (
    DEFAULT_MAX_BODY,
    MalformedMessage,
    Properties,
    Received,
    parse_beatd,
)

# How the attempt number travels with a retried message. Absent: the first attempt.
ATTEMPT_HEADER = "beatd-attempt"
MAX_ATTEMPT = 1000  # retries are at most 100: a bigger attempt number is forged
# Headers as pika decoded them. Bounds that beatd's own messages are far inside, so a forged
# table costs a bounded walk and re-publishing it (as a dead letter) cannot fail to encode.
MAX_HEADER_DEPTH = 8
MAX_HEADER_FIELDS = 1000
_INT64 = 2**63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Set by the broker adapter on a delivery whose properties it could not decode (headers nested
# hundreds deep, a timestamp past year 9999): the message is then refused, never retried.
UNDECODABLE_HEADER = "beatd-undecodable-properties"


def admit(properties: Properties, body: bytes, *, max_body: int = DEFAULT_MAX_BODY) -> Received:
    """Check a delivery's size, properties and headers, then parse its body; return the
    message or raise MalformedMessage (one short reason). Total, like parse_beatd."""
    if len(body) > max_body:  # first: nothing of an oversized body is decoded
        raise MalformedMessage(
            f"body is {len(body)} bytes, over the {max_body} bytes limit (worker.max_body)"
        )
    problem = _property_problem(properties) or _header_problem(properties.headers)
    if problem:
        raise MalformedMessage(problem)
    message = parse_beatd(body, max_body=max_body)
    if properties.message_id and properties.message_id != message.id:
        shown = repr(properties.message_id[:80])
        raise MalformedMessage(f"message_id {shown} is not the body's id {message.id!r}")
    return message


_TEXT_PROPERTIES = (
    "message_id", "content_type", "content_encoding", "type", "app_id", "expiration",
    "correlation_id", "reply_to",
)  # fmt: skip


def _property_problem(p: Properties) -> str:
    for name in _TEXT_PROPERTIES:
        value = getattr(p, name)
        # pika gives bytes for a short string that is not UTF-8
        if value is not None and (not isinstance(value, str) or not _short_ok(value)):
            return f"property {name} is not UTF-8 text of at most 255 bytes"
    content_type = (p.content_type or "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        return f"content_type {p.content_type!r} is not application/json"
    if (p.content_encoding or "utf-8").lower() not in ("utf-8", "utf8"):
        return f"content_encoding {p.content_encoding!r} is not utf-8"
    if p.timestamp is not None and not 0 <= p.timestamp < 2**64:
        return "property timestamp is out of range"
    if not isinstance(p.headers, Mapping):
        return "headers are not a table"
    return ""


def _header_problem(headers: Mapping[Any, Any]) -> str:
    undecodable = headers.get(UNDECODABLE_HEADER)
    if undecodable is not None:
        return f"properties could not be decoded: {undecodable}"
    fields = _fields_ok(headers, 1, MAX_HEADER_FIELDS, floats=True)
    if fields < 0:
        return (
            f"headers hold more than {MAX_HEADER_FIELDS} fields, nest more than "
            f"{MAX_HEADER_DEPTH} deep, or hold a value that cannot be sent on"
        )
    attempt = headers.get(ATTEMPT_HEADER)
    if attempt is not None and (type(attempt) is not int or not 1 <= attempt <= MAX_ATTEMPT):
        return f"header {ATTEMPT_HEADER} is not a whole number 1-{MAX_ATTEMPT}"
    return ""


def _fields_ok(table: Mapping[Any, Any], depth: int, budget: int, *, floats: bool) -> int:
    """What is left of budget after checking a table; -1 if it is out of bounds. Recursion
    is bounded by MAX_HEADER_DEPTH, the walk by the budget."""
    for key, value in table.items():
        budget -= 1
        if budget < 0 or not _short_ok(key):
            return -1
        budget = _value_ok(value, depth, budget, floats=floats)
        if budget < 0:
            return -1
    return budget


def _short_ok(text: object) -> bool:
    """An AMQP short string pika can encode: at most 255 bytes of UTF-8 (or raw bytes)."""
    if isinstance(text, str):
        try:
            return len(text.encode()) <= 255
        except UnicodeEncodeError:
            return False
    return isinstance(text, bytes) and len(text) <= 255


def _value_ok(value: object, depth: int, budget: int, *, floats: bool) -> int:
    """Whether value is in bounds and pika can encode it again, as _fields_ok. pika decodes
    floats but cannot encode them (1.4): a float header is admitted, never sent on."""
    if isinstance(value, dict | list):
        if depth >= MAX_HEADER_DEPTH:
            return -1
        if isinstance(value, dict):
            return _fields_ok(value, depth + 1, budget, floats=floats)
        for item in value:
            budget -= 1
            if budget < 0:
                return -1
            budget = _value_ok(item, depth + 1, budget, floats=floats)
            if budget < 0:
                return -1
        return budget
    if isinstance(value, float):
        return budget if floats else -1
    if value is None or isinstance(value, bool | bytes):
        return budget
    if isinstance(value, int):
        return budget if -_INT64 <= value < _INT64 else -1
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return -1
        return budget
    if isinstance(value, datetime):
        return budget if _timestamp_ok(value) else -1
    if isinstance(value, Decimal):
        return budget if _decimal_ok(value) else -1
    return -1


def _timestamp_ok(moment: datetime) -> bool:
    """pika sends a datetime as unsigned POSIX seconds."""
    try:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except OverflowError:
        return False
    return utc >= _EPOCH


def _decimal_ok(value: Decimal) -> bool:
    """AMQP decimals are a scale octet and a signed 32-bit integer."""
    if not value.is_finite():
        return False
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if not -255 <= exponent <= 9:
        return False
    raw = int(normal.scaleb(-exponent)) if exponent < 0 else int(normal)
    return -(2**31) <= raw < 2**31


def sendable_headers(headers: object) -> tuple[dict[Any, Any], int]:
    """The headers pika can encode again, and how many others were left out."""
    kept: dict[Any, Any] = {}
    if not isinstance(headers, Mapping):
        return kept, 0
    dropped = 0
    for key, value in headers.items():
        if _short_ok(key) and _value_ok(value, 1, MAX_HEADER_FIELDS, floats=False) >= 0:
            kept[key] = value
        else:
            dropped += 1
    return kept, dropped


def sendable_text(value: str | None) -> str | None:
    """A short-string property as it can be sent on, or None."""
    return value if value is None or _short_ok(value) else None
