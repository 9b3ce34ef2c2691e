"""Fuzzing the worker's decoding and decision code (issue 12 item 4, issue 9 item 9): random
bodies, properties and headers go through what the worker does with a delivery, in its order:
attempt_of, inbound.admit, verdicts.judge, then the argv and environment of a run or the
dead letter and event of a refusal. No exception may escape, and nothing runs that a task's
file does not allow."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pika
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beatd.core.commands import ArgsMode, ArgsPolicy
from beatd.core.config import TaskConfig
from beatd.core.inbound import admit
from beatd.core.messages import MalformedMessage, Properties, Received
from beatd.core.verdicts import (
    Event,
    Reason,
    RunFacts,
    Verdict,
    attempt_of,
    dead_letter_headers,
    event_body,
    event_routing_key,
    judge,
    onward,
)
from beatd.worker import runner

NOW = datetime(2026, 11, 21, 5, 30, 10, tzinfo=UTC)
MAX_BODY = 4096
DAYS = re.compile("[0-9]{1,4}")
TASKS = {
    "env": TaskConfig("env", command=("/usr/bin/env",)),  # issue 12's hole: takes no args
    "days": TaskConfig(
        "days", command=("/bin/echo", "days:"), args=ArgsPolicy(ArgsMode.SHAPES, (DAYS,), "")
    ),
    "report": TaskConfig("report", command=("/usr/bin/report",), args=ArgsPolicy(ArgsMode.APPEND)),
    "call": TaskConfig("call", call="tests.worker_tasks:noop"),
}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text with what has hurt before: controls, format characters, line separators, surrogates.
nasty_text = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zs", "Ll"]), max_size=20),
    st.sampled_from(["", "job\n", "\ud800", "\u202e", "a b", "x" * 300, "é" * 128, "--help"]),
)
TIMES = [
    "2026-11-21T05:30:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "2026-11-21T05:30:00", "2026-02-30T00:00:00Z", "", "now", "2026" * 20,
]  # fmt: skip
nasty_time = st.one_of(st.sampled_from(TIMES), st.integers(), st.none(), nasty_text)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any], nasty: st.SearchStrategy[Any]) -> Any:
    """valid seven times in eight: a message with every field random would never be run."""
    return st.integers(0, 7).flatmap(lambda n: nasty if n == 0 else valid)


name = st.one_of(st.sampled_from([*TASKS, "nope", "job", "job@20261121T053000Z"]), nasty_text)
message_dict = st.fixed_dictionaries(
    {
        "v": mostly(st.just(1), st.sampled_from([True, 1.0, 2, "1", None])),
        "id": mostly(st.sampled_from(["job@20261121T053000Z", "Bericht-März@x"]), name),
        "job": mostly(st.sampled_from(["job", "Bericht-März"]), name),
        "task": mostly(st.sampled_from(list(TASKS)), name),
        "args": st.one_of(
            st.lists(json_value, max_size=4),
            st.lists(st.sampled_from(["/bin/sh", "-c", "id > /tmp/x", "30", "12345"]), max_size=4),
            st.lists(st.integers(0, 99999), max_size=2),
            json_value,
        ),
        "kwargs": mostly(st.dictionaries(nasty_text, json_value, max_size=4), json_value),
        "scheduled_at": mostly(st.just("2026-11-21T05:30:00Z"), nasty_time),
        "expires_at": mostly(st.sampled_from([None, "2027-01-01T00:00:00+01:00"]), nasty_time),
        "trigger": mostly(st.sampled_from(["schedule", "catchup", "manual"]), nasty_text),
    },
    optional={"published_at": nasty_time},
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["message", "mutated", "bytes", "nested", "big"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "nested":
        return draw(st.sampled_from([b"[", b'{"a":', b'[{"a":'])) * draw(st.integers(0, 5000))
    if kind == "big":
        return b'{"v": 1, "pad": "' + b"x" * MAX_BODY + b'"}'
    text = json.dumps(draw(message_dict), ensure_ascii=draw(st.booleans()), allow_nan=False)
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # a surrogate with ensure_ascii=False: send the escapes instead
        raw = text.encode("ascii", "backslashreplace")
    if kind == "mutated" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at + 1 :]
    return raw


header_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        nasty_text,
        st.binary(max_size=8),
        st.decimals(allow_nan=True),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 1, 1)),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(nasty_text, inner, max_size=3),
    max_leaves=20,
)
header_key = st.one_of(st.sampled_from(["beatd-attempt", "beatd-job"]), nasty_text, st.binary())
properties = st.builds(
    Properties,
    message_id=st.one_of(st.just(""), name, st.binary(max_size=4)),
    content_type=st.one_of(
        st.sampled_from(["application/json", "", "text/plain", "application/json; charset=x"]),
        nasty_text,
    ),
    content_encoding=st.one_of(st.none(), st.sampled_from(["utf-8", "gzip"]), nasty_text),
    type=st.one_of(st.none(), nasty_text, st.binary(max_size=4)),
    timestamp=st.one_of(st.none(), st.integers(min_value=-(2**65), max_value=2**65)),
    headers=st.one_of(
        st.dictionaries(header_key, header_value, max_size=6),
        st.fixed_dictionaries({"beatd-attempt": header_value}),
    ),
)


def dead_letter(props: Properties, reason: Reason, detail: str) -> None:
    """What the worker publishes for a message it will not run: must encode, always."""
    headers = dead_letter_headers(
        reason, detail, queue="q", routing_key="rk", attempt=1, worker="w", now=NOW
    )
    copy = onward(props, headers)
    message_id = copy.message_id
    pika.BasicProperties(
        message_id=message_id, timestamp=copy.timestamp, headers=dict(copy.headers)
    ).encode()
    job = props.headers.get("beatd-job") if isinstance(props.headers, dict) else None
    facts = RunFacts(
        run_id=props.message_id,
        job=job if isinstance(job, str) else "",
        task=props.type if isinstance(props.type, str) else "",
        reason=reason.value,
        detail=detail,
    )
    event_body(Event.REJECTED, facts, queue="q", worker="w", now=NOW)
    assert len(event_routing_key(Event.REJECTED, facts.job)) >= 1


def check_run(message: Received, attempt: int) -> None:
    """A message judged RUN: what would run is exactly what its task allows."""
    config = TASKS[message.task]
    for text in (message.id, message.job, message.task):
        assert text.isprintable() and " " not in text and len(text.encode()) <= 255
    assert "\n" not in "run %s (job %s): started" % (message.id, message.job)  # noqa: UP031
    if config.command is None:
        return
    argv = runner.argv_of(config, message.args)
    for arg in argv:
        assert "\0" not in arg
        os.fsencode(arg)
    if message.task == "env":
        assert argv == ["/usr/bin/env"]
    elif message.task == "days":
        assert argv == ["/bin/echo", "days:"] or (
            len(argv) == 3 and DAYS.fullmatch(argv[2]) is not None
        )
    else:
        assert argv[:2] == ["/usr/bin/report", "--"] or argv == ["/usr/bin/report"]
    invocation = runner.Invocation(
        message.id, message.job, message.task, attempt, message.scheduled_at,
        message.args, message.kwargs, b"{}",
    )  # fmt: skip
    env = runner.environment(runner.Task(config), invocation, {"PATH": "/bin"})
    for key, value in env.items():
        assert "\0" not in key + value
        os.fsencode(key + value)


def decide(props: Properties, body: bytes) -> Verdict:
    """The worker's path for one delivery, with every outcome carried to its end."""
    attempt = attempt_of(props.headers)
    try:
        message = admit(props, body, max_body=MAX_BODY)
    except MalformedMessage as exc:
        detail = str(exc)
        assert detail and "\n" not in detail
        detail.encode()  # goes into a header
        dead_letter(props, Reason.MALFORMED, detail)
        return Verdict.REJECT
    decision = judge(
        message,
        attempt,
        None,
        in_progress=False,
        known_task=message.task in TASKS,
        now=NOW,
        task=TASKS.get(message.task),
    )
    if decision.verdict is Verdict.RUN:
        check_run(message, attempt)
    elif decision.reason is not None:
        dead_letter(props, decision.reason, decision.detail)
    return decision.verdict


@SETTINGS
@given(properties, bodies())
def test_no_delivery_makes_the_worker_raise_or_run_what_it_should_not(
    props: Properties, body: bytes
) -> None:
    decide(props, body)


@SETTINGS
@given(message_dict, st.integers(min_value=-5, max_value=2000))
def test_well_framed_messages_with_random_fields_run_only_what_their_task_allows(
    fields: dict[str, Any], attempt: int
) -> None:
    body = json.dumps(fields).encode()  # ensure_ascii: surrogates arrive as \\ud800 escapes
    props = Properties(message_id="", headers={"beatd-attempt": attempt})
    decide(props, body)


def test_the_fuzzed_paths_are_reached() -> None:
    """Guard against a fuzzer that only ever sees garbage: each outcome happens."""
    good = {
        "v": 1, "id": "j@1", "job": "j", "task": "days", "args": [30], "kwargs": {},
        "scheduled_at": "2026-11-21T05:30:00Z", "trigger": "schedule",
    }  # fmt: skip
    plain = Properties(message_id="")
    assert decide(plain, json.dumps(good).encode()) is Verdict.RUN
    forged = {**good, "task": "env", "args": ["/bin/sh", "-c", "id > /tmp/x"]}
    assert decide(plain, json.dumps(forged).encode()) is Verdict.REJECT
    assert decide(plain, b"[" * 100_000) is Verdict.REJECT
    deep = Properties(message_id="", headers={"x": Decimal("NaN")})
    assert decide(deep, json.dumps(good).encode()) is Verdict.REJECT
