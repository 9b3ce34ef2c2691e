"""Control requests (`beatd status`, `pause`, `resume`) as they travel through the broker:
where they are routed, what a valid one holds, how a write is signed, and the bounds a
scheduler keeps on them (size, rate, replays). Pure: times and bytes are arguments.

A request is one JSON object: {"command": "status"} or {"command": "pause"|"resume", "job":
NAME, "note": TEXT}. Every scheduler of a schedule binds a queue of its own to the control
exchange with the schedule's routing key (`ha.name` with `ha:`, else `broker.exchange`), so
one request reaches every instance of an HA group and each answers to the `reply_to`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beatd.core import signing as signatures
from beatd.core.config import Config

COMMANDS = ("status", "pause", "resume")
WRITES = ("pause", "resume")
MAX_REQUEST_BYTES = 4096  # a pause with a 500-character note is under 1 KiB
MAX_NOTE = 500
MAX_JOB_NAME = 200
# Answers through the broker list at most this many jobs (soonest first): a 100k-job table is
# megabytes; the local socket answers in full.
MAX_JOBS_ANSWERED = 1000
# A signed pause older than this is refused: it is sent the moment the operator types it.
SIGNED_WINDOW = timedelta(seconds=60)
# The queue of one scheduler: a request nobody took within TTL is stale (the asker stopped
# waiting long ago); at most MAX_WAITING wait, the oldest dropped first, so a flood costs
# the broker bounded memory, and once it stops the backlog is gone within 2 s at the rate the
# scheduler takes them (scheduler.remote).
QUEUE_TTL_MS = 5_000
MAX_WAITING = 20
REPLY_TO = "amq.rabbitmq.reply-to"  # RabbitMQ's direct reply-to: no queue to declare
REQUEST_TYPE = "beatd.control"


def routing_key(config: Config) -> str:
    """What identifies a schedule on the control exchange: the HA group's name, else the
    exchange its runs go to (one scheduler publishes there)."""
    return config.ha.name if config.ha is not None else config.broker.exchange


def queue_arguments() -> dict[str, Any]:
    return {"x-message-ttl": QUEUE_TTL_MS, "x-max-length": MAX_WAITING, "x-overflow": "drop-head"}


@dataclass(frozen=True, slots=True)
class Request:
    command: str
    job: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            known = ", ".join(COMMANDS)
            raise ValueError(f"unknown command {self.command[:40]!r} (one of {known})")
        if self.command in WRITES and not 0 < len(self.job) <= MAX_JOB_NAME:
            raise ValueError(f"{self.command}: job must be a name of 1-{MAX_JOB_NAME} characters")
        if len(self.note) > MAX_NOTE:
            raise ValueError(f"note longer than {MAX_NOTE} characters")

    def as_dict(self) -> dict[str, str]:
        if self.command not in WRITES:
            return {"command": self.command}
        return {"command": self.command, "job": self.job, "note": self.note}

    def encode(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()


def decode(body: bytes) -> Request:
    """The request in a message body; ValueError saying what is wrong with it."""
    if len(body) > MAX_REQUEST_BYTES:
        raise ValueError(f"{len(body)} bytes, over the limit of {MAX_REQUEST_BYTES}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"not a JSON object but {type(data).__name__}")
    fields = {"command": data.get("command"), "job": data.get("job", ""), "note": data.get("note")}
    fields["note"] = fields["note"] or ""
    for name, value in fields.items():
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown field {unknown[0][:40]!r}")
    return Request(**fields)


def sign(
    key: signatures.Key, request_id: str, routing: str, body: bytes, now: datetime
) -> dict[str, Any]:
    """The headers that sign a request (request_id: its message id; routing: its routing key)."""
    return signatures.sign(
        key, message_id=request_id, routing_key=routing, body=body, signed_at=now
    )


def verify(
    signing: signatures.Signing,
    headers: Mapping[str, Any],
    request_id: str,
    routing: str,
    body: bytes,
    now: datetime,
) -> signatures.Check:
    """Check a write's signature, within SIGNED_WINDOW."""
    return signatures.verify(
        signing,
        headers,
        message_id=request_id,
        routing_key=routing,
        body=body,
        attempt=1,
        now=now,
        window=SIGNED_WINDOW,
    )


class Replays:
    """Request ids of signed writes taken within SIGNED_WINDOW (and MAX_AHEAD: a request signed
    ahead stays valid that much longer), so a captured pause cannot be sent again."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def first_time(self, request_id: str, now: datetime) -> bool:
        """Whether request_id is new (and remember it); False for a replay, or when the memory
        is full of ids still in their window (refusing is then the safe answer)."""
        keep = SIGNED_WINDOW + signatures.MAX_AHEAD
        while self._seen and now - next(iter(self._seen.values())) > keep:
            self._seen.popitem(last=False)
        if request_id in self._seen or len(self._seen) >= self.limit:
            return False
        self._seen[request_id] = now
        return True


class RateLimit:
    """A token bucket: `burst` requests at once, then `per_s` a second (monotonic seconds)."""

    def __init__(self, per_s: float, burst: int) -> None:
        self.per_s = per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def reserve(self, now_s: float) -> float:
        """Take a token; return how long to wait before its request may be handled (0: now).
        The caller waits instead of dropping: what is over the rate waits on the broker."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now_s - self._at) * self.per_s)
        self._at = now_s
        self._tokens -= 1
        return max(0.0, -self._tokens / self.per_s)


def trimmed(answer: Mapping[str, Any]) -> dict[str, Any]:
    """A status answer for the broker: at most MAX_JOBS_ANSWERED jobs, soonest next first,
    and how many were left out."""
    out = dict(answer)
    jobs = answer.get("jobs")
    if isinstance(jobs, list) and len(jobs) > MAX_JOBS_ANSWERED:
        soonest = sorted(jobs, key=lambda j: (j.get("next") is None, j.get("next") or ""))
        out["jobs"] = soonest[:MAX_JOBS_ANSWERED]
        out["jobs_left_out"] = len(jobs) - MAX_JOBS_ANSWERED
    return out
