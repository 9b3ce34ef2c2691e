"""The runs the worker is settling, by run id: every delivery of a run is settled together
(acked, handed back, or rejected), and another attempt of it that arrives meanwhile is held
until then."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from beatd.core.messages import Received
from beatd.core.ports import Delivery
from beatd.core.verdicts import RunFacts

log = logging.getLogger("beatd.worker")


@dataclass
class InFlight:
    """A run id this worker is settling: every delivery of it is acked together at the end."""

    message: Received
    attempt: int
    deliveries: list[Delivery]
    facts: RunFacts
    # Another attempt of the same id that arrived meanwhile (a retry released before this one
    # was acked, or a forged attempt header): held, unacked, and handed back once this one is
    # settled, not requeued in a hot loop (issue 9 item 17).
    parked: list[Delivery] = field(default_factory=list)


class Ledger:
    def __init__(self) -> None:
        self._runs: dict[str, InFlight] = {}

    def get(self, run_id: str) -> InFlight | None:
        return self._runs.get(run_id)

    def ids(self) -> set[str]:
        return set(self._runs)

    def open(self, entry: InFlight) -> None:
        self._runs[entry.message.id] = entry

    def park(self, entry: InFlight, delivery: Delivery, attempt: int) -> None:
        """Hold another attempt of a run being settled here (bounded by the prefetch)."""
        if not entry.parked:
            log.warning(
                "run %s (job %s): attempt %d arrived while attempt %d is being settled here; "
                "held until that ends",
                entry.message.id, entry.message.job, attempt, entry.attempt,
            )  # fmt: skip
        entry.parked.append(delivery)

    def ack(self, entry: InFlight) -> None:
        """Ack every delivery of the run. One whose channel has gone is redelivered by the
        broker, and the run-id store then acks it as a duplicate."""
        self.close(entry)
        for delivery in entry.deliveries:
            delivery.ack()

    def hand_back(self, entry: InFlight) -> None:
        """Requeue every delivery of the run (a no-op on a channel that has gone)."""
        self.close(entry)
        for delivery in entry.deliveries:
            delivery.reject(requeue=True)

    def reject(self, entry: InFlight) -> None:
        """Reject every delivery without requeue: the queue's x-dead-letter-exchange takes
        it (header x-death: rejected)."""
        self.close(entry)
        for delivery in entry.deliveries:
            delivery.reject(requeue=False)

    def close(self, entry: InFlight) -> None:
        """The run is no longer settled here (its deliveries left unacked go back to the
        queue with their channel): hand back the attempts held meanwhile."""
        if self._runs.get(entry.message.id) is entry:
            del self._runs[entry.message.id]
        parked, entry.parked = entry.parked, []
        for delivery in parked:
            delivery.reject(requeue=True)
