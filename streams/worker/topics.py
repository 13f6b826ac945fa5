"""Topic creation and offset helpers that work the same on Apache Kafka and on Tansu.

Tansu auto-creates unknown topics with 4 partitions, so every topic is created here first with
the configured count, and an existing topic with another count is an error (a table whose
source and changelog differ in partitions cannot be co-partitioned).

Tansu 0.6.0 also reports a partition's end offset as *the last batch's base offset + 1*
instead of *the last offset + 1*. :func:`true_end_offsets` corrects that by reading the
last reported record's batch: on Kafka it returns the reported end unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.errors import BrokerError, TopicError

__all__ = ["TopicSpec", "ensure_topics", "true_end_offsets"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    #: Records older than this are deleted (``retention.ms``; a compacted topic is then
    #: ``compact,delete`` whatever the settings' policy); ``None``: the broker's default.
    retention_s: float | None = None

    def new_topic(self, replication: int = 1, cleanup_policy: str = "compact") -> NewTopic:
        """The topic to create, with ``replication`` copies; a compacted one gets
        ``cleanup_policy`` (``compact``, or ``compact,delete`` to also expire old records)."""
        configs = {"cleanup.policy": cleanup_policy} if self.compacted else {}
        if self.retention_s is not None:
            configs["retention.ms"] = str(round(self.retention_s * 1000))
            if self.compacted:
                configs["cleanup.policy"] = "compact,delete"
        return NewTopic(self.name, self.partitions, replication, topic_configs=configs)


async def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    wait_s: float = 0.0,
    retry_s: float = 2.0,
    *,
    replication: int = 1,
    cleanup_policy: str = "compact",
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Create missing topics; raise ``TopicError`` if one exists with another partition count.

    A broker that does not answer yet is tried again every ``retry_s`` for up to ``wait_s``
    seconds (a worker started before Kafka waits for it, saying so), then ``BrokerError``.
    New topics get ``replication`` copies, compacted ones ``cleanup_policy``; the admin client
    connects with ``client_options`` (TLS, SASL: :mod:`streams.worker.kafka_auth`).
    """
    admin = await _connected_admin(bootstrap, wait_s, retry_s, client_options or {})
    try:
        existing = await _partition_counts(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in existing]
        for spec in specs:
            have = existing.get(spec.name)
            if have is not None and have != spec.partitions:
                raise TopicError(
                    f"topic {spec.name!r} has {have} partitions, configured {spec.partitions}: "
                    "delete it or set INTEREST_STREAM_PARTITIONS to match"
                )
        for spec in missing:
            try:
                await admin.create_topics([spec.new_topic(replication, cleanup_policy)])
            except TopicAlreadyExistsError:
                pass
            log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
    except KafkaError as exc:
        raise TopicError(f"cannot create topics on {bootstrap}: {exc}") from exc
    finally:
        await admin.close()


async def _connected_admin(
    bootstrap: str, wait_s: float, retry_s: float, client_options: Mapping[str, Any]
) -> AIOKafkaAdminClient:
    deadline = time.monotonic() + wait_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=10_000, **client_options
        )
        try:
            await admin.start()
            return admin
        except KafkaError as exc:
            await admin.close()
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" after waiting {wait_s:g} s" if wait_s else ""
                raise BrokerError(f"cannot reach Kafka at {bootstrap}{waited}: {exc}") from exc
            log.warning("Kafka at %s does not answer yet (%s): trying again for up to %.0f s "
                        "(INTEREST_STREAM_BROKER_WAIT_S)", bootstrap, exc, left)  # fmt: skip
            await asyncio.sleep(min(retry_s, left))


async def _partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names)
    listed = set(await admin.list_topics()) & wanted
    if not listed:
        return {}
    described = await admin.describe_topics(sorted(listed))
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}


async def true_end_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timeout_s: float = 5.0
) -> dict[TopicPartition, int]:
    """End offsets (last offset + 1) of ``partitions``, exact on Kafka and on Tansu.

    ``consumer`` must be a started consumer without a group that this function may assign.
    """
    reported: Mapping[TopicPartition, int] = await consumer.end_offsets(list(partitions))
    result = dict(reported)
    probe = [tp for tp, end in reported.items() if end > 0]
    if not probe:
        return result
    consumer.assign(probe)
    for tp in probe:
        consumer.seek(tp, reported[tp] - 1)
    pending = set(probe)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while pending and asyncio.get_running_loop().time() < deadline:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in batches.items():
            if records:
                result[tp] = max(result[tp], records[-1].offset + 1)
                pending.discard(tp)
    consumer.assign([])
    if pending:
        log.debug("no record read back at the end of %s; keeping reported ends", pending)
    return result


async def read_true_end_offsets(
    bootstrap: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """:func:`true_end_offsets` with a short-lived consumer of its own."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return await true_end_offsets(consumer, partitions)
    finally:
        await consumer.stop()
