"""The producer's flush before an offset commit, waiting for every message buffered before it.

Faust's flush gives up after 0.1 s without a message sent, and a message taken from its buffer
but not yet handed to aiokafka is not waited for at all, so offsets could be committed before
the changelog records of their events' state were sent (a kill then lost those events). This one
does not wait for the buffer to be empty either: under load it never is, and no offset would
ever be committed again. Used by :class:`streams.worker.transport.Transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import FutureMessage

__all__ = ["FlushBuffer", "FlushProducer"]


class FlushBuffer(ProducerBuffer):
    """Faust's producer buffer, counting the messages put in and the ones its drain task has
    handed to aiokafka, so a flush can wait for exactly those put before it."""

    put_total: int = 0
    handed_total: int = 0

    def put(self, fut: FutureMessage) -> None:
        super().put(fut)
        self.put_total += 1

    async def _send_pending(self, fut: FutureMessage) -> None:
        try:
            await super()._send_pending(fut)
        finally:
            self.handed_total += 1

    async def flush(self) -> None:
        """Wait until every message put before this call is in aiokafka's hands (messages put
        meanwhile are not waited for: under load the buffer is never empty). Raises, as
        faust's does, when the producer stops with messages left."""
        target = self.put_total
        while self.handed_total < target:
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):  # re-check the state now and then
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)


class FlushProducer(faust_aiokafka.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buffer = FlushBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        self.buffer = buffer
