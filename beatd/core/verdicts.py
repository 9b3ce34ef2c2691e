"""What the worker does with a delivered message, and what it tells the broker afterwards.

Pure: the clock, the run-id store's answer and whether the run is in progress here are
arguments. worker.py does the I/O around these decisions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from beatd.core import inbound
from beatd.core.commands import ArgsRefused, command_argv
from beatd.core.config import TaskConfig
from beatd.core.messages import Properties, Received, iso_utc

ATTEMPT_HEADER = inbound.ATTEMPT_HEADER  # how the attempt number travels; absent: the first
REASON_HEADER = "beatd-reason"
DETAIL_HEADER = "beatd-detail"
DROPPED_HEADER = "beatd-dropped-headers"

# A run started this many times without ever finishing took the worker down with it each
# time (out of memory, a segfaulting extension, SIGKILL): dead-letter it, do not loop.
MAX_STARTS = 3
MAX_RETRY_DELAY = timedelta(hours=1)


class Phase(Enum):
    """How far one attempt of a run got. The outcome is recorded *before* the broker is told
    (dead letter, retry, ack), so a redelivery after a crash finishes the telling instead of
    running the job again."""

    RUNNING = "running"  # started, not finished: if the worker died here, run it again
    DEAD = "dead"  # finished badly; its dead letter may not be confirmed yet
    RETRY = "retry"  # failed with retries left; the next attempt may not be published yet
    DONE = "done"  # finished and settled: any further copy is a duplicate


@dataclass(frozen=True, slots=True)
class Seen:
    id: str
    attempt: int
    phase: Phase
    starts: int = 1
    reason: str = ""
    detail: str = ""


class Reason(Enum):
    """Why a message went to the dead-letter exchange (the `beatd-reason` header)."""

    MALFORMED = "malformed"  # not a beatd v1 message, or properties/headers out of bounds
    REFUSED = "refused"  # args the task does not take (README: Security)
    BAD_SIGNATURE = "bad_signature"  # unsigned, forged, wrongly keyed or replayed (signing:)
    UNKNOWN_TASK = "unknown_task"  # a task this worker's file does not define
    EXPIRED = "expired"  # expires_at passed before it could start
    FAILED = "failed"  # non-zero exit, a signal, an exception
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # started MAX_STARTS times and never finished


class Verdict(Enum):
    RUN = "run"
    DUPLICATE = "duplicate"  # ack and skip: it ran (or is settled) already
    JOIN = "join"  # a redelivery of the run in progress here: settle it with that run
    RESUME = "resume"  # finished badly before a crash: finish telling the broker, do not run
    REJECT = "reject"  # dead-letter it with `reason`


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason | None = None
    detail: str = ""


def attempt_of(headers: Mapping[str, Any]) -> int:
    if not isinstance(headers, Mapping):  # admit() refuses such a message; this must not raise
        return 1
    value = headers.get(ATTEMPT_HEADER)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def judge(
    message: Received,
    attempt: int,
    seen: Seen | None,
    *,
    in_progress: bool,
    known_task: bool,
    now: datetime,
    task: TaskConfig | None = None,
) -> Decision:
    """Decide what to do with a well-formed message (the order of the checks matters).
    Given the task, a command's args are checked against its `args:` before anything runs."""
    if in_progress:
        return Decision(Verdict.JOIN, detail="redelivered while it runs here")
    if seen is not None:
        if attempt < seen.attempt:
            return Decision(Verdict.DUPLICATE, detail=f"attempt {seen.attempt} already started")
        if attempt == seen.attempt:
            if seen.phase is Phase.DONE:
                return Decision(Verdict.DUPLICATE, detail="already finished")
            if seen.phase in (Phase.DEAD, Phase.RETRY):
                return Decision(Verdict.RESUME, detail=f"finished ({seen.reason}) before a restart")
            if seen.starts >= MAX_STARTS:
                detail = f"started {seen.starts} times and never finished (did it kill the worker?)"
                return Decision(Verdict.REJECT, Reason.INTERRUPTED, detail)
        elif _finished_for_good(seen, task):
            # Only a retried attempt has a successor: a later attempt of a run that succeeded
            # or was dead-lettered is a forged header, and a finished run never runs again.
            outcome = f"dead-lettered, {seen.reason}" if seen.reason else "succeeded"
            return Decision(Verdict.DUPLICATE, detail=f"already finished ({outcome})")
    if not known_task:
        return Decision(
            Verdict.REJECT,
            Reason.UNKNOWN_TASK,
            f"task {message.task!r} is not in this worker's file",
        )
    if task is not None and task.command is not None:
        try:
            command_argv(task.command, task.args, message.args)
        except ArgsRefused as exc:
            return Decision(Verdict.REJECT, Reason.REFUSED, str(exc))
    # Only a first attempt can expire: a retry continues a run that did start in time.
    if attempt == 1 and message.expires_at is not None and now >= message.expires_at:
        late = (now - message.expires_at).total_seconds()
        return Decision(
            Verdict.REJECT,
            Reason.EXPIRED,
            f"expired at {iso_utc(message.expires_at)} ({late:.1f}s ago)",
        )
    return Decision(Verdict.RUN)


_RETRIED_REASONS = frozenset({Reason.FAILED.value, Reason.TIMED_OUT.value})


def _finished_for_good(seen: Seen, task: TaskConfig | None) -> bool:
    """Whether seen's attempt succeeded or was dead-lettered (settled or not), rather than
    retried. A settled retry is DONE with its reason, as a dead letter is: it was a retry if
    its reason retries and the task had retries left (as the task is now: a reload that
    lowered them ends the run; without the task, it cannot be told, and the run is refused
    as an unknown task next)."""
    if seen.phase is Phase.DEAD:
        return True
    if seen.phase is not Phase.DONE:
        return False  # RETRY, or RUNNING: it never finished
    if not seen.reason:
        return True
    if task is None:
        return False
    return seen.reason not in _RETRIED_REASONS or seen.attempt > task.retries


def retry_delay(first: timedelta, attempt: int) -> timedelta:
    """The wait before attempt+1: first, then doubling, capped at MAX_RETRY_DELAY (or at
    first, if that is longer already)."""
    cap_s = max(first, MAX_RETRY_DELAY).total_seconds()
    return timedelta(seconds=min(first.total_seconds() * 2.0 ** min(attempt - 1, 60), cap_s))


def retry_queue(queue: str, delay: timedelta) -> str:
    """One holding queue per delay: a queue-wide TTL expires messages strictly in order, where
    per-message TTLs in one queue would let a long delay hold up a short one behind it."""
    return f"{queue}.retry.{round(delay.total_seconds() * 1000)}ms"


def retry_queue_arguments(queue: str, delay: timedelta) -> dict[str, Any]:
    ms = round(delay.total_seconds() * 1000)
    return {
        "x-message-ttl": ms,
        # Expired messages go back through the default exchange straight to this worker's
        # queue (not to the topic exchange, where other workers' bindings would match too).
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        # Deleted when unused: every retry publish re-declares it, and its last message
        # leaves after `ms`, so twice that plus a minute never drops a waiting retry.
        "x-expires": 2 * ms + 60_000,
    }


def worker_queue_arguments(
    queue_type: str, dead_letter_exchange: str, queue: str
) -> dict[str, Any]:
    """The work queue's arguments. The broker itself dead-letters what the worker never sees:
    runs whose per-message TTL (`expires`) passed while they waited in the queue."""
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-routing-key": queue,
    }
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return arguments


def onward(
    properties: Properties, headers: Mapping[str, Any], *, message_id: str | None = None
) -> Properties:
    """A copy of a consumed message's properties for re-publishing, with extra headers and
    without what could not be sent again.

    The per-message TTL is dropped: a dead letter must not expire from the dead-letter queue,
    and a retry's TTL in its holding queue would release it early, into the work queue.
    """
    # A header that could not be encoded again would make the dead letter itself fail: drop
    # it (it is why the message is dead-lettered) and say how many went.
    kept, dropped = inbound.sendable_headers(properties.headers)
    if dropped:
        kept[DROPPED_HEADER] = dropped
    timestamp = properties.timestamp
    # What pika decoded it can encode; a Properties built otherwise may not be (over 255 bytes).
    text = inbound.sendable_text
    return replace(
        properties,
        message_id=message_id or text(properties.message_id) or "",
        content_type=text(properties.content_type) or "",
        content_encoding=text(properties.content_encoding),
        type=text(properties.type),
        app_id=text(properties.app_id) or "",
        correlation_id=text(properties.correlation_id),
        reply_to=text(properties.reply_to),
        expiration=None,
        delivery_mode=2,
        timestamp=timestamp if timestamp is None or 0 <= timestamp < 2**64 else None,
        headers={**kept, **headers},
    )


def dead_letter_headers(
    reason: Reason,
    detail: str,
    *,
    queue: str,
    routing_key: str,
    attempt: int,
    worker: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        REASON_HEADER: reason.value,
        DETAIL_HEADER: detail[:1000],
        ATTEMPT_HEADER: attempt,
        "beatd-queue": queue,
        "beatd-routing-key": routing_key,
        "beatd-dead-at": iso_utc(now, millis=True),
        "beatd-worker": worker,
    }


class Event(Enum):
    """What the worker publishes on the events exchange, routing key `<event>.<job>`."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


def event_for(reason: Reason) -> Event:
    return {
        Reason.EXPIRED: Event.EXPIRED,
        Reason.FAILED: Event.FAILED,
        Reason.TIMED_OUT: Event.TIMED_OUT,
        Reason.INTERRUPTED: Event.FAILED,
    }.get(reason, Event.REJECTED)


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What an event says about a run; fields unknown at the time stay None."""

    run_id: str
    job: str
    task: str
    attempt: int = 1
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    output: str = ""
    reason: str | None = None
    detail: str = ""
    retry_in: timedelta | None = None


def event_routing_key(event: Event, job: str) -> str:
    return f"{event.value}.{job or '_'}"


def event_body(event: Event, facts: RunFacts, *, queue: str, worker: str, now: datetime) -> bytes:
    """One event as JSON: times in UTC ISO 8601, the duration in seconds."""
    duration_s = None
    if facts.started_at is not None and facts.finished_at is not None:
        duration_s = round((facts.finished_at - facts.started_at).total_seconds(), 6)
    body = {
        "event": event.value,
        "job": facts.job,
        "task": facts.task,
        "run_id": facts.run_id,
        "attempt": facts.attempt,
        "scheduled_at": _iso(facts.scheduled_at),
        "started_at": _iso(facts.started_at),
        "finished_at": _iso(facts.finished_at),
        "duration_s": duration_s,
        "exit_code": facts.exit_code,
        "output": facts.output,
        "reason": facts.reason,
        "detail": facts.detail,
        "retry_in_s": None if facts.retry_in is None else facts.retry_in.total_seconds(),
        "queue": queue,
        "worker": worker,
        "at": iso_utc(now, millis=True),
    }
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    except UnicodeEncodeError:  # a lone surrogate from a malformed message's properties
        return json.dumps(body, separators=(",", ":"), default=str).encode()


def event_properties(event: Event, facts: RunFacts, now: datetime) -> Properties:
    return Properties(
        message_id=f"{facts.run_id}#{facts.attempt}:{event.value}",
        type=f"beatd.{event.value}",
        timestamp=int(now.timestamp()),
        delivery_mode=1,  # telemetry: not worth a disk write per run on the broker
        headers={"beatd-job": facts.job, "beatd-event": event.value},
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_utc(moment.astimezone(UTC), millis=True)
