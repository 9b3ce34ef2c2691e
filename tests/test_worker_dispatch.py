"""The worker's decisions (beatd.core.verdicts, beatd.core.inbound), pure: what it admits,
duplicates, restarts, expiry, refused args, retries."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pika
import pytest

from beatd.core.commands import ArgsMode, ArgsPolicy
from beatd.core.config import TaskConfig
from beatd.core.inbound import MAX_HEADER_DEPTH, MAX_HEADER_FIELDS, admit
from beatd.core.messages import MalformedMessage, Properties, Received
from beatd.core.verdicts import (
    MAX_RETRY_DELAY,
    MAX_STARTS,
    Decision,
    Event,
    Phase,
    Reason,
    RunFacts,
    Seen,
    Verdict,
    attempt_of,
    event_body,
    event_for,
    event_routing_key,
    judge,
    onward,
    retry_delay,
    retry_queue,
    retry_queue_arguments,
)

NOW = datetime(2026, 11, 21, 5, 30, 10, tzinfo=UTC)


def received(expires_at: datetime | None = None) -> Received:
    return Received(
        id="job@20261121T053000Z",
        job="job",
        task="t",
        args=[],
        kwargs={},
        scheduled_at=datetime(2026, 11, 21, 5, 30, tzinfo=UTC),
        published_at=None,
        expires_at=expires_at,
        trigger="schedule",
        raw={},
    )


def decide(
    seen: Seen | None = None,
    *,
    attempt: int = 1,
    in_progress: bool = False,
    known_task: bool = True,
    expires_at: datetime | None = None,
    task: TaskConfig | None = None,
) -> Decision:
    return judge(
        received(expires_at),
        attempt,
        seen,
        in_progress=in_progress,
        known_task=known_task,
        now=NOW,
        task=task,
    )


RUN_ID = "job@20261121T053000Z"


def test_a_new_run_of_a_known_task_runs() -> None:
    assert decide().verdict is Verdict.RUN


def test_a_finished_run_is_a_duplicate() -> None:
    assert decide(Seen(RUN_ID, 1, Phase.DONE)).verdict is Verdict.DUPLICATE


def test_a_redelivery_while_it_runs_here_joins_the_run() -> None:
    assert decide(Seen(RUN_ID, 1, Phase.RUNNING), in_progress=True).verdict is Verdict.JOIN


def test_a_run_that_was_running_when_the_worker_died_runs_again() -> None:
    assert decide(Seen(RUN_ID, 1, Phase.RUNNING, starts=1)).verdict is Verdict.RUN


def test_a_run_that_took_the_worker_down_repeatedly_is_dead_lettered_as_interrupted() -> None:
    decision = decide(Seen(RUN_ID, 1, Phase.RUNNING, starts=MAX_STARTS))
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, Reason.INTERRUPTED)


@pytest.mark.parametrize("phase", [Phase.DEAD, Phase.RETRY])
def test_a_run_that_finished_badly_before_a_crash_is_resumed_not_run(phase: Phase) -> None:
    assert decide(Seen(RUN_ID, 1, phase, reason="failed")).verdict is Verdict.RESUME


RETRIED_ONCE = TaskConfig("t", call="m:f", retries=1)


@pytest.mark.parametrize(
    "before",
    [
        Seen(RUN_ID, 1, Phase.RETRY, reason="failed"),  # the retry published, not yet settled
        Seen(RUN_ID, 1, Phase.DONE, reason="failed"),  # settled
        Seen(RUN_ID, 1, Phase.DONE, reason="timed_out"),
        Seen(RUN_ID, 1, Phase.RUNNING),  # never finished: at least once
    ],
)
def test_a_retry_is_not_a_duplicate_of_the_attempt_before_it(before: Seen) -> None:
    assert decide(before, attempt=2, task=RETRIED_ONCE).verdict is Verdict.RUN


@pytest.mark.parametrize(
    ("before", "outcome"),
    [
        (Seen(RUN_ID, 1, Phase.DONE), "succeeded"),
        (Seen(RUN_ID, 1, Phase.DONE, reason="interrupted"), "dead-lettered, interrupted"),
        (Seen(RUN_ID, 1, Phase.DONE, reason="expired"), "dead-lettered, expired"),
        (Seen(RUN_ID, 2, Phase.DONE, reason="failed"), "dead-lettered, failed"),  # none left
        (Seen(RUN_ID, 1, Phase.DEAD, reason="interrupted"), "dead-lettered, interrupted"),
    ],
)
def test_a_later_attempt_of_a_run_that_finished_for_good_is_a_duplicate(
    before: Seen, outcome: str
) -> None:
    # Only a retry has a successor: a later attempt than a success or a dead letter is a
    # forged header, and a finished run never runs again (the worker model found this).
    decision = decide(before, attempt=before.attempt + 1, task=RETRIED_ONCE)
    assert decision == Decision(Verdict.DUPLICATE, detail=f"already finished ({outcome})")


def test_without_its_task_a_later_attempt_after_a_failure_is_refused_as_unknown() -> None:
    decision = decide(Seen(RUN_ID, 1, Phase.DONE, reason="failed"), attempt=2, known_task=False)
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, Reason.UNKNOWN_TASK)


def test_an_older_attempt_arriving_late_is_a_duplicate() -> None:
    assert decide(Seen(RUN_ID, 2, Phase.RUNNING), attempt=1).verdict is Verdict.DUPLICATE


def test_an_unknown_task_is_rejected() -> None:
    decision = decide(known_task=False)
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, Reason.UNKNOWN_TASK)
    assert decision.detail == "task 't' is not in this worker's file"


def test_a_run_past_expires_at_is_rejected_as_expired() -> None:
    decision = decide(expires_at=NOW - timedelta(seconds=2))
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, Reason.EXPIRED)
    assert decision.detail == "expired at 2026-11-21T05:30:08Z (2.0s ago)"


def test_a_run_before_expires_at_runs() -> None:
    assert decide(expires_at=NOW + timedelta(seconds=1)).verdict is Verdict.RUN


def test_a_retry_does_not_expire_it_started_in_time() -> None:
    seen = Seen(RUN_ID, 1, Phase.DONE, reason="failed")
    late = NOW - timedelta(hours=1)
    assert decide(seen, attempt=2, expires_at=late, task=RETRIED_ONCE).verdict is Verdict.RUN


def test_a_duplicate_is_told_before_its_task_is_checked() -> None:
    assert decide(Seen(RUN_ID, 1, Phase.DONE), known_task=False).verdict is Verdict.DUPLICATE


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [({}, 1), ({"beatd-attempt": 3}, 3), ({"beatd-attempt": "3"}, 1), ({"beatd-attempt": 0}, 1)],
)
def test_the_attempt_travels_in_a_header_and_defaults_to_one(
    headers: dict[str, object], attempt: int
) -> None:
    assert attempt_of(headers) == attempt


def test_retry_delays_double_up_to_a_cap() -> None:
    first = timedelta(seconds=10)
    assert [retry_delay(first, n).total_seconds() for n in (1, 2, 3)] == [10, 20, 40]
    assert retry_delay(first, 60) == MAX_RETRY_DELAY
    assert retry_delay(timedelta(hours=2), 3) == timedelta(hours=2)  # never below the first


def test_a_retry_waits_in_a_holding_queue_per_delay_that_hands_it_back() -> None:
    delay = timedelta(seconds=20)
    assert retry_queue("beatd.tasks", delay) == "beatd.tasks.retry.20000ms"
    assert retry_queue_arguments("beatd.tasks", delay) == {
        "x-message-ttl": 20000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "beatd.tasks",
        "x-expires": 100000,
    }


def test_a_republished_message_loses_its_ttl_and_gains_headers() -> None:
    original = Properties(message_id="a@1", expiration="5000", headers={"beatd-job": "a"})
    copy = onward(original, {"beatd-reason": "failed"})
    assert copy.expiration is None
    assert copy.headers == {"beatd-job": "a", "beatd-reason": "failed"}
    assert copy.message_id == "a@1"


def test_an_event_names_the_run_its_times_and_outcome() -> None:
    facts = RunFacts(
        run_id=RUN_ID,
        job="job",
        task="t",
        scheduled_at=datetime(2026, 11, 21, 5, 30, tzinfo=UTC),
        started_at=datetime(2026, 11, 21, 5, 30, 1, tzinfo=UTC),
        finished_at=datetime(2026, 11, 21, 5, 30, 3, 500000, tzinfo=UTC),
        exit_code=3,
        output="bad",
        reason="failed",
        detail="exit status 3",
    )
    body = json.loads(event_body(Event.FAILED, facts, queue="q", worker="host:1", now=NOW))
    assert body == {
        "event": "failed",
        "job": "job",
        "task": "t",
        "run_id": RUN_ID,
        "attempt": 1,
        "scheduled_at": "2026-11-21T05:30:00.000Z",
        "started_at": "2026-11-21T05:30:01.000Z",
        "finished_at": "2026-11-21T05:30:03.500Z",
        "duration_s": 2.5,
        "exit_code": 3,
        "output": "bad",
        "reason": "failed",
        "detail": "exit status 3",
        "retry_in_s": None,
        "queue": "q",
        "worker": "host:1",
        "at": "2026-11-21T05:30:10.000Z",
    }
    assert event_routing_key(Event.FAILED, "job") == "failed.job"


# --- what a message may ask of a command (issue 12) -----------------------------------------


FORGED_ARGS = ["/bin/sh", "-c", "id > /tmp/x"]


def with_args(args: list[object]) -> Received:
    return dataclasses.replace(received(), args=args)


def test_args_a_command_does_not_take_are_refused_before_anything_runs() -> None:
    env_task = TaskConfig("t", command=("/usr/bin/env",))
    decision = judge(
        with_args(FORGED_ARGS), 1, None, in_progress=False, known_task=True, now=NOW, task=env_task
    )
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, Reason.REFUSED)
    assert decision.detail.startswith("the message has 3 args and this command takes none")
    assert event_for(Reason.REFUSED) is Event.REJECTED


def test_args_a_command_takes_and_args_for_a_call_run() -> None:
    appending = TaskConfig("t", command=("/bin/echo",), args=ArgsPolicy(ArgsMode.APPEND))
    calling = TaskConfig("t", call="m:f")
    for task in (appending, calling):
        decision = judge(
            with_args([1, "x"]), 1, None, in_progress=False, known_task=True, now=NOW, task=task
        )
        assert decision.verdict is Verdict.RUN


def test_a_duplicate_with_forged_args_is_still_only_a_duplicate() -> None:
    env_task = TaskConfig("t", command=("/usr/bin/env",))
    done = Seen(RUN_ID, 1, Phase.DONE)
    decision = judge(
        with_args(FORGED_ARGS), 1, done, in_progress=False, known_task=True, now=NOW, task=env_task
    )
    assert decision.verdict is Verdict.DUPLICATE


# --- what a worker admits at all (issue 12 item 4, issue 9 item 9) ----------------------------


BODY = json.dumps({
    "v": 1, "id": RUN_ID, "job": "job", "task": "t", "args": [], "kwargs": {},
    "scheduled_at": "2026-11-21T05:30:00Z", "trigger": "schedule",
}).encode()  # fmt: skip
BEATD_PROPERTIES = Properties(
    message_id=RUN_ID, headers={"beatd-job": "job", "beatd-format": 1, "beatd-attempt": 2}
)


def nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = {"n": value}
    return value


def test_a_message_as_beatd_sends_it_is_admitted() -> None:
    assert admit(BEATD_PROPERTIES, BODY).id == RUN_ID
    bare = Properties(message_id="", content_type="", content_encoding=None)  # plain publishers
    assert admit(bare, BODY).task == "t"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"content_type": "text/plain"}, "content_type 'text/plain' is not application/json"),
        ({"content_encoding": "gzip"}, "content_encoding 'gzip' is not utf-8"),
        ({"message_id": "other@1"}, "message_id 'other@1' is not the body's id"),
        ({"message_id": b"\xff\xfe"}, "property message_id is not UTF-8 text"),
        ({"type": b"\xff"}, "property type is not UTF-8 text"),
        ({"timestamp": 2**64}, "property timestamp is out of range"),
        ({"headers": {"beatd-attempt": 0}}, "header beatd-attempt is not a whole number 1-1000"),
        ({"headers": {"beatd-attempt": "3"}}, "beatd-attempt"),
        ({"headers": {"beatd-attempt": True}}, "beatd-attempt"),
        ({"headers": {"beatd-attempt": 10**6}}, "beatd-attempt"),
        ({"headers": {"deep": nested(MAX_HEADER_DEPTH)}}, "nest more than 8 deep"),
        ({"headers": {f"h{n}": n for n in range(MAX_HEADER_FIELDS + 1)}}, "more than 1000"),
        ({"headers": {"x": [[1] * 600, [2] * 600]}}, "more than 1000 fields"),
        ({"headers": {"big": 2**63}}, "cannot be sent on"),
        ({"headers": {"k" * 256: 1}}, "cannot be sent on"),
        ({"headers": {"s": "\ud800"}}, "cannot be sent on"),
        ({"headers": {"d": Decimal("NaN")}}, "cannot be sent on"),
        ({"headers": {"d": Decimal("1e300")}}, "cannot be sent on"),
        ({"headers": {"t": datetime(1, 1, 1)}}, "cannot be sent on"),
        ({"headers": {"o": object()}}, "cannot be sent on"),
        ({"headers": None}, "headers are not a table"),
    ],
)
def test_properties_and_headers_out_of_bounds_are_malformed(
    change: dict[str, object], reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=re.escape(reason)):
        admit(dataclasses.replace(BEATD_PROPERTIES, **change), BODY)  # type: ignore[arg-type]


def test_headers_within_bounds_of_every_kind_pika_decodes_are_admitted() -> None:
    headers = {
        "deep": nested(MAX_HEADER_DEPTH - 1),
        "kinds": [None, True, -(2**63), 2**63 - 1, 1.5, b"\x00\xff", "é", Decimal("1.25"),
                  datetime(2026, 1, 1), {"k": []}],
        b"\xff-key": 1,
    }  # fmt: skip
    assert admit(Properties(message_id=RUN_ID, headers=headers), BODY).id == RUN_ID


def test_an_oversized_body_is_refused_by_its_size_alone() -> None:
    poison = b"[" * 2048  # would be "nested too deep" if it were parsed
    with pytest.raises(MalformedMessage, match="body is 2048 bytes, over the 1024 bytes limit"):
        admit(BEATD_PROPERTIES, poison, max_body=1024)


def test_a_dead_letter_drops_the_headers_that_could_not_be_sent_again_and_says_so() -> None:
    bad = dataclasses.replace(
        BEATD_PROPERTIES,
        timestamp=2**64 + 5,
        headers={"beatd-job": "job", "deep": nested(40), "big": 2**70, "s": "\udc00"},
    )
    copy = onward(bad, {"beatd-reason": "malformed"})
    assert copy.headers == {
        "beatd-job": "job", "beatd-dropped-headers": 3, "beatd-reason": "malformed",
    }  # fmt: skip
    assert copy.timestamp is None
    encoded = pika.BasicProperties(headers=dict(copy.headers), timestamp=copy.timestamp)
    assert encoded.encode()  # what the dead-letter publish does with them


def test_an_event_about_a_malformed_message_can_always_be_encoded() -> None:
    facts = RunFacts(run_id=b"\xff-raw", job="j\ud800", task="t")  # type: ignore[arg-type]
    body = json.loads(event_body(Event.REJECTED, facts, queue="q", worker="w", now=NOW))
    assert body["run_id"] == "b'\\xff-raw'"
    assert body["job"] == "j\ud800"
