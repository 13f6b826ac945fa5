"""The dead-letter topic: the raw record, untouched, with why and where it came from.

Value and key are the original bytes; the context travels in headers, as Kafka Connect's
``errors.deadletterqueue.context.headers.enable`` does: ``dlq.reason``, ``dlq.topic``,
``dlq.partition``, ``dlq.offset``, ``dlq.timestamp``.
"""

from __future__ import annotations

import logging

from faust.types import Message

from streams.worker.wiring import Wiring

__all__ = ["dead_letter", "dlq_headers"]

log = logging.getLogger(__name__)
MAX_REASON_CHARS = 1000


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("dlq.reason", reason[:MAX_REASON_CHARS].encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
    ]


async def dead_letter(wiring: Wiring, message: Message, reason: str) -> None:
    """Send ``message`` to the dead-letter topic with ``reason``, and count it."""
    headers = dlq_headers(reason, message.topic, message.partition, message.offset)
    await wiring.dlq.send(key=message.key, value=message.value or b"", headers=headers)
    wiring.stats.dead_letter(reason)
    log.debug("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
