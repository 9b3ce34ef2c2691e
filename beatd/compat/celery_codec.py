"""Celery task messages (protocol v2, JSON) for `format: celery` jobs, so a stock Celery 5 worker
runs beatd's runs exactly as it runs celery beat's. Pure: no I/O, no clock; celery is not imported.

The headers, properties and routing copy Celery 5.7: `AMQP.as_task_v2` and `send_task_message`
(celery/app/amqp.py) as called by `Scheduler.apply_async` (celery/beat.py), and what the worker's
`Request.__init__` (celery/worker/request.py) reads back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from beatd.core.config import Job
from beatd.core.messages import Outgoing, Properties, Run, iso_utc, ttl_ms

DEFAULT_QUEUE = "celery"  # Celery's task_default_queue
# Fixed forever: a slot's task id must be the same from every beatd release and every host, so a
# re-published slot (a crash between confirm and record, two schedulers) carries the same id.
TASK_ID_NAMESPACE = uuid.UUID("f9cd4425-a265-5214-b43e-319dc0dfb67a")
REPR_MAX = 1024  # Celery's AMQP.argsrepr_maxsize and kwargsrepr_maxsize
ORIGIN = "beatd"  # Celery puts its anon_nodename() here ("gen<pid>@<host>"); shown by Flower

# Every header as_task_v2 sets in Celery 5.7, plus what celery beat adds (celery_beat_task, since
# celery/celery#9702) and what django-celery-beat's scheduler adds (periodic_task_name).
HEADERS = (
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps", "celery_beat_task", "periodic_task_name",
)  # fmt: skip
EMBED_KEYS = ("callbacks", "errbacks", "chain", "chord")
_INT64 = 2**63
_SAMPLE_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def task_id(run: Run) -> str:
    """The Celery task id of a run: a UUID derived from the run id, so the same slot always has
    the same task id (a manual run's id is already unique)."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, run.id))


def route(job: Job) -> tuple[str, str, str | None]:
    """Return (exchange, routing key, queue to make sure of) the way Celery's send_task_message
    routes a task to a queue whose exchange is direct (every queue Celery creates by itself):
    unless both `exchange` and `routing_key` are given, it publishes to the default exchange ''
    with the queue's name as the routing key, ignoring a lone routing_key or exchange."""
    queue = job.queue or DEFAULT_QUEUE
    if job.exchange and job.routing_key is not None:
        return job.exchange, job.routing_key, job.queue
    return "", queue, queue


def celery_message(run: Run, published_at: datetime, default_exchange: str) -> Outgoing:
    """Build the Celery task message for a run; raise CeleryMessageError if a worker would choke.

    default_exchange (beatd's own `broker.exchange`) is deliberately unused: no Celery worker
    consumes from it, and Celery's default route is the default exchange '' (see `route`).
    """
    del default_exchange
    job = run.job
    tid = task_id(run)
    args, kwargs = list(job.args), dict(job.kwargs)
    expires_at = run.expires_at
    headers: dict[str, Any] = {
        "lang": "py",
        "task": job.task,
        "id": tid,
        "shadow": None,
        "eta": None,
        # Celery sends an ISO 8601 string with an offset; the worker rejects an epoch number.
        "expires": None if expires_at is None else expires_at.astimezone(UTC).isoformat(),
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],  # [hard, soft]: None lets the worker use the task's own
        "root_id": tid,
        "parent_id": None,
        "argsrepr": _short_repr(args or ()),  # as as_task_v2 writes it: "()" or "[30]"
        "kwargsrepr": _short_repr(kwargs),
        "origin": ORIGIN,
        # None, not False: the worker then applies the task's own ignore_result (5.7's
        # get_actual_ignore_result); False would store results the task asked to ignore.
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        "celery_beat_task": True,
        "periodic_task_name": job.name,
        "beatd-scheduled-at": iso_utc(run.slot),
    }
    body = [args, kwargs, dict.fromkeys(EMBED_KEYS)]
    # Celery 5 also sets a per-message TTL when a task has `expires` (Celery.send_task:
    # options["expiration"] = expires_s, clamped at 0), so stale runs do not pile up in a queue
    # nobody consumes; the worker's own check of the `expires` header covers the rest.
    ttl = ttl_ms(run, published_at)
    properties = Properties(
        message_id=run.id,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        timestamp=int(published_at.timestamp()),
        priority=job.priority,
        expiration=None if ttl is None else str(ttl),
        correlation_id=tid,
        headers=headers,
    )
    exchange, routing_key, queue = route(job)
    message = Outgoing(
        run=run,
        exchange=exchange,
        routing_key=routing_key,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        properties=properties,
        queue=queue,
    )
    return message


def job_problems(job: Job) -> list[str]:
    """What a stock Celery worker would reject in this job's messages, checked once when the
    job is loaded rather than per publish: only the slot and times vary between its runs."""
    sample = Run(job, _SAMPLE_TIME)
    return [
        f"job {job.name!r}: cannot build a Celery message: {problem}"
        for problem in celery_problems(celery_message(sample, _SAMPLE_TIME, ""))
    ]


def celery_problems(message: Outgoing) -> list[str]:
    """Say what, in message, a stock Celery 5 worker would reject or crash on; [] if nothing."""
    problems: list[str] = []
    props = message.properties
    if props.content_type != "application/json":
        problems.append(f"content_type is {props.content_type!r}, not 'application/json'")
    if props.content_encoding != "utf-8":
        problems.append(f"content_encoding is {props.content_encoding!r}, not 'utf-8'")
    headers = props.headers
    problems += [f"header {name!r} is missing" for name in HEADERS if name not in headers]
    for name in ("task", "id", "root_id"):
        if not isinstance(headers.get(name), str) or not headers[name]:
            problems.append(f"header {name!r} must be a non-empty string")
    if props.correlation_id != headers.get("id"):
        problems.append("correlation_id must equal the task id")
    for name in ("eta", "expires"):
        problems += _iso_problems(name, headers.get(name))
    limits = headers.get("timelimit")
    if not (
        isinstance(limits, list)
        and len(limits) == 2
        and all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in limits)
    ):
        problems.append(
            f"header 'timelimit' must be [hard, soft], whole seconds or null: {limits!r}"
        )
    problems += _header_value_problems(headers, "headers")
    problems += _body_problems(message.body)
    if props.priority is not None and not 0 <= props.priority <= 255:
        problems.append(f"priority must be 0-255, got {props.priority}")
    if props.expiration is not None and not props.expiration.isdigit():
        problems.append(f"expiration must be milliseconds as a string, got {props.expiration!r}")
    if not message.routing_key and not message.exchange:
        problems.append("no exchange and no routing key: the message would go nowhere")
    return problems


def _iso_problems(name: str, value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"header {name!r} must be an ISO 8601 string with an offset, got {value!r}"]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return [f"header {name!r} is not ISO 8601: {value!r}"]
    if moment.tzinfo is None:
        return [f"header {name!r} has no UTC offset: {value!r}"]
    return []


def _header_value_problems(value: object, where: str) -> list[str]:
    """pika's table encoder takes str, bytes, bool, int, None, lists and mappings; a float makes
    it raise (UnsupportedAMQPFieldException) and an int must fit in 64 bits."""
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _header_value_problems(v, f"{where}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _header_value_problems(v, f"{where}[{i}]")]
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return []
    if isinstance(value, int):
        return [] if -_INT64 <= value < _INT64 else [f"{where}: {value} does not fit in 64 bits"]
    return [f"{where}: a {type(value).__name__} cannot be an AMQP header value"]


def _body_problems(body: bytes) -> list[str]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return [f"body is not UTF-8 JSON: {exc}"]
    if not (isinstance(data, list) and len(data) == 3):
        return ["body must be the 3-element list [args, kwargs, embed]"]
    args, kwargs, embed = data
    problems = []
    if not isinstance(args, list):
        problems.append("body: args must be a list")
    if not isinstance(kwargs, dict):
        problems.append("body: kwargs must be an object")
    if not isinstance(embed, dict) or set(embed) != set(EMBED_KEYS):
        problems.append(f"body: embed must be an object with exactly {', '.join(EMBED_KEYS)}")
    return problems


def _short_repr(value: object) -> str:
    # Celery's saferepr truncates at argsrepr_maxsize too; these are for logs and Flower only.
    text = repr(value)
    return text if len(text) <= REPR_MAX else text[: REPR_MAX - 3] + "..."
