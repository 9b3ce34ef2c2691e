"""The pika adapter's own guards, without a broker (the real-broker tests are elsewhere)."""

from __future__ import annotations

import struct
import sys
from datetime import UTC, datetime

import pika

from beatd.core.inbound import UNDECODABLE_HEADER
from beatd.runtime import channel  # noqa: F401  (installs the decode guard)


def encoded(properties: pika.BasicProperties) -> bytes:
    return b"".join(properties.encode())


def test_a_header_timestamp_past_year_9999_is_marked_not_raised() -> None:
    when = datetime(2000, 1, 1, tzinfo=UTC)
    raw = encoded(pika.BasicProperties(message_id="m", headers={"t": when}))
    raw = raw.replace(struct.pack(">Q", int(when.timestamp())), struct.pack(">Q", 2**63))
    decoded = pika.BasicProperties()
    decoded.decode(raw)
    assert decoded.headers is not None
    assert decoded.headers[UNDECODABLE_HEADER].startswith(("OverflowError", "ValueError"))


def test_headers_nested_too_deep_for_the_decoder_are_marked_not_raised() -> None:
    table: dict[str, object] = {"x": 1}
    for _ in range(2000):
        table = {"n": table}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        raw = encoded(pika.BasicProperties(headers=table))
    finally:
        sys.setrecursionlimit(limit)
    decoded = pika.BasicProperties()
    decoded.decode(raw)
    assert decoded.headers is not None
    assert decoded.headers[UNDECODABLE_HEADER].startswith("RecursionError")


def test_ordinary_properties_decode_as_before() -> None:
    raw = encoded(pika.BasicProperties(message_id="m", headers={"a": 1, "b": {"c": "d"}}))
    decoded = pika.BasicProperties()
    decoded.decode(raw)
    assert (decoded.message_id, decoded.headers) == ("m", {"a": 1, "b": {"c": "d"}})
