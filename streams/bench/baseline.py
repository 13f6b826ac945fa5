"""Pass-through Faust apps that ``interest-stream bench`` measures the real worker against.

Two modes, each its own tiny Faust app on the same event topics, with no model at all:

* ``table-send``: the classic per-event Faust agent: one table write (the raw event under the
  user's key) and one message to an output topic per event. What a stream that does no work
  costs; the real worker must beat it by batching.
* ``noop``: iterate the events and count them (the ceiling of one Faust consumer here).

Both use the worker's own transport (``interest-kafka://``, short fetch wait, exact high-water
marks) and the same consumer/producer settings (but the producer linger, which each gets at
its best), so the comparison isolates what the worker does per event. Each serves
``/healthz`` and ``/metrics.json`` (``events_applied`` is the count of events handled) on the
Faust web server. Run one as a process:
``python -m streams.bench.baseline {table-send,noop}`` with the worker's environment variables
(``Settings.from_env``); the output topic is ``<recommendations topic>.baseline``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TableT
from faust.web import Request, Response, View

from streams.settings import Settings
from streams.worker.stats import Acked, since_param
from streams.worker.topics import TopicSpec, ensure_topics
from streams.worker.transport import faust_app

__all__ = ["MODES", "BaselineCounter", "baseline_specs", "create_baseline_app", "main"]

MODES = ("table-send", "noop")
TABLE_NAME = "baseline_state"


@dataclass(slots=True)
class BaselineCounter:
    """What ``/metrics.json`` shows: events handled so far, and (``table-send``) each event's time
    from its record timestamp to the broker's ack of its output, as the worker reports it."""

    events: int = 0
    acked: Acked = field(default_factory=Acked)

    def snapshot(self, since: float = 0.0) -> dict[str, Any]:
        return {"events_in": self.events, "events_applied": self.events,
                "acked_ms": self.acked.summary(since)}


def output_topic(settings: Settings) -> str:
    return f"{settings.topics.recommendations}.baseline"


def baseline_specs(settings: Settings) -> list[TopicSpec]:
    """The topics a baseline app reads and writes (events, output, table changelog)."""
    n = settings.partitions
    return [
        *(TopicSpec(name, n) for name in settings.topics.events),
        TopicSpec(output_topic(settings), n),
        TopicSpec(f"{settings.app_id}-{TABLE_NAME}-changelog", n, compacted=True),
    ]


def baseline_faust_app(settings: Settings) -> faust.App:
    """The worker's Faust app (:func:`streams.worker.transport.faust_app`) in memory, web server
    on, and a 2 ms producer linger: a send per event queues fewer produce requests with it (the
    worker sends one message per user and batch and uses 0). Table+send at 0 had p50 56.4 ms and
    p99 224 ms at 1,000/s in one full bench run, against 23-35 ms and 50-106 ms with 2 ms."""
    return faust_app(settings, store="memory://", web_enabled=True, producer_linger=0.002)


def create_baseline_app(
    settings: Settings, mode: str, counter: BaselineCounter | None = None
) -> faust.App:
    """A Faust app with one agent of ``mode`` (see the module docstring) and two web pages."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if settings.bootstrap is None:
        raise ValueError("a baseline app needs settings.bootstrap")
    app = baseline_faust_app(settings)
    count = counter or BaselineCounter()
    events = app.topic(*settings.topics.events, key_type=bytes, value_type=bytes)
    if mode == "noop":
        _register_noop(app, events, count)
    else:
        out = app.topic(output_topic(settings), key_type=bytes, value_type=bytes)
        table = app.Table(
            TABLE_NAME, key_type=bytes, value_type=bytes, partitions=settings.partitions
        )
        _register_table_send(app, events, out, table, count)
    _register_views(app, count)
    return app


def _register_noop(app: faust.App, events: faust.TopicT, count: BaselineCounter) -> None:
    @app.agent(events, name="baseline-noop")
    async def noop(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream.events():
            count.events += 1


def _register_table_send(
    app: faust.App, events: faust.TopicT, out: faust.TopicT, table: TableT[bytes, bytes],
    count: BaselineCounter,
) -> None:
    @app.agent(events, name="baseline-table-send")
    async def table_send(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            key = event.key if isinstance(event.key, bytes) else b""
            value = event.value if isinstance(event.value, bytes) else b""
            table[key] = value
            # send_soon, not the worker's awaited send: per event it was the faster of the two
            # here (3,918 / 3,719 vs 3,585 / 3,685 events/s; docs/benchmarks.md)
            out.send_soon(key=key, value=value,
                          callback=count.acked.callback((event.message.timestamp,)))
            count.events += 1


def _register_views(app: faust.App, count: BaselineCounter) -> None:
    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    @app.page("/metrics.json")
    async def metrics(self: View, request: Request) -> Response:
        try:
            since = since_param(request.query)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.json(count.snapshot(since))


def main(argv: list[str] | None = None) -> None:
    """``python -m streams.bench.baseline MODE``: create the topics, run the app until stopped."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in MODES:
        raise SystemExit(f"usage: python -m streams.bench.baseline {{{','.join(MODES)}}}")
    settings = Settings.from_env().replace(store="memory")
    if settings.bootstrap is None:
        raise SystemExit("set KAFKA_BOOTSTRAP to the broker's address")
    asyncio.run(ensure_topics(settings.bootstrap, baseline_specs(settings)))
    os.makedirs(settings.data_dir, exist_ok=True)
    app = create_baseline_app(settings, args[0])
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
