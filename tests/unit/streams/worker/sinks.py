"""A sink for the worker's unit tests: sends handed over at once, answered when a gate opens."""

from __future__ import annotations

import asyncio

from streams.worker.ports import MemorySink, Sent


class GatedSink(MemorySink):
    """A :class:`MemorySink` whose sends are handed over at once (recorded in ``sent``) and
    return only when ``gate`` opens: a producer whose buffer is full, or a slow broker."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(self, **kwargs: object) -> Sent:  # type: ignore[override]
        message = await super().send(**kwargs)  # type: ignore[arg-type]
        await self.gate.wait()
        return message
