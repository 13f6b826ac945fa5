"""Can the worker reach its broker right now? A probe, the outage record, and a quiet log.

Faust and aiokafka neither stop nor report a broker that goes away under a running worker:
the worker stays up, ``/healthz`` said ``ok`` throughout, and aiokafka logged ~115 ERROR lines
a second (connect, metadata, fetch and coordinator retries: 4,600 lines in a 40 s outage on
the embedded broker). When the broker is back, aiokafka reconnects and faust rejoins the group
by itself (~3 s).

So every worker runs a :class:`BrokerMonitor`: every ``interval_s`` it asks each bootstrap
server for its API versions (one ~20-byte Kafka request on a fresh TCP connection, answered
by any Kafka broker, creating nothing; over TLS with the worker's own TLS context when the
security protocol is ``SSL`` or ``SASL_SSL``, and without SASL: Kafka answers ApiVersions
before authentication, as every client's first request), and :class:`BrokerHealth` keeps the
record that the web views show: reachable or not, since when, the last error, the count of
outages. Two failed probes in a row make an outage (one lost connection under load is not
one). While it lasts, :class:`ClientLogQuieter` holds back aiokafka's retry lines; one line says
the broker went away and one that it is back, with the count of lines held back.

A broker can come back without the data it had: a memory-only broker (the embedded Tansu)
restarted on the same port has no topics, records, committed offsets or changelog. The worker
cannot carry on then: its table (and the applied offsets each user's state keeps) refers to
records the broker no longer has, so new events at reused offsets would be skipped as
redeliveries, and faust stops with ``ConsistencyError`` at the next rebalance (and at every
start on that state folder) when a RocksDB table is ahead of its changelog. So while the broker
answers, the monitor notes the end offsets of the worker's topics every two probes; on each
return it compares them (:func:`lost_records`) and, if any went back, stops the worker with a
:class:`~streams.errors.BrokerError` that says what was lost and what to do: exit code 1, for
the orchestrator to restart it (:func:`exit_unless_gone` makes sure the process ends).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.errors import BrokerError
from streams.worker.kafka_auth import app_client_options
from streams.worker.wiring import stop_worker

__all__ = [
    "BrokerHealth",
    "BrokerMonitor",
    "ClientLogQuieter",
    "bootstrap_servers",
    "exit_unless_gone",
    "lost_data_message",
    "lost_records",
    "probe_broker",
]

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
EXIT_GRACE_S = 15.0  # a stopped worker that has not exited by then is ended
TRIP_AFTER = 2  # failed probes in a row that make an outage
API_VERSIONS = 18  # Kafka API key of ApiVersions; v0 is answered by every broker version


def bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """``"h1:9092,[::1]:9093,h3"`` -> ``[("h1", 9092), ("::1", 9093), ("h3", 9092)]``."""
    servers = []
    for entry in (e.strip() for e in bootstrap.split(",")):
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or host.endswith(":") or (":" in host and not host.startswith("[")):
            host, port = entry, "9092"  # no port, or a bare IPv6 address
        servers.append((host.strip("[]"), int(port)))
    if not servers:
        raise BrokerError(f"no bootstrap server in {bootstrap!r}")
    return servers


async def probe_broker(
    bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S, tls: ssl.SSLContext | None = None
) -> None:
    """Return when a server of ``bootstrap`` answers a Kafka ApiVersions request within
    ``timeout_s`` (over TLS with ``tls``); else raise :class:`BrokerError` with each server's
    failure."""
    failures = []
    for host, port in bootstrap_servers(bootstrap):
        try:
            await asyncio.wait_for(_api_versions(host, port, tls), timeout_s)
            return
        except TimeoutError:
            failures.append(f"{host}:{port}: no answer in {timeout_s:g} s")
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
            failures.append(f"{host}:{port}: {exc or type(exc).__name__}")
    raise BrokerError("; ".join(failures))


async def _api_versions(host: str, port: int, tls: ssl.SSLContext | None) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        client = b"interest-stream-health"
        request = struct.pack(">hhih", API_VERSIONS, 0, 1, len(client)) + client
        writer.write(struct.pack(">i", len(request)) + request)
        await writer.drain()
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        correlation, error = struct.unpack(">ih", await reader.readexactly(6))
        if size < 6 or correlation != 1 or error != 0:
            raise ValueError(f"not a Kafka ApiVersions answer (error code {error})")
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


@dataclass(slots=True)
class BrokerHealth:
    """What the probes found: the state ``/healthz`` and ``/metrics`` show (epoch seconds)."""

    bootstrap: str
    trip_after: int = TRIP_AFTER
    reachable: bool = True
    since: float | None = None  # the first failed probe of the current outage
    last_error: str | None = None
    outages: int = 0
    last_outage_s: float | None = None
    held_back: int = 0  # client log lines held back in the current outage
    failures: int = field(default=0, repr=False)  # failed probes in a row

    @property
    def quiet(self) -> bool:
        """Whether client retry lines are held back now (a probe failed, or an outage)."""
        return self.failures > 0 or not self.reachable

    def failed(self, error: str, now: float | None = None) -> bool:
        """A probe failed; ``True`` when this makes an outage (said in one log line)."""
        now = time.time() if now is None else now
        self.failures += 1
        self.last_error = error
        if self.failures == 1:
            self.since = now
        if not self.reachable or self.failures < self.trip_after:
            return False
        self.reachable = False
        self.outages += 1
        log.warning(
            "Kafka at %s does not answer (%s): /healthz reports it; the worker waits for it",
            self.bootstrap, error,
        )  # fmt: skip
        return True

    def answered(self, now: float | None = None) -> bool:
        """A probe succeeded; ``True`` when it ends an outage (said in one log line)."""
        now = time.time() if now is None else now
        back = not self.reachable
        if back:
            self.last_outage_s = now - (self.since or now)
            log.warning(
                "Kafka at %s answers again after %.1f s (%d client log lines held back)",
                self.bootstrap, self.last_outage_s, self.held_back,
            )  # fmt: skip
        self.reachable, self.failures, self.since, self.held_back = True, 0, None, 0
        return back

    def outage(self) -> dict[str, Any] | None:
        """The ``/healthz`` fields of the current outage; ``None`` while the broker answers."""
        if self.reachable:
            return None
        return {"status": "broker unreachable", "since": self.since, "last_error": self.last_error}

    def metrics(self) -> dict[str, Any]:
        return {
            "broker": "reachable" if self.reachable else "unreachable",
            "broker_outages": self.outages,
            "broker_unreachable_since": None if self.reachable else self.since,
            "broker_last_error": self.last_error,
            "broker_last_outage_s": self.last_outage_s,
        }


class ClientLogQuieter(logging.Filter):
    """Holds back aiokafka's warnings and errors while a probe fails (counted in ``held_back``),
    and lets each kind of them (same logger, same message template) through at most once every
    ``window_s`` otherwise, so no retry loop floods the log."""

    def __init__(self, health: BrokerHealth, window_s: float = 10.0) -> None:
        super().__init__()
        self.health = health
        self.window_s = window_s
        self.last_shown: dict[tuple[str, str], float] = {}
        self.loggers: list[logging.Logger] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self.health.quiet:
            self.health.held_back += 1
            return False
        key = (record.name, str(record.msg))
        if record.created - self.last_shown.get(key, -self.window_s) < self.window_s:
            return False
        self.last_shown[key] = record.created
        return True

    def install(self, prefix: str = "aiokafka") -> ClientLogQuieter:
        """Filter every logger named ``prefix`` or ``prefix.*`` (a filter acts on the logger a
        record is made by, not on the loggers it propagates to)."""
        names = [n for n in logging.Logger.manager.loggerDict if n.split(".")[0] == prefix]
        for name in sorted({prefix, *names}):
            logger = logging.getLogger(name)
            logger.addFilter(self)
            self.loggers.append(logger)
        return self

    def remove(self) -> None:
        for logger in self.loggers:
            logger.removeFilter(self)
        self.loggers.clear()


def lost_records(
    seen: Mapping[TopicPartition, int], now: Mapping[TopicPartition, int]
) -> list[str]:
    """The partitions whose end offset went back (a partition or topic now missing counts as
    0): the broker lost records it had. End offsets never go back otherwise (retention and
    compaction move a partition's start, not its end)."""
    return [
        f"{tp.topic}[{tp.partition}] had {end} records, now {now.get(tp, 0)}"
        for tp, end in sorted(seen.items())
        if now.get(tp, 0) < end
    ]


class BrokerMonitor:
    """Probes the broker of ``app`` every ``interval_s`` (an app task) into ``health``.

    While the broker answers, every ``record_every`` probes it also notes the end offsets of
    ``topics`` (the worker's sources, its catalog and its changelog: one ListOffsets request);
    when the broker is back after an outage it compares them, and stops the worker if the
    broker lost records the worker has read or written (:func:`lost_records`).
    """

    def __init__(
        self,
        app: faust.App,
        bootstrap: str,
        topics: Sequence[str],
        partitions: int,
        data_dir: Path,
        interval_s: float = PROBE_INTERVAL_S,
        record_every: int = 2,
    ) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.partitions = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.record_every = record_every
        self.health = BrokerHealth(bootstrap)
        self.quieter = ClientLogQuieter(self.health)
        self.ends: dict[TopicPartition, int] = {}
        self.returned = False  # back after an outage, not compared yet
        self.probes = 0
        self.consumer: AIOKafkaConsumer | None = None
        self.client_options = app_client_options(app)  # TLS and SASL, as the app's clients

    def register(self) -> BrokerMonitor:
        self.quieter.install()
        self.app.task(self.run)
        return self

    async def run(self) -> None:
        try:
            while not self.app.should_stop:
                await self.check()
                await asyncio.sleep(self.interval_s)
        finally:
            self.quieter.remove()
            if self.consumer is not None:
                await self.consumer.stop()

    async def check(self) -> None:
        """One probe; after an outage the comparison of end offsets, else now and then a note
        of them."""
        try:
            await probe_broker(self.bootstrap, tls=self.client_options.get("ssl_context"))
        except BrokerError as exc:
            self.health.failed(str(exc))
            return
        self.returned |= self.health.answered()
        self.probes += 1
        if not (self.returned or self.probes % self.record_every == 1):
            return
        try:
            ends = await self.end_offsets()
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("end offsets not read this time: %r", exc)
            return
        if self.returned:
            self.returned = False
            if lost := lost_records(self.ends, ends):
                message = lost_data_message(self.bootstrap, lost, self.data_dir)
                stop_worker(self.app, BrokerError(message))
                exit_unless_gone(EXIT_GRACE_S)
                return
        self.ends = ends

    async def end_offsets(self, timeout_s: float = 5.0) -> dict[TopicPartition, int]:
        """End offsets of the watched partitions that exist now (missing ones are left out)."""
        if self.consumer is None:
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.client_options
            )
            await asyncio.wait_for(self.consumer.start(), timeout_s)
        consumer = self.consumer
        topics = await asyncio.wait_for(consumer.topics(), timeout_s)  # all: creates none
        present = [
            tp
            for tp in self.partitions
            if tp.topic in topics
            and tp.partition in (consumer.partitions_for_topic(tp.topic) or ())
        ]
        ends: dict[TopicPartition, int] = await asyncio.wait_for(
            consumer.end_offsets(present), timeout_s
        )
        return ends


def exit_unless_gone(grace_s: float, code: int = 1) -> threading.Timer:
    """End the process with ``code`` if it is still there after ``grace_s``.

    A stopped worker can hang at exit: when the broker comes back, faust's consumer thread may
    be in the middle of a group join as the event loop closes, and the interpreter then waits
    for that thread for ever (seen once in four runs). The orchestrator must see the exit.
    """

    def exit_now() -> None:
        log.critical("the worker has not exited %.0f s after it stopped: exiting now", grace_s)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)

    timer = threading.Timer(grace_s, exit_now)
    timer.daemon = True  # never what keeps the process alive
    timer.start()
    return timer


def lost_data_message(bootstrap: str, lost: Sequence[str], data_dir: Path) -> str:
    shown = "; ".join(lost[:4]) + (f"; {len(lost) - 4} more" if len(lost) > 4 else "")
    return (
        f"Kafka at {bootstrap} came back without records it had ({shown}): it lost its data "
        "(a memory-only broker such as the embedded Tansu loses every topic, record, committed "
        "offset and changelog when it restarts). This worker's state refers to those records "
        "and cannot be reconciled with the broker, so the worker stops: start it again (after "
        f"removing {data_dir}, where a RocksDB table keeps its offsets) to carry on from the "
        "broker's present records, with users starting afresh"
    )
