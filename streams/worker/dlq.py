"""The dead-letter topic: the raw record, with why and where it came from.

Value and key are the original bytes (a null stays null); the context travels in headers, as
Kafka Connect's ``errors.deadletterqueue.context.headers.enable`` does: ``dlq.reason``,
``dlq.topic``, ``dlq.partition``, ``dlq.offset``.

A record too large to re-send whole (key and value together over :data:`WHOLE_MAX_BYTES`; the
producer refuses requests over 1,000,000 bytes) is sent cut: each of its key and value longer
than :data:`PREFIX_BYTES` keeps only its first :data:`PREFIX_BYTES` bytes, and the header
``dlq.truncated`` gives the original sizes of what was cut, e.g. ``value:5242880`` or
``key:1100000,value:5242880``. Every caller (the event agent, the catalog feed) goes through
:func:`dead_letters` (or :func:`dead_letter` for one record), which never raises: dead letters
that cannot be sent are logged, one line per call however many failed, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from streams.worker.wiring import Wiring

__all__ = [
    "PREFIX_BYTES",
    "WHOLE_MAX_BYTES",
    "DeadRecord",
    "bounded",
    "dead_letter",
    "dead_letters",
    "dlq_headers",
]

log = logging.getLogger(__name__)
MAX_REASON_BYTES = 1000
WHOLE_MAX_BYTES = 900_000
"""The most bytes of key and value together that a dead letter carries whole."""
PREFIX_BYTES = 65_536
"""What is kept of a key or value that is cut."""


class DeadRecord(Protocol):
    """A record read from a topic: faust's ``Message`` and aiokafka's ``ConsumerRecord`` fit."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The context headers; the reason is cut to 1,000 bytes of UTF-8 (escaped where it must)."""
    text = reason.encode("utf-8", "backslashreplace")[:MAX_REASON_BYTES]
    return [
        ("dlq.reason", text.decode("utf-8", "ignore").encode()),  # no half a character at the cut
        ("dlq.topic", topic.encode("utf-8", "backslashreplace")),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
    ]


def bounded(key: bytes | None, value: bytes | None) -> tuple[bytes | None, bytes | None, str]:
    """``key`` and ``value`` as a dead letter can carry them, and what was cut (``""``: none)."""
    parts = {"key": key, "value": value}
    if sum(len(part or b"") for part in parts.values()) <= WHOLE_MAX_BYTES:
        return key, value, ""
    cut = [f"{name}:{len(part)}" for name, part in parts.items()
           if part is not None and len(part) > PREFIX_BYTES]  # fmt: skip
    return (
        key if key is None else key[:PREFIX_BYTES],
        value if value is None else value[:PREFIX_BYTES],
        ",".join(cut),
    )


async def dead_letter(wiring: Wiring, record: DeadRecord, reason: str) -> None:
    """Send one ``record`` to the dead-letter topic with ``reason``: :func:`dead_letters` of one."""
    await dead_letters(wiring, [(record, reason)])


async def dead_letters(wiring: Wiring, letters: Sequence[tuple[DeadRecord, str]]) -> None:
    """Send each ``(record, reason)`` to the dead-letter topic, and count it. Never raises (but
    for cancellation): sends that fail are logged, one line for all of them.

    The sends are started together and awaited together. Each faust ``send`` yields to the
    event loop three times before it reaches the producer (``maybe_start_producer`` is a
    ``stampede``), and with ``producer_linger=0`` aiokafka's sender then writes a produce
    request of the one or two messages that arrived meanwhile: one send after another
    dead-lettered 1,200-1,900 records/s here, with ~1,500 turns of the loop and ~150 produce
    requests per batch of 500. Together they take a few turns and a few requests. When this
    returns, every letter has been handed to the producer (as one ``await send`` each did
    before); the broker's ack comes later, and faust flushes the producer before it commits
    the offsets, so a source record is committed only after its dead letter is acked.
    """
    if not letters:
        return
    outcomes = await asyncio.gather(
        *(_send(wiring, record, reason) for record, reason in letters), return_exceptions=True
    )
    failed = [(letter, out) for letter, out in zip(letters, outcomes, strict=True)
              if isinstance(out, BaseException)]  # fmt: skip
    for _, out in failed:
        if isinstance(out, asyncio.CancelledError):
            raise out
    if failed:
        (record, reason), first = failed[0]
        log.error("%d of %d dead letters not sent; the first: %s (reason: %s)", len(failed),
                  len(letters), _where(record), reason[:200], exc_info=first)  # fmt: skip
    if log.isEnabledFor(logging.DEBUG):
        record, reason = letters[0]
        log.debug("%d dead letters, the first %s: %s", len(letters), _where(record), reason[:200])


def _where(record: DeadRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


async def _send(wiring: Wiring, record: DeadRecord, reason: str) -> None:
    headers = dlq_headers(reason, record.topic, record.partition, record.offset)
    key, value, cut = bounded(record.key, record.value)
    if cut:
        headers.append(("dlq.truncated", cut.encode()))
    wiring.stats.dead_letter(reason)
    await wiring.dlq.send(key=key, value=value, headers=headers)
