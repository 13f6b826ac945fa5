"""The embedded broker starts on a free loopback port, answers, and is gone after the block."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from streams.errors import BrokerError, TopicError
from streams.local.broker import EmbeddedBroker, broker_for
from streams.worker.topics import TopicSpec, ensure_topics, read_true_end_offsets
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_broker_lives_exactly_as_long_as_its_block() -> None:
    with EmbeddedBroker() as broker:
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert _answers(broker.port)
        assert "tansu" in Path(f"/proc/{broker.pid}/cmdline").read_bytes().decode()
    assert not _answers(broker.port)
    with pytest.raises(BrokerError, match="not running"):
        _ = broker.pid


def test_a_configured_bootstrap_starts_nothing() -> None:
    with broker_for("kafka.example:9092") as bootstrap:
        assert bootstrap == "kafka.example:9092"


def test_topics_are_created_with_the_configured_count_and_a_mismatch_is_an_error(
    bootstrap: str,
) -> None:
    asyncio.run(ensure_topics(bootstrap, [TopicSpec("t-broker-a", 3)]))
    asyncio.run(ensure_topics(bootstrap, [TopicSpec("t-broker-a", 3)]))  # idempotent
    with pytest.raises(TopicError, match="has 3 partitions, configured 4"):
        asyncio.run(ensure_topics(bootstrap, [TopicSpec("t-broker-a", 4)]))


def test_true_end_offsets_count_every_record_of_a_multi_record_batch(bootstrap: str) -> None:
    asyncio.run(ensure_topics(bootstrap, [TopicSpec("t-broker-end", 1)]))
    produce(bootstrap, [("t-broker-end", b"k", b"v%d" % i) for i in range(25)])
    tp = TopicPartition("t-broker-end", 0)
    assert asyncio.run(read_true_end_offsets(bootstrap, [tp])) == {tp: 25}


def test_a_worker_started_before_its_broker_waits_for_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Topics are prepared first thing at start-up: with nothing on the port yet, the call
    waits (saying so) and goes on once the broker is up; without a broker it gives up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bootstrap = f"127.0.0.1:{port}"
    with pytest.raises(BrokerError, match=f"cannot reach Kafka at {bootstrap} after waiting 1 s"):
        asyncio.run(ensure_topics(bootstrap, [TopicSpec("t-late", 2)], wait_s=1.0, retry_s=0.2))

    async def late_broker() -> None:
        waiting = asyncio.ensure_future(
            ensure_topics(bootstrap, [TopicSpec("t-late", 2)], wait_s=60.0, retry_s=0.5)
        )
        await asyncio.sleep(2.0)
        assert not waiting.done()
        with EmbeddedBroker(port=port):
            await asyncio.wait_for(waiting, 30)
            with pytest.raises(TopicError, match="has 2 partitions, configured 3"):
                await ensure_topics(bootstrap, [TopicSpec("t-late", 3)])  # it was created

    with caplog.at_level("WARNING", logger="streams.worker.topics"):
        asyncio.run(late_broker())
    assert f"Kafka at {bootstrap} does not answer yet" in caplog.text
