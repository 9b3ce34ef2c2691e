"""What goes on the wire: runs (job + slot), slot ids, and beatd-format messages (version 1).
Pure: the publish time is an argument; nothing here touches a socket."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from beatd.core.config import Job
from beatd.core.signing import SIGNATURE_HEADER, Key, sign_ahead

FORMAT_VERSION = 1


class Trigger(Enum):
    SCHEDULE = "schedule"  # an on-time slot
    CATCHUP = "catchup"  # a missed slot published late under its misfire policy
    MANUAL = "manual"  # `beatd trigger`


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a job: the job and its slot (or, for a manual run, the time it was asked for)."""

    job: Job
    slot: datetime
    trigger: Trigger = Trigger.SCHEDULE
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", slot_id(self.job.name, self.slot))

    @classmethod
    def manual(cls, job: Job, now: datetime) -> Run:
        return cls(job, now, Trigger.MANUAL, f"{job.name}@manual-{uuid.uuid4()}")

    @property
    def expires_at(self) -> datetime | None:
        return None if self.job.expires is None else self.slot + self.job.expires


@dataclass(frozen=True, slots=True)
class Properties:
    """The AMQP basic properties beatd sets; the broker module maps them onto pika's."""

    message_id: str
    content_type: str = "application/json"
    content_encoding: str | None = "utf-8"
    delivery_mode: int = 2  # persistent
    type: str | None = None
    app_id: str = "beatd"
    timestamp: int | None = None  # POSIX seconds
    priority: int | None = None
    expiration: str | None = None  # per-message TTL, milliseconds as a string (AMQP says so)
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to publish, with the run it carries."""

    run: Run
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    # Make sure this queue exists before publishing (Celery's producer declares its target
    # queue the same way; see celery_format for how it must be declared). None: nothing to do.
    queue: str | None = None


def slot_id(job: str, slot: datetime) -> str:
    """`<job>@20261121T053000Z`: the same slot always gets the same id, so executors can drop
    a re-published duplicate. Sub-second slots (every: 500ms) keep their milliseconds."""
    return f"{job}@{compact_utc(slot)}"


@functools.lru_cache(maxsize=1024)  # a burst formats the same slot thousands of times
def compact_utc(moment: datetime) -> str:
    """20261121T053000Z (with .500 before the Z for sub-second slots)."""
    m = moment.astimezone(UTC)
    ms = f".{m.microsecond // 1000:03d}" if m.microsecond else ""
    # f-strings, not strftime: three times faster, and a burst formats thousands of these
    return f"{m.year:04d}{m.month:02d}{m.day:02d}T{m.hour:02d}{m.minute:02d}{m.second:02d}{ms}Z"


def iso_utc(moment: datetime, *, millis: bool = False) -> str:
    """2026-11-21T05:30:00Z; with millis=True always three decimals (published_at)."""
    m = moment.astimezone(UTC)
    ms = f".{m.microsecond // 1000:03d}" if millis or m.microsecond else ""
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}{ms}Z"


def ttl_ms(run: Run, published_at: datetime) -> int | None:
    """Milliseconds the run may still wait in a queue; None if it never expires."""
    expires_at = run.expires_at
    if expires_at is None:
        return None
    return max(0, int((expires_at - published_at) / timedelta(milliseconds=1)))


def beatd_message(run: Run, published_at: datetime, exchange: str) -> Outgoing:
    """The beatd format, version 1 (see README: Messages)."""
    return BeatdTemplate(run.job, exchange).build(run, published_at)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class BeatdTemplate:
    """A job's beatd-format message with everything that does not change between runs
    serialised once: a burst of 10,000 runs then costs string formatting, not json.dumps."""

    __slots__ = ("exchange", "job", "routing_key", "static")

    def __init__(self, job: Job, exchange: str) -> None:
        self.job = job
        self.exchange = job.exchange if job.exchange is not None else exchange
        self.routing_key = job.routing_key if job.routing_key is not None else job.task
        self.static = (
            f',"job":{_json(job.name)},"task":{_json(job.task)}'
            f',"args":{_json(list(job.args))},"kwargs":{_json(dict(job.kwargs))}'
        )

    def build(self, run: Run, published_at: datetime) -> Outgoing:
        return self.draft(run)(published_at)

    def draft(self, run: Run) -> Draft:
        """Everything about run's message but its publish time: the scheduler drafts a burst
        before the slot and only stamps each message as it sends it."""
        return _BeatdDraft(self, run)

    def signed_draft(self, run: Run, key: Key, signed_at: datetime) -> Draft:
        """A draft signed as of signed_at, as far as it can be before its publish time."""
        return _SignedBeatdDraft(self, run, key, signed_at)


Draft = Callable[[datetime], Outgoing]  # published_at -> the message
STAMP_LENGTH = len("2026-11-21T05:30:00.004Z")  # published_at: iso_utc(..., millis=True)


class _BeatdDraft:
    __slots__ = ("head", "headers", "job", "run", "tail", "template")

    def __init__(self, template: BeatdTemplate, run: Run) -> None:
        job = template.job
        scheduled_at = iso_utc(run.slot)
        self.template, self.run, self.job = template, run, job
        expires_at = run.expires_at
        expires = "null" if expires_at is None else f'"{iso_utc(expires_at)}"'
        # Job names are [\w.:/-] (config.JOB_NAME): an id never needs JSON escaping.
        self.head = (
            f'{{"v":{FORMAT_VERSION},"id":"{run.id}"{template.static}'
            f',"scheduled_at":"{scheduled_at}","published_at":"'
        )
        self.tail = f'","expires_at":{expires},"trigger":"{run.trigger.value}"}}'
        self.headers = {
            "beatd-job": job.name,
            "beatd-scheduled-at": scheduled_at,
            "beatd-format": FORMAT_VERSION,
        }

    def __call__(self, published_at: datetime) -> Outgoing:
        return self.stamped(published_at, iso_utc(published_at, millis=True), self.headers)

    def stamped(self, published_at: datetime, stamp: str, headers: Mapping[str, Any]) -> Outgoing:
        ttl = ttl_ms(self.run, published_at)
        body = self.head + stamp + self.tail
        properties = Properties(
            message_id=self.run.id,
            type=self.job.task,
            timestamp=int(published_at.timestamp()),
            priority=self.job.priority,
            expiration=None if ttl is None else str(ttl),
            headers=headers,
        )
        template = self.template
        return Outgoing(
            self.run, template.exchange, template.routing_key, body.encode(), properties
        )


class _SignedBeatdDraft:
    """A signed draft: everything signed but the end of the body (the publish time and what
    follows it) goes into the MAC when drafting, so that at the slot signing a message costs
    a copy of the MAC and a few dozen bytes, not the whole HMAC and a copy of the message."""

    __slots__ = ("draft", "headers", "mac")

    def __init__(self, template: BeatdTemplate, run: Run, key: Key, signed_at: datetime) -> None:
        draft = self.draft = _BeatdDraft(template, run)
        head = draft.head.encode()
        # iso_utc(..., millis=True) is 24 characters for every year a datetime can hold.
        length = len(head) + STAMP_LENGTH + len(draft.tail.encode())
        self.mac, signature = sign_ahead(
            key,
            message_id=run.id,
            routing_key=template.routing_key,
            body_length=length,
            signed_at=signed_at,
        )
        self.mac.update(head)
        self.headers = {**draft.headers, **signature}

    def __call__(self, published_at: datetime) -> Outgoing:
        draft = self.draft
        stamp = iso_utc(published_at, millis=True)
        mac = self.mac.copy()
        mac.update((stamp + draft.tail).encode())
        headers = {**self.headers, SIGNATURE_HEADER: mac.hexdigest()}
        return draft.stamped(published_at, stamp, headers)


# What an executor accepts (README: Security). A body over the limit is refused before it is
# decoded; the rest keep a forged message from wedging a worker or writing into its log.
DEFAULT_MAX_BODY = 1024 * 1024
MAX_DEPTH = 32  # JSON nesting, counting the body object itself
MAX_NAME_BYTES = 255  # an id, job or task name: one AMQP short string
TRIGGERS = frozenset(t.value for t in Trigger)


class MalformedMessage(ValueError):
    """A delivered message is not a valid beatd v1 message; str() is the reason, one short line.

    A ValueError, deliberately not a BeatdError: the worker stops on a BeatdError (its own
    store failed), while a bad message is only dead-lettered.
    """


@dataclass(frozen=True, slots=True)
class Received:
    """A beatd-format message as an executor sees it, validated."""

    id: str
    job: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    scheduled_at: datetime
    published_at: datetime | None
    expires_at: datetime | None
    trigger: str
    raw: dict[str, Any]


def parse_beatd(body: bytes, *, max_body: int = DEFAULT_MAX_BODY) -> Received:
    """Validate a beatd-format body. Total: for any bytes it returns a Received or raises
    MalformedMessage saying what is wrong, never anything else."""
    data = _load(body, max_body)
    version = data.get("v")
    if type(version) is not int or version != FORMAT_VERSION:  # not True, not 1.0
        raise MalformedMessage(f"not a beatd version {FORMAT_VERSION} message (v={_show(version)})")
    for key in ("id", "job", "task"):
        _check_name(data, key)
    trigger = data.get("trigger")
    if trigger not in TRIGGERS:
        allowed = ", ".join(sorted(TRIGGERS))
        raise MalformedMessage(f"'trigger' is {_show(trigger)}, not one of {allowed}")
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list):
        raise MalformedMessage("'args' is not a list")
    if not isinstance(kwargs, dict):
        raise MalformedMessage("'kwargs' is not an object")
    return Received(
        id=data["id"],
        job=data["job"],
        task=data["task"],
        args=args,
        kwargs=kwargs,
        scheduled_at=_parse_time(data, "scheduled_at"),
        published_at=_parse_time(data, "published_at", optional=True),
        expires_at=_parse_time(data, "expires_at", optional=True),
        trigger=trigger,
        raw=data,
    )


# A \uD800-\uDFFF escape: only then can json.loads produce a lone surrogate, which no UTF-8
# encoder (a log handler, pika, execve's argv) accepts.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _load(body: bytes, max_body: int) -> dict[str, Any]:
    if len(body) > max_body:
        raise MalformedMessage(
            f"body is {len(body)} bytes, over the {max_body} bytes limit (worker.max_body)"
        )
    try:
        # Strict UTF-8 first: json.loads(bytes) would also take UTF-16/32 and encoded surrogates.
        data = json.loads(
            body.decode("utf-8"), object_pairs_hook=_object, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"body is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise MalformedMessage(f"body is nested more than {MAX_DEPTH} deep") from None
    except MalformedMessage:
        raise
    except ValueError as exc:  # JSONDecodeError, and int() of more than 4300 digits
        raise MalformedMessage(f"body is not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise MalformedMessage("body is not a JSON object")
    # Counting brackets is C-speed; only a body with many of them gets its depth measured.
    if body.count(b"[") + body.count(b"{") >= MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise MalformedMessage(f"body is nested more than {MAX_DEPTH} deep")
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise MalformedMessage("body has a lone surrogate escape (not valid Unicode)") from None
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key given twice means two parsers (this one, a command reading stdin) may disagree
    # about which value counts: refuse rather than pick one.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MalformedMessage("body has a key twice in one object")
    return result


def _no_constant(name: str) -> None:
    raise MalformedMessage(f"body has {name}, which is not JSON")


def _depth(data: object) -> int:
    """The nesting depth of parsed JSON, without recursion (bounded by the body's size)."""
    deepest, stack = 0, [(data, 1)]
    items: Iterable[object]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(value, dict):
            items = value.values()
        elif isinstance(value, list):
            items = value
        else:
            continue
        stack.extend((item, depth + 1) for item in items if isinstance(item, list | dict))
    return deepest


def _check_name(data: Mapping[str, Any], key: str) -> None:
    """An id, job or task name: goes into log lines, the environment of commands and AMQP
    short strings, so no control or format characters (a newline would forge a log line, a
    U+202E would disguise one), no spaces, and at most 255 bytes."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"{key!r} is missing or not a string")
    # isprintable() is False for Cc, Cf, Cs, Co, Cn, Zl, Zp and every space but " ".
    if not value.isprintable() or " " in value:
        raise MalformedMessage(f"{key!r} has a space or an unprintable character: {_show(value)}")
    if len(value.encode()) > MAX_NAME_BYTES:
        raise MalformedMessage(f"{key!r} is longer than {MAX_NAME_BYTES} bytes")


def _show(value: object) -> str:
    """A bad value for a reason: repr escapes control characters and lone surrogates."""
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _parse_time(data: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise MalformedMessage(f"{key!r} is not an ISO 8601 time: {_show(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedMessage(f"{key!r} is not an ISO 8601 time: {_show(value)}") from None
    if moment.tzinfo is None:
        raise MalformedMessage(f"{key!r} has no UTC offset: {_show(value)}")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise MalformedMessage(f"{key!r} is out of range in UTC: {_show(value)}") from None
