"""Signed runs: an HMAC-SHA256 over what identifies a run and where it goes, so a worker runs
only what a holder of the key published, and only once, soon after. Pure: keys, times and
headers are arguments; reading key files is the caller's business.

The signature covers, each length-prefixed so no two different messages sign the same bytes:
the key id, the message id, the routing key, the signing time (ms since the epoch), the
attempt number and the body. Three headers carry it: `beatd-key-id`, `beatd-signed-at` and
`beatd-signature` (hex).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

KEY_ID_HEADER = "beatd-key-id"
SIGNED_AT_HEADER = "beatd-signed-at"
SIGNATURE_HEADER = "beatd-signature"
REASON = "bad_signature"  # the dead-letter reason for everything refused here

DEFAULT_WINDOW = timedelta(hours=1)
# Hosts' clocks differ a little even under NTP; a run signed further ahead than this is
# refused like a stale one (only a key holder can make one, but it would stay replayable).
MAX_AHEAD = timedelta(minutes=5)
MIN_KEY_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DOMAIN = b"beatd-signature-v1\0"


@dataclass(frozen=True, slots=True)
class Key:
    """A signing key: an id that travels in the header, and the secret that never does."""

    id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not KEY_ID.match(self.id):
            raise ValueError(f"key id {self.id!r}: 1-64 letters, digits and _ . -")
        if len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(
                f"key {self.id!r} is {len(self.secret)} bytes; at least {MIN_KEY_BYTES} "
                "(make one with: openssl rand -base64 32)"
            )


@dataclass(frozen=True, slots=True)
class Signing:
    """The `signing:` section: the key that signs, every key accepted by id, and the replay
    window (None: each run's `expires`, else DEFAULT_WINDOW)."""

    key: Key
    accepted: Mapping[str, Key]
    window: timedelta | None = None

    def __post_init__(self) -> None:
        if self.accepted.get(self.key.id) != self.key:
            raise ValueError(f"the signing key {self.key.id!r} must be among the accepted keys")


@dataclass(frozen=True, slots=True)
class Check:
    """What verify() found: ok, or why not (for the dead letter's detail and the log)."""

    ok: bool
    detail: str = ""


def key_from_text(key_id: str, text: str) -> Key:
    """A key from a key file's content (surrounding whitespace is not part of it)."""
    return Key(key_id, text.strip().encode())


def _signed_bytes(
    key_id: str, message_id: str, routing_key: str, signed_at_ms: int, attempt: int, body: bytes
) -> bytes:
    return _head(key_id, message_id, routing_key, signed_at_ms, attempt, len(body)) + body


def _head(
    key_id: str, message_id: str, routing_key: str, signed_at_ms: int, attempt: int, length: int
) -> bytes:
    """What is signed before the body, whose length alone it takes."""
    parts = [
        key_id.encode(),
        message_id.encode(),
        routing_key.encode(),
        str(signed_at_ms).encode(),
        str(attempt).encode(),
    ]
    signed = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    return _DOMAIN + signed + length.to_bytes(8, "big")


def _mac(key: Key, data: bytes) -> str:
    return hmac.new(key.secret, data, hashlib.sha256).hexdigest()


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def sign(
    key: Key,
    *,
    message_id: str,
    routing_key: str,
    body: bytes,
    signed_at: datetime,
    attempt: int = 1,
) -> dict[str, Any]:
    """The headers that sign one message (merge them into its other headers).

    routing_key is the one the message will arrive with; signed_at is when it becomes due
    (the publish time; for a retry parked in a holding queue, when it is released).
    """
    at_ms = epoch_ms(signed_at)
    data = _signed_bytes(key.id, message_id, routing_key, at_ms, attempt, body)
    return {KEY_ID_HEADER: key.id, SIGNED_AT_HEADER: at_ms, SIGNATURE_HEADER: _mac(key, data)}


def sign_ahead(
    key: Key,
    *,
    message_id: str,
    routing_key: str,
    body_length: int,
    signed_at: datetime,
    attempt: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """Start signing a message whose body is not final yet, only its length: the MAC fed
    with all that comes before the body, and the headers but the signature. A copy of the
    MAC fed the body gives the `beatd-signature` header, as sign() would (a scheduler signs
    a burst before its slot, and stamps the publish time into each body at the slot)."""
    at_ms = epoch_ms(signed_at)
    mac = hmac.new(
        key.secret, _head(key.id, message_id, routing_key, at_ms, attempt, body_length), "sha256"
    )
    return mac, {KEY_ID_HEADER: key.id, SIGNED_AT_HEADER: at_ms}


def window_for(signing: Signing, expires: timedelta | None) -> timedelta:
    """How old a signed run may be: the configured window, else the run's `expires`, else
    DEFAULT_WINDOW."""
    if signing.window is not None:
        return signing.window
    return expires if expires is not None else DEFAULT_WINDOW


def verify(
    signing: Signing,
    headers: Mapping[str, Any],
    *,
    message_id: str,
    routing_key: str,
    body: bytes,
    attempt: int,
    now: datetime,
    window: timedelta,
) -> Check:
    """Check a delivered message's signature and age; constant-time in the secret."""
    key_id = headers.get(KEY_ID_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    at_ms = headers.get(SIGNED_AT_HEADER)
    if key_id is None and signature is None:
        return Check(False, f"unsigned (no {SIGNATURE_HEADER} header)")
    if (
        not isinstance(key_id, str)
        or not isinstance(signature, str | bytes)
        or isinstance(at_ms, bool)
        or not isinstance(at_ms, int)
    ):
        return Check(False, "malformed signature headers")
    key = signing.accepted.get(key_id)
    if key is None:
        accepted = ", ".join(sorted(signing.accepted))
        return Check(False, f"signed with key id {key_id[:64]!r}, not accepted here ({accepted})")
    given = signature.encode() if isinstance(signature, str) else signature
    expected = _mac(key, _signed_bytes(key_id, message_id, routing_key, at_ms, attempt, body))
    if not hmac.compare_digest(given, expected.encode()):
        return Check(False, f"signature does not match (key id {key_id!r}): altered or forged")
    # Clamped: a key holder's nonsense time must give an answer, not an OverflowError.
    age = timedelta(milliseconds=max(-(10**12), min(10**12, epoch_ms(now) - at_ms)))
    if age > window:
        detail = f"signed {_span(age)} ago, outside the replay window of {_span(window)}"
        return Check(False, detail)
    if -age > MAX_AHEAD:
        return Check(False, f"signed {_span(-age)} in the future (clocks more than 5m apart?)")
    return Check(True)


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
