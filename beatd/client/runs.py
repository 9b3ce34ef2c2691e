"""What the client publishes: a manual run of a job in the file, or a run of a bare task for
`beatd worker`. Pure: validation and message building; the time is an argument."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from beatd.core import durations, values
from beatd.core.config import JOB_NAME, Config, Job
from beatd.core.errors import BeatdError
from beatd.core.messages import Outgoing, Run
from beatd.core.schedules import At
from beatd.scheduler.codecs import Codecs

Expires = timedelta | float | str | None


def job_named(config: Config, name: str) -> Job:
    """The job called name in config; BeatdError with a "did you mean" otherwise."""
    job = config.job(name)
    if job is None:
        hint = difflib.get_close_matches(name, [j.name for j in config.jobs], n=1)
        also = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise BeatdError(f"{config.path}: no job named {name!r}{also}")
    return job


def message(config: Config, job: Job, now: datetime) -> Outgoing:
    """Exactly what `beatd trigger` publishes for job: id `<job>@manual-<uuid>`, trigger
    manual, in the job's format (a bare task's job is always beatd format)."""
    return Codecs(config.broker, config.signing).draft(Run.manual(job, now))(now)


def task_job(
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    routing_key: str | None = None,
    expires: Expires = None,
    job: str | None = None,
    now: datetime,
    where: str = "publish",
) -> Job:
    """A one-off job for a bare task (validated like the file's jobs); BeatdError names the
    argument that is wrong."""
    checked_task = _check(where, "task", values.task_name, task)
    name = job if job is not None else checked_task
    if not isinstance(name, str) or not JOB_NAME.match(name):
        hint = "" if job is not None else " (the task name is the default job name: pass job=)"
        raise BeatdError(
            f"{where}: job {name!r}: a job name is 1-200 letters, digits and _ . : / - "
            f"characters{hint}"
        )
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise BeatdError(f"{where}: args: must be a list or tuple, got {values.kind(args)}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise BeatdError(f"{where}: kwargs: must be a mapping, got {values.kind(kwargs)}")
    checked_args = _check(where, "args", values.json_list, list(args))
    checked_kwargs = _check(where, "kwargs", values.json_mapping, dict(kwargs or {}))
    key = None
    if routing_key is not None:
        key = _check(where, "routing_key", values.routing_key, routing_key)
    return Job(
        name=name,
        task=checked_task,
        kind="at",
        spec="publish",
        schedule=At(now),
        timezone=UTC,
        args=tuple(checked_args),
        kwargs=MappingProxyType(checked_kwargs),
        routing_key=key,
        expires=expires_of(expires),
    )


def expires_of(value: Expires) -> timedelta | None:
    """A timedelta, seconds, or a duration as in the file ("10m")."""
    if value is None or isinstance(value, timedelta):
        if value is not None and value <= timedelta(0):
            raise BeatdError(f"publish: expires: {value} must be positive")
        return value
    parsed: timedelta = _check("publish", "expires", durations.parse_duration, value)
    return parsed


def _check(where: str, name: str, convert: Any, value: object) -> Any:
    try:
        return convert(value)
    except ValueError as exc:
        # The file's advice ("quote it") means nothing to a Python caller.
        text = str(exc).removesuffix("; quote it to pass a string")
        raise BeatdError(f"{where}: {name}: {text}") from None
