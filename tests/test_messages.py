"""The beatd message format, version 1: ids, properties, headers and body, exactly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from beatd.core.config import parse_config
from beatd.core.messages import Run, Trigger, beatd_message, parse_beatd, slot_id

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
