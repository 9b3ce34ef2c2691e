"""Leader election through RabbitMQ (`ha:`): one instance publishes, the others stand by,
connected, with the schedule loaded.

The lock is an exclusive queue declared on the connection the scheduler publishes on: the
broker lets one connection hold it and drops it the moment that connection closes. Publishing
on that same connection is the fencing: a leader whose connection the broker closed (it was
paused past the heartbeat, partitioned, killed) cannot get another run confirmed, and a new
leader can only get the lock after that close.

Who asks for the lock, and when: a refused declare costs the broker two error lines in its log,
so standbys do not poll it. A single-active-consumer queue holds one token message; every
instance consumes it (prefetch 1, never acked) and the broker delivers it to one of them. The
holder asks for the lock at once and then every `poll` until it gets it; if it is refused (the
leader does not hold the token), it hands the token on (reject, requeue, consume again at the
back of the line) until it reaches the leader, which keeps it. When the leader's connection
closes, the broker gives its token to the next instance in the same moment as it frees the
lock. Standbys without the token ask every FALLBACK_S anyway, in case the token was lost.

The leader's progress (every job's state) is
a snapshot it publishes after each confirmed batch to a queue holding only the newest one;
a new leader reads it before its first step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Callable, Iterable
from datetime import datetime

from beatd.core import progress
from beatd.core.config import HaConfig
from beatd.core.errors import BrokerError
from beatd.core.jobstate import JobState
from beatd.core.messages import Properties
from beatd.core.ports import Broker, Channel, Clock, Delivery, Outcome

log = logging.getLogger("beatd.ha")

READ_TIMEOUT_S = 10.0  # a lock or progress request the broker does not answer is given up
LEADER_PEEK_S = 60.0  # how often a standby reads who leads (for its status line)
FALLBACK_S = 30.0  # how often a standby without the token asks for the lock all the same


def identity() -> str:
    """This instance as the status line and the snapshot name it: host and pid."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class Leadership:
    """Whether this instance may publish. With ha off it always leads (one instance)."""

    def __init__(
        self,
        ha: HaConfig | None,
        clock: Clock,
        *,
        me: str = "",
        on_lead: Callable[[progress.Snapshot | None], None] = lambda _s: None,
        on_peek: Callable[[progress.Snapshot], None] = lambda _s: None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """on_lead: called with the old leader's snapshot (None if there is none) just
        before this instance starts publishing; on_peek: with the leader's snapshot when a
        standby first reads it; on_change: when the role changes."""
        self.ha = ha
        self.clock = clock
        self.me = me or identity()
        self.on_lead = on_lead
        self.on_peek = on_peek
        self.on_change = on_change
        self.leading = ha is None
        self.since: datetime | None = None
        self.leader: str | None = None  # the last known leader: this one, or the snapshot's
        self.link: Broker | None = None
        self._stop = asyncio.Event()
        self._refused = False  # the lock was refused since the last change: log that once
        self._peeked: datetime | None = None
        self._wake = asyncio.Event()
        self._token: Delivery | None = None  # the token, while this instance holds it
        self._consumer: tuple[Channel, str] | None = None
        self._connection_lost = 0  # counts connections lost: the lock went with each
        self._ask = False  # ask for the lock at the next turn (just connected)

    @property
    def role(self) -> str:
        if self.ha is None:
            return "single"
        return "leader" if self.leading else "standby"

    def status(self) -> str:
        """The role for the status line: `leader since ...` or `standby (leader: ...)`."""
        if self.ha is None:
            return ""
        if self.leading and self.since is not None:
            return f"ha leader since {self.since.strftime('%Y-%m-%dT%H:%M:%SZ')} ({self.me})"
        return f"ha standby (leader: {self.leader or 'unknown'})"

    def link_state(self, state: str) -> None:
        """The publishing connection changed state: a closed connection released the lock."""
        if state == "up":
            self._ask = True  # connected (again): ask who leads, at once
            self._wake.set()
            return
        self._connection_lost += 1
        self._token = None  # it went back to the queue with the channel
        if self.ha is None or not self.leading:
            return
        self.leading, self.since, self._refused = False, None, False
        if state == "closed":  # this instance is stopping: the broker frees the lock for another
            log.info("leaving the leadership: stopping")
            return
        log.warning(
            "lost the leadership: the connection that held the lock is %s; stopped "
            "publishing; standing by",
            state,
        )
        self.on_change()

    async def setup(self, channel: Channel) -> None:
        """On every new channel of the publishing link: join the line for the token (and put
        a token in if the queue has none ready; the leader's is unacked, so at most one more
        waits: the queue keeps one ready message)."""
        if self.ha is None:
            return
        queue = self.ha.token_queue
        if not await channel.declare_queue(queue, arguments=token_arguments(self.ha)):
            properties = Properties(message_id=f"{self.ha.name}@token", type="beatd.ha.token")
            await channel.send("", queue, b"token", properties)
        self._token = None
        tag = await channel.consume(queue, self._on_token, prefetch=1)
        self._consumer = (channel, tag)

    def _on_token(self, delivery: Delivery) -> None:
        if self._token is not None and self._token.channel is delivery.channel:
            delivery.ack()  # a second token (two instances seeded at once): one is enough
            return
        self._token = delivery
        self._wake.set()

    async def run(self) -> None:
        """Ask for the lock while standing by: at once and every `poll` (jittered) while
        holding the token, every FALLBACK_S without it; until stop()."""
        if self.ha is None:
            return
        poll_s = self.ha.poll.total_seconds()
        loop = asyncio.get_running_loop()
        fallback_at = loop.time() + FALLBACK_S
        while not self._stop.is_set():
            now = loop.time()
            link = self.link
            connected = link is not None and link.channel_now() is not None
            due = self._ask or self._token is not None or now >= fallback_at
            if connected and not self.leading and due:
                # Also once on each connect: who leads, and is it this file's schedule?
                fallback_at, self._ask = now + FALLBACK_S, False
                await self.elect()
            wait_s = poll_s if self._token is not None and not self.leading else FALLBACK_S
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s * random.uniform(0.8, 1.0))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def elect(self) -> None:
        """One attempt at the lock; on success, resume from the progress and lead."""
        link = self.link
        assert self.ha is not None
        if self.leading or link is None or link.channel_now() is None:
            return
        connection = self._connection_lost
        try:
            held = await asyncio.wait_for(link.try_lock(self.ha.lock_queue), READ_TIMEOUT_S)
            if not held:
                await self._pass_token()
                await self._refused_by_leader(link)
                return
            raw = await asyncio.wait_for(
                link.read_last(self.ha.progress_queue, progress_arguments(self.ha)),
                READ_TIMEOUT_S,
            )
        except (BrokerError, TimeoutError) as exc:
            log.warning("leader election: %s; trying again in %s", exc or "timed out", self.ha.poll)
            return
        snapshot = None
        if raw is not None:
            try:
                snapshot = progress.decode(raw)
            except ValueError as exc:
                log.warning("%s in %s; resuming from the local state", exc, self.ha.progress_queue)
        if connection != self._connection_lost or link.channel_now() is None:
            return  # the connection went meanwhile, and the lock with it
        self.on_lead(snapshot)
        self.leading, self.since, self.leader, self._refused = True, self.clock(), self.me, False
        if snapshot is None:
            log.info("leading (no progress on the broker yet: resuming from the local state)")
        else:
            log.info(
                "leading; resuming from the progress %s wrote at %s",
                snapshot.leader,
                snapshot.written_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
            )
        self.on_change()

    async def _pass_token(self) -> None:
        """Refused while holding the token: the leader is not the token's holder (it got the
        lock by the fallback). Go to the back of the line so that the token moves on."""
        token, consumer, self._token = self._token, self._consumer, None
        if self.ha is None or token is None or consumer is None or consumer[0] is not token.channel:
            return
        channel, tag = consumer
        await channel.cancel(tag)
        token.reject(requeue=True)
        if channel.is_open:
            tag = await channel.consume(self.ha.token_queue, self._on_token, prefetch=1)
            self._consumer = (channel, tag)

    async def _refused_by_leader(self, link: Broker) -> None:
        """Another instance leads: say so once, and read its name now and then."""
        assert self.ha is not None
        now = self.clock()
        if self._peeked is None or abs((now - self._peeked).total_seconds()) >= LEADER_PEEK_S:
            self._peeked = now
            raw = await asyncio.wait_for(
                link.read_last(self.ha.progress_queue, progress_arguments(self.ha)),
                READ_TIMEOUT_S,
            )
            with contextlib.suppress(ValueError):
                snapshot = None if raw is None else progress.decode(raw)
                if snapshot is not None and self.leader is None:
                    self.on_peek(snapshot)
                self.leader = None if snapshot is None else snapshot.leader
        if not self._refused:
            self._refused = True
            log.info(
                "standing by: %s leads (it holds %s)",
                self.leader or "another instance",
                self.ha.lock_queue,
            )
            self.on_change()

    async def save(self, channel: Channel, states: Iterable[JobState]) -> None:
        """Publish the progress after a confirmed batch (on the lock holder's channel)."""
        if self.ha is None or not self.leading:
            return
        body = progress.encode(self.me, self.clock(), states)
        properties = Properties(message_id=f"{self.ha.name}@progress", type="beatd.ha.progress")
        outcome = await channel.send("", self.ha.progress_queue, body, properties)
        if outcome is not Outcome.CONFIRMED:
            log.warning(
                "progress not confirmed (%s): a takeover now would publish this batch again "
                "under the same ids",
                outcome.value,
            )


def say_differing(differing: list[str], then: str) -> None:
    """Log the jobs whose schedule differs from the leader's (a file deployed host by host)."""
    if differing:
        shown = ", ".join(repr(name) for name in differing[:5])
        more = f" and {len(differing) - 5} more" if len(differing) > 5 else ""
        log.warning(
            "%d job(s) differ from the schedule %s (%s%s)", len(differing), then, shown, more
        )


def token_arguments(ha: HaConfig) -> dict[str, object]:
    """The token queue: one consumer at a time gets deliveries; one ready token at most."""
    arguments: dict[str, object] = {
        "x-single-active-consumer": True,
        "x-max-length": 1,
        "x-overflow": "drop-head",
    }
    if ha.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return arguments


def progress_arguments(ha: HaConfig) -> dict[str, object]:
    """The progress queue keeps only the newest snapshot."""
    arguments: dict[str, object] = {"x-max-length": 1, "x-overflow": "drop-head"}
    if ha.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    return arguments
