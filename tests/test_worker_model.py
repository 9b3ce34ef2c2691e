"""A model-based test of the worker (issue 9, deliverable 2): Hypothesis picks interleavings of
deliveries, duplicates, a forged attempt header, malformed, poisonous and oversized messages,
task successes, failures (with a retry) and timeouts, retries coming due, connection drops,
broker outages, dead letters the client cannot encode, SIGTERM, forced stops and SIGKILLs (at
any pass of the event loop, or as soon as a run's start is committed, what was not committed
lost) with a restart over the same run-id store. Runs are quick `call:` tasks
(tests/worker_tasks.py) that write one line per execution, so executions are counted per run id.
After every step it checks:

- a finished run (succeeded, or dead-lettered for good) never runs again;
- no run is dead-lettered twice for one attempt (twice only after a crash right at its ack);
- SIGTERM's drain ends within the longest task timeout plus a few seconds;
- the run-id store is written before anything acts on it: a run that executed is in it (its
  start was committed before its call), and a delivery the broker saw acked is finished in it
  (its end was committed before the ack).

And whenever the worker has settled (the `everything_settles` rule):

- every delivery into the work queue was acked or rejected exactly once: none left unacked,
  none waiting, the broker's counts add up;
- every malformed message was dead-lettered;
- the worker never stops consuming while it has free slots.

BEATD_MODEL_EXAMPLES sets how many runs Hypothesis tries (CI: the default below).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from beatd.core.verdicts import Phase, attempt_of
from beatd.runtime.seen import SeenStore
from beatd.worker import outbox
from beatd.worker.worker import Worker
from tests.clock import utc
from tests.fakebroker import FakeChannel, FakeLink
from tests.steps import quiet
from tests.worker_steps import DEAD, QUEUE, Pool, message

START = utc(2026, 11, 21, 5, 31)
SLOW_S = 0.05  # a `slow` run sleeps this long, past its timeout
TASKS = {
    "m.ok": {"call": "tests.worker_tasks:count"},
    "m.fail": {"call": "tests.worker_tasks:count_then_fail", "retries": 1, "retry_delay": "1s"},
    "m.slow": {"call": "tests.worker_tasks:count_then_sleep", "timeout": "20ms"},
}
KINDS = {"ok": "m.ok", "fail": "m.fail", "slow": "m.slow", "unknown": "m.nope"}


def _nested(depth: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for _ in range(depth):
        table = {"a": table}
    return table


# Item 9's poison: each must be dead-lettered, never wedge the worker.
POISON: list[tuple[bytes | dict[str, Any], dict[str, Any]]] = [
    (b"[" * 100_000, {}),
    (b"not json", {}),
    (message("m.ok", "early@1", scheduled_at="0001-01-01T00:00:00+01:00"), {}),
    # As pika delivers it: the escape in the JSON body, no message_id (not UTF-8 encodable).
    (json.dumps(message("m.ok", "\ud800@1")).encode(), {}),
    (message("m.ok", "deep@1"), {"nested": _nested(700)}),
    (b"x" * (1024 * 1024 + 1), {}),  # over worker.max_body (1MiB)
]
DRAIN_BOUND_S = 0.02 + 3.0  # the longest task timeout plus a few seconds


class WorkerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="beatd-wmodel-"))
        self.record = self.dir / "executions"
        self.record.touch()
        self.backoff = outbox.BACKOFF_FIRST_S
        outbox.BACKOFF_FIRST_S = 0.001
        self.pool = Pool(self.dir, TASKS, now=START, concurrency=2)
        self.finished: dict[str, int] = {}  # run id: executions when it finished for good
        self.published: Counter[str] = Counter()  # run id: copies published
        self.malformed = 0
        self.crashed_with: set[str] = set()  # run ids in flight at a crash
        self.settled = False
        self.do(self.pool.start())
        # What is committed, as a restart would find it: the worker's own store also sees the
        # writes it has not committed yet, which a crash loses.
        self.durable = SeenStore(self.pool.store_path, 1000)

    def do(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        worker = self.pool.worker
        if worker is not None:
            worker.interrupt()
            self.do(quiet())
            self.do(worker.close())
            worker.store.close()
        outbox.BACKOFF_FIRST_S = self.backoff
        self.durable.close()
        left = asyncio.all_tasks(self.loop)
        for task in left:
            task.cancel()
        if left:
            self.do(asyncio.wait(left))
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def worker(self) -> Worker:
        assert self.pool.worker is not None
        return self.pool.worker

    def executions(self) -> Counter[str]:
        return Counter(self.record.read_text().splitlines())

    def step(self, change: Callable[[], object] = lambda: None) -> None:
        """Make a change on the event loop (deliveries start there), let it run a little."""

        async def act() -> None:
            change()
            await quiet()

        self.settled = False
        self.do(act())

    # Deliveries

    @rule(kind=st.sampled_from(sorted(KINDS)), n=st.integers(0, 3))
    def a_run_arrives(self, kind: str, n: int) -> None:
        run_id = f"{kind}{n}@1"  # a small pool of ids: later copies are duplicates
        args: list[Any] = [str(self.record), run_id]
        if kind == "slow":
            args.append(SLOW_S)
        self.step(lambda: self.pool.publish(message(KINDS[kind], run_id, args=args)))
        self.published[run_id] += 1

    @rule(n=st.integers(0, 3))
    def a_forged_second_attempt_arrives(self, n: int) -> None:
        run_id = f"ok{n}@1"
        body = message("m.ok", run_id, args=[str(self.record), run_id])
        self.step(lambda: self.pool.publish(body, **{"beatd-attempt": 2}))
        self.published[run_id] += 1

    @rule(which=st.integers(0, len(POISON) - 1))
    def a_poison_message_arrives(self, which: int) -> None:
        body, headers = POISON[which]
        self.step(lambda: self.pool.publish(body, **headers))
        self.malformed += 1

    @rule()
    def retries_come_due(self) -> None:
        """The holding queues' TTL passes: their messages go back to the work queue."""
        broker = self.pool.broker

        def release() -> None:
            for name, queue in list(broker.queues.items()):
                if ".retry." in name:
                    for held in broker.take(name):
                        queue.dead_letter(broker, held)

        self.step(release)

    # Faults

    @rule()
    def connections_drop(self) -> None:
        self.step(self.pool.broker.drop_connections)

    @rule()
    def the_broker_goes_away_and_comes_back(self) -> None:
        self.step(self.pool.broker.stop)
        self.step(self.pool.broker.start)

    @rule(on=st.booleans())
    def dead_letters_cannot_be_encoded(self, on: bool) -> None:
        """As pika refusing a frame (issue 9 item 2): the queue's own dead-lettering takes it."""
        self.pool.broker.unencodable = lambda exchange, _p: on and exchange == "w.dlx"
        self.step()

    @rule()
    def a_crash_and_a_restart(self) -> None:
        worker = self.worker
        self.crashed_with |= worker.ledger.ids()
        worker.interrupt()
        self.do(quiet())
        self.do(worker.close())  # its channel goes: what it had not acked is redelivered
        worker.store.close()
        self._calls_end(worker)
        self.pool.worker = None
        self.do(self.pool.start())
        self.step()

    def _calls_end(self, worker: Worker) -> None:
        """Wait (bounded) for the calls a stopped worker handed to its threads: a loaded
        machine can start one late, after the run was reported (timed out) or ran again."""
        for _ in range(300):
            if not worker.threads.busy:
                return
            self.do(asyncio.sleep(0.01))

    @rule(kind=st.sampled_from(sorted(KINDS)), n=st.integers(0, 3), passes=st.integers(0, 12))
    def a_run_arrives_and_the_worker_is_killed(self, kind: str, n: int, passes: int) -> None:
        """SIGKILL after `passes` passes of the event loop: writes not yet committed are lost,
        the connection goes at once, calls already in their threads end as they will."""
        run_id = f"{kind}{n}@1"
        args: list[Any] = [str(self.record), run_id]
        if kind == "slow":
            args.append(SLOW_S)
        body = message(KINDS[kind], run_id, args=args)

        async def deliver_then_run(passes: int) -> None:
            self.pool.publish(body)  # on the loop, as deliveries come
            for _ in range(passes):
                await asyncio.sleep(0)

        self.do(deliver_then_run(passes))
        self.published[run_id] += 1
        self._killed()

    @rule(n=st.integers(0, 3))
    def a_run_takes_the_worker_down(self, n: int) -> None:
        """A run whose task kills the worker (out of memory, a segfault): SIGKILL as soon as
        its start is committed, before its end can be (both are committed on the loop)."""
        run_id = f"ok{n}@1"
        body = message("m.ok", run_id, args=[str(self.record), run_id])

        async def deliver_until_started() -> None:
            before = self.durable.get(run_id)
            self.pool.publish(body)
            for _ in range(100):  # bounded: a duplicate never starts
                seen = self.durable.get(run_id)
                if seen != before and seen is not None and seen.phase is Phase.RUNNING:
                    return
                await asyncio.sleep(0)

        self.do(deliver_until_started())
        self.published[run_id] += 1
        self._killed()

    def _killed(self) -> None:
        worker = self.worker
        self.crashed_with |= worker.ledger.ids()
        worker.store.close()  # first: whatever the dying worker does next is not durable
        link = worker.link
        assert isinstance(link, FakeLink)
        link.kill()
        worker.interrupt()
        self.do(quiet())
        self.do(worker.close())
        self._calls_end(worker)  # the calls it had started end as they will
        # Before the restart runs anything again: every run that executed was committed.
        self.a_run_that_executed_is_in_the_store()
        self.pool.worker = None
        self.do(self.pool.start())
        self.step()

    @rule()
    def sigterm_and_a_restart(self) -> None:
        worker = self.worker
        self.do(asyncio.wait_for(worker.drain(), DRAIN_BOUND_S))  # TimeoutError: a failure
        self.do(worker.close())
        worker.store.close()
        self._calls_end(worker)  # calls past their timeout, left to their threads
        self.pool.worker = None
        self.do(self.pool.start())
        self.step()

    # Settling

    @precondition(lambda self: self.pool.broker.up)
    @rule()
    def everything_settles(self) -> None:
        for _ in range(100):
            self.do(quiet())
            worker = self.worker
            if not worker._handlers and not worker.lingering and not self._waiting():
                break
            self.do(asyncio.sleep(0.01))
        self.settled = True

    def _waiting(self) -> int:
        return len(self.pool.broker.queues[QUEUE].ready)

    def _unacked(self) -> int:
        channel = self.worker.link.channel_now()
        return len(channel._unacked) if isinstance(channel, FakeChannel) else 0

    # Invariants

    @invariant()
    def a_finished_run_never_runs_again(self) -> None:
        done = self.executions()
        dead = {m.properties.message_id for m in self.pool.broker.messages(DEAD)}
        for run_id, count in self.finished.items():
            assert done[run_id] == count, f"{run_id} ran again after it finished"
        if self.worker.threads.busy:
            return  # a call handed to a thread may not have begun yet (one timed out first)
        for run_id in self.published:
            seen = self.durable.get(run_id)
            final = seen is not None and seen.phase is Phase.DONE
            if final and seen is not None and (not seen.reason or run_id in dead):
                self.finished.setdefault(run_id, done[run_id])

    @invariant()
    def a_run_that_executed_is_in_the_store(self) -> None:
        for run_id in self.executions():
            assert self.durable.get(run_id) is not None, f"{run_id} ran before its start"

    @invariant()
    def a_delivery_acked_is_finished_in_the_store(self) -> None:
        dead = {
            (m.properties.message_id, attempt_of(m.properties.headers))
            for m in self.pool.broker.messages(DEAD)
        }
        for acked in self.pool.broker.acked:
            run_id = acked.properties.message_id
            if not run_id.startswith(("ok", "fail", "slow")):
                continue  # not run here: nothing to record
            attempt = attempt_of(acked.properties.headers)
            seen = self.durable.get(run_id)
            assert seen is not None, f"{run_id} acked, unknown to the store"
            later = seen.attempt > attempt
            # Its own attempt finished, or (a later, forged attempt) an earlier one finished
            # for good: it succeeded, or it was dead-lettered.
            for_good = not seen.reason or (run_id, seen.attempt) in dead
            finished = seen.phase is Phase.DONE and (seen.attempt == attempt or for_good)
            assert later or finished, f"{run_id} attempt {attempt} acked, in the store {seen}"

    @invariant()
    def no_attempt_is_dead_lettered_twice(self) -> None:
        letters = Counter(
            (m.properties.message_id, m.properties.headers.get("beatd-attempt"))
            for m in self.pool.broker.messages(DEAD)
            # Runs that ran: a message refused before running is refused per copy.
            if m.properties.headers.get("beatd-reason") in ("failed", "timed_out", "interrupted")
        )
        for (run_id, attempt), count in letters.items():
            allowed = 2 if run_id in self.crashed_with else 1
            assert count <= allowed, f"{run_id} attempt {attempt} dead-lettered {count} times"

    @invariant()
    def once_settled_every_delivery_was_acked_or_rejected_once(self) -> None:
        if not self.settled:
            return
        broker = self.pool.broker
        assert self._unacked() == 0, "deliveries left unacked"
        worker = self.worker
        assert not self._waiting() or worker.slots.free == 0, "stopped consuming"
        left = broker.settled[(QUEUE, "ack")] + broker.settled[(QUEUE, "reject")]
        assert broker.entered[QUEUE] == left + self._waiting()
        dead = broker.messages(DEAD)
        refused = sum(1 for m in dead if "beatd-reason" not in m.properties.headers)
        malformed = sum(1 for m in dead if m.properties.headers.get("beatd-reason") == "malformed")
        assert malformed + refused >= self.malformed, "a malformed message was not dead-lettered"


EXAMPLES = int(os.environ.get("BEATD_MODEL_EXAMPLES", "25"))
TestWorkerModel = WorkerModel.TestCase
TestWorkerModel.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=30, deadline=None, database=None
)
