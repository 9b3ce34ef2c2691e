"""Celery task messages for `format: celery` jobs, checked against Celery's own code: its
producer (AMQP.as_task_v2) for what a message holds, its worker (Request) for what it reads."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pika.data
from celery import Celery
from celery.worker.request import Request
from kombu.message import Message

from beatd.compat.celery_codec import (
    HEADERS,
    celery_message,
    celery_problems,
    job_problems,
    route,
    task_id,
)
from beatd.core.config import Job, parse_config
from beatd.core.messages import Outgoing, Run, Trigger

SLOT = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
PUBLISHED = SLOT + timedelta(milliseconds=4)


def job(**fields: Any) -> Job:
    """A job parsed from a schedule file, so it is exactly what the scheduler would hold."""
    body = {"every": "15m", "task": "reports.nightly", "format": "celery", **fields}
    config = parse_config(json.dumps({"jobs": {"nightly": body}}), "test.yaml", {})
    found = config.job("nightly")
    assert found is not None
    return found


def message(**fields: Any) -> Outgoing:
    return celery_message(Run(job(**fields), SLOT), PUBLISHED, "beatd")


APP = Celery("beatd-format-tests", set_as_current=False)


@APP.task(name="reports.nightly", shared=False)
def nightly(*args: Any, **kwargs: Any) -> None:
    """Only registered: the tests read what the worker would call it with."""


def as_worker_sees_it(out: Outgoing, app: Celery) -> Request:
    """Celery's worker-side Request, built from the message as RabbitMQ delivers it."""
    props = out.properties
    delivered = Message(
        body=out.body,
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=dict(props.headers),
        properties={"correlation_id": props.correlation_id, "priority": props.priority},
        delivery_info={"exchange": out.exchange, "routing_key": out.routing_key},
    )
    return Request(delivered, app=app)


def test_the_message_has_every_header_celerys_own_producer_sets_with_the_same_types() -> None:
    app = APP
    celery = app.amqp.as_task_v2(
        "0f6d2b52-2c1e-4d6b-9d7e-1f1f6a2d1c3e",
        "reports.nightly",
        args=(30,),
        kwargs={"dry_run": False},
        expires=SLOT + timedelta(minutes=10),
    )
    ours = message(args=[30], kwargs={"dry_run": False}, expires="10m").properties.headers
    assert set(celery.headers) <= set(ours)
    for name, value in celery.headers.items():
        if value is not None and name != "ignore_result":
            assert type(ours[name]) is type(value), name
    assert ours["expires"] is not None
    # as_task_v2 defaults it to False, but Celery.send_task (which beat uses) passes None
    # unless asked: the worker then applies the task's own ignore_result.
    assert ours["ignore_result"] is None


def test_celerys_worker_reads_the_task_id_name_args_kwargs_and_expiry() -> None:
    out = message(args=[30, "x"], kwargs={"dry_run": False}, expires="10m")
    request = as_worker_sees_it(out, APP)
    assert request.id == task_id(out.run)
    assert request.name == "reports.nightly"
    assert request.args == [30, "x"]
    assert request.kwargs == {"dry_run": False}
    assert request.expires == SLOT + timedelta(minutes=10)
    assert request.eta is None
    assert request.time_limits == [None, None]
    assert request.request_dict["periodic_task_name"] == "nightly"
    assert request.request_dict["root_id"] == request.id


def test_a_built_message_passes_the_check_for_everything_a_worker_requires() -> None:
    out = message(args=[1.5, None, {"a": [True]}], kwargs={"k": "v"}, priority=5, expires="1m")
    assert celery_problems(out) == []
    assert out.properties.content_type == "application/json"
    assert out.properties.content_encoding == "utf-8"
    assert out.properties.correlation_id == out.properties.headers["id"]
    args, kwargs, embed = json.loads(out.body)
    assert (args, kwargs) == ([1.5, None, {"a": [True]}], {"k": "v"})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_every_header_value_is_one_pika_can_encode() -> None:
    out = message(args=[0.25], kwargs={"ratio": 0.5}, expires="10m")
    encoded: list[bytes] = []
    assert pika.data.encode_table(encoded, dict(out.properties.headers)) > 0
    assert set(HEADERS) <= set(out.properties.headers)


def test_the_same_slot_always_gets_the_same_task_id_and_other_slots_other_ids() -> None:
    first = celery_message(Run(job(), SLOT), PUBLISHED, "beatd")
    again = celery_message(Run(job(), SLOT), PUBLISHED + timedelta(minutes=3), "beatd")
    later = celery_message(Run(job(), SLOT + timedelta(minutes=15)), PUBLISHED, "beatd")
    assert first.properties.headers["id"] == again.properties.headers["id"]
    assert later.properties.headers["id"] != first.properties.headers["id"]
    assert uuid.UUID(first.properties.headers["id"]).version == 5


def test_manual_runs_get_a_task_id_of_their_own_each_time() -> None:
    one, two = Run.manual(job(), SLOT), Run.manual(job(), SLOT)
    assert one.trigger is Trigger.MANUAL
    assert task_id(one) != task_id(two)


def test_expires_is_the_slot_plus_expires_as_iso_8601_with_an_offset_and_a_matching_ttl() -> None:
    out = celery_message(Run(job(expires="10m"), SLOT), SLOT + timedelta(minutes=1), "beatd")
    assert out.properties.headers["expires"] == "2026-11-21T05:40:00+00:00"
    assert out.properties.expiration == str(9 * 60 * 1000)  # what is left of it at publish


def test_a_run_published_after_it_expired_gets_a_zero_ttl_as_celery_clamps_it() -> None:
    out = celery_message(Run(job(expires="1m"), SLOT), SLOT + timedelta(minutes=5), "beatd")
    assert out.properties.expiration == "0"
    assert out.properties.headers["expires"] == "2026-11-21T05:31:00+00:00"


def test_a_job_without_expires_has_no_expiry_and_no_ttl() -> None:
    out = message()
    assert out.properties.headers["expires"] is None
    assert out.properties.expiration is None


def test_by_default_it_goes_to_celerys_default_queue_through_the_default_exchange() -> None:
    out = message()
    assert (out.exchange, out.routing_key, out.queue) == ("", "celery", "celery")


def test_a_queue_is_reached_through_the_default_exchange_with_its_name_as_key() -> None:
    out = message(queue="reports")
    assert (out.exchange, out.routing_key, out.queue) == ("", "reports", "reports")


def test_an_exchange_with_a_routing_key_is_used_as_given() -> None:
    assert route(job(exchange="events", routing_key="events.tick")) == (
        "events",
        "events.tick",
        None,
    )
    assert route(job(exchange="events", routing_key="k", queue="q")) == ("events", "k", "q")


def test_a_lone_routing_key_or_exchange_is_ignored_as_celery_ignores_it() -> None:
    # send_task_message: `if (not exchange or not routing_key) and exchange_type == 'direct'`
    assert route(job(routing_key="elsewhere")) == ("", "celery", "celery")
    assert route(job(exchange="events", queue="q")) == ("", "q", "q")


def test_priority_becomes_the_message_priority() -> None:
    assert message(priority=7).properties.priority == 7
    assert message().properties.priority is None


def test_a_job_whose_messages_would_crash_a_worker_is_refused_once_at_load() -> None:
    nameless = job()._replace(task="")
    problems = job_problems(nameless)
    assert problems and "header 'task' must be a non-empty string" in problems[0]
    assert job_problems(job()) == []


def test_the_check_names_each_thing_a_stock_worker_would_choke_on() -> None:
    good = message(expires="10m")
    headers = dict(good.properties.headers)
    del headers["id"]
    headers["expires"] = 1_790_000_000  # an epoch number: the worker raises InvalidTaskError
    headers["retries"] = 0.5  # pika cannot encode a float
    bad = dataclasses.replace(
        good,
        body=json.dumps([[], {}]).encode(),
        properties=dataclasses.replace(good.properties, content_type="text/plain", headers=headers),
    )
    problems = "\n".join(celery_problems(bad))
    assert "content_type is 'text/plain'" in problems
    assert "header 'id' is missing" in problems
    assert "header 'expires' must be an ISO 8601 string" in problems
    assert "headers.retries: a float cannot be an AMQP header value" in problems
    assert "3-element list [args, kwargs, embed]" in problems


def test_a_naive_expires_time_is_refused() -> None:
    good = message(expires="10m")
    headers = {**good.properties.headers, "expires": "2026-11-21T05:40:00"}
    bad = dataclasses.replace(
        good, properties=dataclasses.replace(good.properties, headers=headers)
    )
    assert celery_problems(bad) == ["header 'expires' has no UTC offset: '2026-11-21T05:40:00'"]
