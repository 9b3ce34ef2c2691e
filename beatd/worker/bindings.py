"""Keeping the worker's queue bound to its exchange: deleting an exchange deletes its
bindings, and a scheduler declaring it again does not restore them (issue 9 item 15)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from beatd.core.config import BrokerConfig, WorkerConfig
from beatd.core.errors import BrokerError
from beatd.core.ports import Broker

log = logging.getLogger("beatd.worker")

# How often the worker checks its exchange and binds its queue again.
BIND_CHECK_S = 30.0


class BindingWatch:
    """Checks every BIND_CHECK_S that the exchange exists and binds the queue again."""

    def __init__(
        self,
        link: Broker,
        broker: BrokerConfig,
        worker: WorkerConfig,
        *,
        stopping: Callable[[], bool],
    ) -> None:
        self.link = link
        self.broker = broker
        self.worker = worker
        self.stopping = stopping
        self.gone = False  # noticed missing; the next channel's setup declares it again

    async def run(self) -> None:
        while not self.stopping():
            await asyncio.sleep(BIND_CHECK_S)
            await self.check()

    async def check(self) -> None:
        """A passive declare of the exchange, then the bindings again (idempotent). A missing
        exchange makes the broker close the channel (404); the new channel's setup declares
        it and binds again."""
        channel = self.link.channel_now()
        if channel is None or self.stopping():
            return
        b, w = self.broker, self.worker
        try:
            await channel.declare_exchange(b.exchange, b.exchange_type, passive=True)
            for key in w.bindings:
                await channel.bind_queue(w.queue, b.exchange, key)
        except BrokerError as exc:
            if str(exc).startswith("404") and not self.gone:
                self.gone = True
                log.warning(
                    "exchange %r is gone (deleted?): declaring it again and binding queue %r "
                    "to it again",
                    b.exchange, w.queue,
                )  # fmt: skip
            else:
                log.debug("checking the bindings: %s", exc)

    def declared(self) -> None:
        """The setup of a new channel declared everything: say so if it was missing."""
        if self.gone:
            self.gone = False
            log.info(
                "exchange %r declared again; queue %r bound to it again",
                self.broker.exchange, self.worker.queue,
            )  # fmt: skip
