"""What the agents, the catalog feed and the views share: the app, its topics and its table.

The agent reaches the table and its output topics only through :mod:`streams.worker.ports`
(:class:`~streams.worker.ports.InterestStore`, :class:`~streams.worker.ports.Sink`), so a
:class:`Wiring` can hold their in-memory homes as well as the Faust table and topics. The
trending table is reached through :class:`ItemCounter` (none: nothing is counted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import faust
from faust.types import EventT

from streams.settings import Settings
from streams.worker.ports import InterestStore, Sink
from streams.worker.stats import Stats

__all__ = ["Forgotten", "ItemCounter", "Wiring", "stop_worker"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Forgotten:
    """Users forgotten lately (:mod:`streams.worker.control`), with the monotonic time of the
    forget: a batch that read a user's state before their forget must not write it back."""

    at: dict[str, float] = field(default_factory=dict)
    keep_s: float = 600.0  # far longer than any batch runs

    def mark(self, user_id: str) -> None:
        now = time.monotonic()
        self.at[user_id] = now
        if len(self.at) > 1024:
            self.at = {u: t for u, t in self.at.items() if now - t < self.keep_s}

    def since(self, user_id: str, started: float) -> bool:
        """Whether ``user_id`` was forgotten at or after ``started`` (monotonic seconds)."""
        return self.at.get(user_id, -1.0) >= started


class ItemCounter(Protocol):
    """Where a batch's applied events are counted per item (the trending table,
    :class:`streams.worker.trending.TrendingTable`)."""

    def count(self, applied: Sequence[tuple[EventT[bytes], str]]) -> None:
        """Count ``(source event, item_id)`` of events that changed state, each in its source
        event's partition."""


@dataclass(slots=True)
class Wiring:
    """What the agents and views share: the app, its topics and its table."""

    app: faust.App
    settings: Settings
    events: faust.TopicT
    items: faust.TopicT
    recommendations: Sink
    dlq: Sink
    table: InterestStore
    stats: Stats
    forgotten: Forgotten = field(default_factory=Forgotten)
    trending: ItemCounter | None = None


def stop_worker(app: faust.App, reason: BaseException) -> None:
    """Stop the whole worker process with a failure exit code.

    Faust's supervisor would restart a crashed agent forever while the worker stays up and
    consumes nothing; a crash of the agent or the catalog feed must end the process instead,
    so that the orchestrator (systemd, Kubernetes, the demo) sees it and restarts it cleanly.
    """
    log.critical("stopping the worker: %r", reason, exc_info=reason)
    root = app.beacon.root
    service = root.data if root is not None else app
    service._crash(reason)  # mode: the worker then exits with a failure code
    asyncio.ensure_future(service.stop())
