"""The beatd message format, version 1: ids, properties, headers and body, exactly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from beatd.core.config import parse_config
from beatd.core.messages import (
    DEFAULT_MAX_BODY,
    MAX_DEPTH,
    MalformedMessage,
    Run,
    Trigger,
    beatd_message,
    parse_beatd,
    slot_id,
)

SLOT = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)
PUBLISHED = SLOT + timedelta(milliseconds=4)
FILE = """
broker: {exchange: beatd}
jobs:
  cleanup-sessions:
    cron: "*/15 * * * *"
    task: sessions.cleanup
    args: [30]
    kwargs: {dry_run: false}
    priority: 5
    expires: 10m
  plain:
    every: 500ms
    task: x.y
    routing_key: custom.key
    exchange: other
"""
CONFIG = parse_config(FILE, "test.yaml", {})
CLEANUP, PLAIN = CONFIG.jobs


def test_the_body_is_exactly_the_documented_json() -> None:
    message = beatd_message(Run(CLEANUP, SLOT), PUBLISHED, "beatd")
    assert json.loads(message.body) == {
        "v": 1,
        "id": "cleanup-sessions@20261121T053000Z",
        "job": "cleanup-sessions",
        "task": "sessions.cleanup",
        "args": [30],
        "kwargs": {"dry_run": False},
        "scheduled_at": "2026-11-21T05:30:00Z",
        "published_at": "2026-11-21T05:30:00.004Z",
        "expires_at": "2026-11-21T05:40:00Z",
        "trigger": "schedule",
    }


def test_the_properties_and_headers_are_the_documented_ones() -> None:
    message = beatd_message(Run(CLEANUP, SLOT), PUBLISHED, "beatd")
    p = message.properties
    assert (message.exchange, message.routing_key) == ("beatd", "sessions.cleanup")
    assert p.content_type == "application/json"
    assert p.delivery_mode == 2
    assert p.message_id == "cleanup-sessions@20261121T053000Z"
    assert p.type == "sessions.cleanup"
    assert p.app_id == "beatd"
    assert p.timestamp == int(PUBLISHED.timestamp())
    assert p.priority == 5
    assert p.expiration == str(10 * 60 * 1000 - 4), "TTL: what is left of expires at publish"
    assert dict(p.headers) == {
        "beatd-job": "cleanup-sessions",
        "beatd-scheduled-at": "2026-11-21T05:30:00Z",
        "beatd-format": 1,
    }


def test_routing_key_and_exchange_can_be_set_per_job() -> None:
    message = beatd_message(Run(PLAIN, SLOT), PUBLISHED, "beatd")
    assert (message.exchange, message.routing_key) == ("other", "custom.key")
    assert message.properties.priority is None and message.properties.expiration is None
    assert json.loads(message.body)["expires_at"] is None


def test_the_same_slot_always_gets_the_same_id() -> None:
    a = beatd_message(Run(CLEANUP, SLOT), PUBLISHED, "beatd")
    b = beatd_message(Run(CLEANUP, SLOT), PUBLISHED + timedelta(hours=1), "beatd")
    assert a.properties.message_id == b.properties.message_id
    assert json.loads(a.body)["id"] == json.loads(b.body)["id"]


def test_sub_second_slots_keep_their_milliseconds_in_the_id() -> None:
    assert slot_id("plain", SLOT + timedelta(milliseconds=500)) == "plain@20261121T053000.500Z"
    assert slot_id("plain", SLOT.astimezone()) == "plain@20261121T053000Z"


def test_a_catch_up_run_says_so() -> None:
    body = json.loads(beatd_message(Run(CLEANUP, SLOT, Trigger.CATCHUP), PUBLISHED, "beatd").body)
    assert body["trigger"] == "catchup"
    assert body["id"] == "cleanup-sessions@20261121T053000Z"


def test_a_manual_run_has_a_unique_manual_id() -> None:
    a, b = Run.manual(CLEANUP, SLOT), Run.manual(CLEANUP, SLOT)
    assert a.id != b.id
    assert re.fullmatch(r"cleanup-sessions@manual-[0-9a-f-]{36}", a.id)
    assert json.loads(beatd_message(a, PUBLISHED, "beatd").body)["trigger"] == "manual"


def test_an_expired_run_gets_a_zero_ttl_not_a_negative_one() -> None:
    late = SLOT + timedelta(minutes=11)
    assert beatd_message(Run(CLEANUP, SLOT), late, "beatd").properties.expiration == "0"


def test_a_published_message_parses_back() -> None:
    message = beatd_message(Run(CLEANUP, SLOT), PUBLISHED, "beatd")
    received = parse_beatd(message.body)
    assert received.id == message.properties.message_id
    assert received.scheduled_at == SLOT
    assert received.expires_at == SLOT + timedelta(minutes=10)
    assert (received.args, received.kwargs) == ([30], {"dry_run": False})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2}', "not a beatd version 1"),
        (b'{"v": 1, "id": "a", "job": "a", "task": "t", "trigger": "schedule"}', "scheduled_at"),
        (
            b'{"v":1,"id":"a","job":"a","task":"t","trigger":"schedule",'
            b'"scheduled_at":"2026-11-21T05:30:00"}',
            "no UTC offset",
        ),
        (
            b'{"v":1,"id":"a","job":"a","task":"t","trigger":"schedule",'
            b'"scheduled_at":"2026-11-21T05:30:00Z","args":{}}',
            "'args' is not a list",
        ),
    ],
)
def test_a_malformed_body_is_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_beatd(body)


GOOD = {
    "v": 1,
    "id": "job@20261121T053000Z",
    "job": "job",
    "task": "t",
    "args": [30],
    "kwargs": {"dry_run": False},
    "scheduled_at": "2026-11-21T05:30:00Z",
    "published_at": "2026-11-21T05:30:00.004Z",
    "expires_at": None,
    "trigger": "schedule",
}


def body_with(**fields: object) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


def raw_with(key: str, raw_json: str) -> bytes:
    """GOOD with one field's JSON text given literally (escapes json.dumps would not write)."""
    data = {**GOOD, key: "@@"}
    return json.dumps(data).replace('"@@"', raw_json).encode()


# Each of these once wedged a worker (issue 9 item 9) or smuggled something past it (issue 9
# item 16, issue 12): every one must be refused with MalformedMessage, and nothing else.
POISON: dict[str, bytes] = {
    "100,000 [": b"[" * 100_000,
    "50,000 nested objects": b'{"a":' * 50_000,
    "nesting just past the limit in args": raw_with("args", "[" * 40 + "]" * 40),
    "year 1 with a positive offset": body_with(scheduled_at="0001-01-01T00:00:00+01:00"),
    "year 9999 with a negative offset": body_with(expires_at="9999-12-31T23:59:59-01:00"),
    "a lone surrogate in the id": raw_with("id", '"\\ud800"'),
    "a lone surrogate deep in kwargs": raw_with("kwargs", '{"a": [{"b": "x\\udfff"}]}'),
    "a lone surrogate as a kwargs key": raw_with("kwargs", '{"\\udc00": 1}'),
    "a newline in the id": body_with(id="job@x\nbeatd.worker: run forged: succeeded"),
    "a carriage return in the job": body_with(job="job\r"),
    "an escape sequence in the task": body_with(task="t\x1b[2J"),
    "a right-to-left override in the job": body_with(job="job\u202egnp.exe"),
    "a space in the task": body_with(task="a task"),
    "an id over 255 bytes": body_with(id="j@" + "é" * 127),
    "an empty id": body_with(id=""),
    "a number as the id": body_with(id=7),
    "v is true": body_with(v=True),
    "v is 1.0": body_with(v=1.0),
    "an unknown trigger": body_with(trigger="whenever"),
    "NaN in args": raw_with("args", "[NaN]"),
    "Infinity in kwargs": raw_with("kwargs", '{"x": -Infinity}'),
    "a key given twice": b'{"task":"evil",' + body_with()[1:],
    "an int of 5,000 digits": raw_with("args", "[" + "9" * 5000 + "]"),
    "UTF-16": json.dumps(GOOD).encode("utf-16"),
    "a UTF-8 byte order mark": b"\xef\xbb\xbf" + body_with(),
    "invalid UTF-8": body_with(job="job\udcff").replace(b"\\udcff", b"\xff"),
    "an encoded surrogate": body_with().replace(b'"job"', b'"\xed\xa0\x80"', 1),
    "a time that is not a string": body_with(scheduled_at=1_700_000_000),
    "a time of 2,000 characters": body_with(scheduled_at="2026" * 500),
    "args as a string": body_with(args="--help"),
    "kwargs as a list": body_with(kwargs=[]),
    "empty": b"",
}


@pytest.mark.parametrize("case", list(POISON))
def test_a_poison_body_is_refused_with_malformed_message_and_nothing_else(case: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        parse_beatd(POISON[case])
    reason = str(caught.value)
    assert reason and "\n" not in reason and len(reason) < 300
    reason.encode()  # no lone surrogate copied into the reason: it goes into a header


def test_a_malformed_message_is_a_value_error_so_callers_that_catch_that_still_work() -> None:
    assert issubclass(MalformedMessage, ValueError)


def test_a_body_over_the_limit_is_refused_before_it_is_parsed() -> None:
    body = body_with(args=["x" * 2000])
    assert parse_beatd(body).args == ["x" * 2000]
    with pytest.raises(MalformedMessage, match=rf"body is {len(body)} bytes, over the 1024"):
        parse_beatd(body, max_body=1024)
    assert DEFAULT_MAX_BODY == 1024 * 1024
    with pytest.raises(MalformedMessage, match="over the"):
        parse_beatd(b" " * (DEFAULT_MAX_BODY + 1))


def test_unicode_names_and_escaped_pairs_are_fine() -> None:
    received = parse_beatd(raw_with("args", '["\\ud83d\\ude00", "M\\u00e4rz"]'))
    assert received.args == ["\U0001f600", "März"]
    assert parse_beatd(body_with(job="Bericht-März", id="Bericht-März@x")).job == "Bericht-März"


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth = MAX_DEPTH - 1  # the body object itself is one level
    received = parse_beatd(raw_with("args", "[" * depth + "]" * depth))
    assert received.args is not None
    many_flat = parse_beatd(body_with(args=[[n] for n in range(1000)]))
    assert len(many_flat.args) == 1000


def test_times_far_from_now_that_still_fit_are_fine() -> None:
    received = parse_beatd(body_with(scheduled_at="0001-01-01T01:00:00+01:00"))
    assert received.scheduled_at == datetime(1, 1, 1, tzinfo=UTC)
