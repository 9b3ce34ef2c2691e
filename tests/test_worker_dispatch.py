"""The worker's decisions (beatd.core.verdicts), pure: duplicates, restarts, expiry, retries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from beatd.core.messages import Properties, Received
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
) -> Decision:
    return judge(
        received(expires_at),
        attempt,
        seen,
        in_progress=in_progress,
        known_task=known_task,
        now=NOW,
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


def test_a_retry_is_not_a_duplicate_of_the_attempt_before_it() -> None:
    assert decide(Seen(RUN_ID, 1, Phase.DONE), attempt=2).verdict is Verdict.RUN


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
    seen = Seen(RUN_ID, 1, Phase.DONE)
    assert decide(seen, attempt=2, expires_at=NOW - timedelta(hours=1)).verdict is Verdict.RUN


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
