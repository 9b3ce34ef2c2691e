"""Signed runs: sign/verify (pure, a fixed clock), rotation, the replay window, and the
signing: section of the config file."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beatd.core.config import parse_config, read_config
from beatd.core.errors import ConfigError
from beatd.core.messages import Run
from beatd.core.signing import (
    DEFAULT_WINDOW,
    KEY_ID_HEADER,
    SIGNATURE_HEADER,
    SIGNED_AT_HEADER,
    Key,
    Signing,
    sign,
    verify,
    window_for,
)
from beatd.scheduler.codecs import Codecs

NOW = datetime(2026, 11, 21, 5, 30, 0, 4000, tzinfo=UTC)
K1 = Key("k1", b"1" * 32)
K2 = Key("k2", b"2" * 32)
K3 = Key("k3", b"3" * 32)
ID = "cleanup@20261121T053000Z"
KEY = "sessions.cleanup"
BODY = b'{"v":1,"id":"cleanup@20261121T053000Z","job":"cleanup","task":"sessions.cleanup"}'


def ring(current: Key, *others: Key, window: timedelta | None = None) -> Signing:
    keys = {k.id: k for k in (current, *others)}
    return Signing(current, MappingProxyType(keys), window)


def signed(key: Key = K1, *, at: datetime = NOW, attempt: int = 1) -> dict[str, Any]:
    return sign(key, message_id=ID, routing_key=KEY, body=BODY, signed_at=at, attempt=attempt)


def check(
    signing: Signing,
    headers: dict[str, Any],
    *,
    message_id: str = ID,
    routing_key: str = KEY,
    body: bytes = BODY,
    attempt: int = 1,
    now: datetime = NOW,
    window: timedelta = DEFAULT_WINDOW,
) -> tuple[bool, str]:
    result = verify(
        signing,
        headers,
        message_id=message_id,
        routing_key=routing_key,
        body=body,
        attempt=attempt,
        now=now,
        window=window,
    )
    return result.ok, result.detail


def test_a_run_signed_with_the_key_verifies() -> None:
    headers = signed()
    assert headers[KEY_ID_HEADER] == "k1"
    assert headers[SIGNED_AT_HEADER] == 1_795_239_000_004
    assert len(headers[SIGNATURE_HEADER]) == 64
    assert check(ring(K1), headers) == (True, "")


def test_an_unsigned_run_is_refused() -> None:
    assert check(ring(K1), {"beatd-job": "cleanup"}) == (
        False,
        "unsigned (no beatd-signature header)",
    )


@pytest.mark.parametrize(
    "change",
    [
        {"message_id": "cleanup@20261121T054500Z"},
        {"routing_key": "reports.nightly"},
        {"body": BODY.replace(b"cleanup", b"cleanuq", 1)},
        {"attempt": 2},
    ],
    ids=["id", "routing key", "body", "attempt"],
)
def test_a_changed_id_routing_key_body_or_attempt_breaks_the_signature(
    change: dict[str, Any],
) -> None:
    ok, detail = check(ring(K1), signed(), **change)
    assert not ok
    assert detail == "signature does not match (key id 'k1'): altered or forged"


def test_a_changed_signing_time_breaks_the_signature() -> None:
    headers = signed(at=NOW - timedelta(hours=2))
    headers[SIGNED_AT_HEADER] += 3_600_000  # made to look an hour younger
    assert check(ring(K1), headers)[0] is False


def test_a_key_id_not_accepted_here_is_refused_and_named() -> None:
    ok, detail = check(ring(K1, K2), signed(K3))
    assert not ok
    assert detail == "signed with key id 'k3', not accepted here (k1, k2)"


def test_a_signature_made_with_another_key_under_an_accepted_id_is_refused() -> None:
    impostor = Key("k1", b"x" * 32)
    assert check(ring(K1), signed(impostor))[0] is False


def test_swapping_the_key_id_header_does_not_help() -> None:
    headers = {**signed(K1), KEY_ID_HEADER: "k2"}
    assert check(ring(K1, K2), headers)[0] is False


@pytest.mark.parametrize(
    "headers",
    [
        {KEY_ID_HEADER: "k1", SIGNATURE_HEADER: "00", SIGNED_AT_HEADER: "soon"},
        {KEY_ID_HEADER: 7, SIGNATURE_HEADER: "00", SIGNED_AT_HEADER: 1},
        {KEY_ID_HEADER: "k1", SIGNED_AT_HEADER: 1},
        {KEY_ID_HEADER: "k1", SIGNATURE_HEADER: "00", SIGNED_AT_HEADER: True},
    ],
)
def test_malformed_signature_headers_are_refused(headers: dict[str, Any]) -> None:
    assert check(ring(K1), headers) == (False, "malformed signature headers")


def test_rotation_accepts_the_old_and_new_keys_by_id_and_signs_with_one() -> None:
    during = ring(K2, K1)  # k2 signs; k1 still accepted while its runs drain
    assert check(during, signed(K1))[0]
    assert check(during, signed(K2))[0]
    after = ring(K2)
    assert check(after, signed(K2))[0]
    assert check(after, signed(K1)) == (
        False,
        "signed with key id 'k1', not accepted here (k2)",
    )


def test_a_run_older_than_the_window_is_refused_as_a_replay() -> None:
    headers = signed(at=NOW - timedelta(minutes=61))
    assert check(ring(K1), headers) == (
        False,
        "signed 61m ago, outside the replay window of 60m",
    )
    assert check(ring(K1), headers, window=timedelta(hours=2))[0]


def test_a_run_exactly_at_the_edge_of_the_window_is_accepted() -> None:
    assert check(ring(K1), signed(at=NOW - DEFAULT_WINDOW))[0]


def test_a_run_signed_far_in_the_future_is_refused_and_small_skew_is_not() -> None:
    assert check(ring(K1), signed(at=NOW + timedelta(minutes=4)))[0]
    ok, detail = check(ring(K1), signed(at=NOW + timedelta(minutes=6)))
    assert (ok, detail) == (False, "signed 6m in the future (clocks more than 5m apart?)")


def test_an_absurd_signing_time_is_refused_not_an_overflow() -> None:
    headers = signed()
    headers[SIGNED_AT_HEADER] = 10**30
    assert check(ring(K1), headers)[0] is False


def test_the_window_is_the_configured_one_else_the_runs_expires_else_an_hour() -> None:
    ten = timedelta(minutes=10)
    assert window_for(ring(K1, window=timedelta(hours=3)), ten) == timedelta(hours=3)
    assert window_for(ring(K1), ten) == ten
    assert window_for(ring(K1), None) == timedelta(hours=1)


def test_keys_never_show_in_repr() -> None:
    secret = b"do-not-print-this-secret-anywhere!!"
    key = Key("k1", secret)
    signing = Signing(key, MappingProxyType({"k1": key}))
    assert secret.decode() not in repr(key)
    assert secret.decode() not in repr(signing)
    assert secret.decode() not in str(signing)


def test_short_keys_bad_ids_and_a_signing_key_not_accepted_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Key("k1", b"short")
    with pytest.raises(ValueError, match="key id 'k 1'"):
        Key("k 1", b"1" * 32)
    with pytest.raises(ValueError, match="among the accepted"):
        Signing(K1, MappingProxyType({"k2": K2}))


def test_fields_are_length_prefixed_so_moving_a_boundary_breaks_the_signature() -> None:
    a = sign(K1, message_id="ab", routing_key="c", body=b"", signed_at=NOW)
    b = sign(K1, message_id="a", routing_key="bc", body=b"", signed_at=NOW)
    assert a[SIGNATURE_HEADER] != b[SIGNATURE_HEADER]


@given(
    body=st.binary(min_size=1, max_size=300),
    data=st.data(),
)
def test_any_single_byte_change_of_the_body_breaks_verification(
    body: bytes, data: st.DataObject
) -> None:
    headers = sign(K1, message_id=ID, routing_key=KEY, body=body, signed_at=NOW)
    index = data.draw(st.integers(0, len(body) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    changed = body[:index] + bytes([new]) + body[index + 1 :]
    assert check(ring(K1), headers, body=body)[0]
    assert check(ring(K1), headers, body=changed)[0] is False


@given(field=st.sampled_from(["message_id", "routing_key"]), data=st.data())
def test_any_single_character_change_of_the_id_or_routing_key_breaks_verification(
    field: str, data: st.DataObject
) -> None:
    original = {"message_id": ID, "routing_key": KEY}[field]
    index = data.draw(st.integers(0, len(original) - 1))
    char = data.draw(st.characters(codec="utf-8").filter(lambda c: c != original[index]))
    changed = original[:index] + char + original[index + 1 :]
    assert check(ring(K1), signed(), **{field: changed})[0] is False


# The signing: section


def write(directory: Path, text: str) -> Path:
    path = directory / "beatd.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_signing_section_reads_every_key_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "k1").write_text("1" * 32 + "\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "beatd-k2").write_text("2" * 40)
    path = write(
        tmp_path,
        """\
        signing:
          key: k2
          keys:
            k1: k1
            k2: $CREDENTIALS_DIRECTORY/beatd-k2
          window: 15m
        """,
    )
    signing = read_config(path, {"CREDENTIALS_DIRECTORY": str(creds)}).signing
    assert signing is not None
    assert signing.key == Key("k2", b"2" * 40)
    assert dict(signing.accepted) == {"k1": Key("k1", b"1" * 32), "k2": signing.key}
    assert signing.window == timedelta(minutes=15)


def test_without_a_signing_section_nothing_is_signed(tmp_path: Path) -> None:
    assert read_config(write(tmp_path, "jobs: {}\n"), {}).signing is None


def test_every_signing_problem_is_named_and_no_key_text_is_shown(tmp_path: Path) -> None:
    (tmp_path / "weak").write_text("tooshort-secret")
    path = write(
        tmp_path,
        """\
        signing:
          key: k9
          keys:
            k1: missing
            k2: weak
            k 3: weak
          window: 0s
          algo: sha1
        """,
    )
    with pytest.raises(ConfigError) as caught:
        read_config(path, {})
    problems = [str(p) for p in caught.value.problems]
    f = str(path)
    assert problems == [
        f"{f}:2: signing: key: 'k9' is not one of keys",
        f"{f}:4: signing: keys: k1: {tmp_path}/missing: no such file",
        f"{f}:5: signing: keys: k2: key 'k2' is 15 bytes; at least 32 (make one with: "
        "openssl rand -base64 32)",
        f"{f}:6: signing: keys: k 3: key id 'k 3': 1-64 letters, digits and _ . -",
        f"{f}:7: signing: window: '0s' must be positive",
        f"{f}:8: signing: unknown key 'algo' (allowed: key, keys, window)",
    ]
    assert "tooshort-secret" not in "\n".join(problems)


def test_a_signing_section_needs_a_key_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_config(write(tmp_path, "signing:\n  window: 1h\n"), {})
    assert [p.message for p in caught.value.problems] == [
        "signing: key: missing (the id of the key that signs)",
        "signing: keys: must map key ids to key files, got nothing",
    ]


@given(
    late_ms=st.integers(0, 10**9),
    text=st.sampled_from(["", "plain", "é", "日本語", "emoji 😀", 'a "quote" and \\']),
    year=st.sampled_from([1, 999, 2026, 9998]),
)
def test_a_run_signed_when_drafted_before_its_slot_verifies_as_if_signed_whole(
    late_ms: int, text: str, year: int
) -> None:
    # The burst is signed as of its slot while drafted; only the publish time stamped into
    # the body at the slot is signed then. The signature must be sign()'s over the final body.
    config = parse_config(
        f"broker:\n  exchange: beatd\njobs:\n  j:\n    every: 1m\n    task: t.j\n"
        f"    kwargs: {{note: {json.dumps(text, ensure_ascii=False)}}}\n",
        "test.yaml",
        {},
    )
    slot = datetime(year, 3, 1, 12, tzinfo=UTC)
    published_at = slot + timedelta(milliseconds=late_ms)
    codecs = Codecs(config.broker, ring(K1))
    message = codecs.draft(Run(config.jobs[0], slot), slot)(published_at)
    props = message.properties
    whole = sign(
        K1,
        message_id=props.message_id,
        routing_key=message.routing_key,
        body=message.body,
        signed_at=slot,
    )
    assert {k: props.headers[k] for k in whole} == whole
    assert props.headers["beatd-job"] == "j"
    ok = verify(
        ring(K1),
        props.headers,
        message_id=props.message_id,
        routing_key=message.routing_key,
        body=message.body,
        attempt=1,
        now=published_at,
        window=timedelta(days=20000),
    )
    assert ok.ok, ok.detail
