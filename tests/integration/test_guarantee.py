"""The processing guarantee and the Kafka security settings against real brokers.

``exactly_once`` on the embedded broker (no transactions) stops the real CLI worker at start,
naming the setting and the broker. The TLS settings reach every plain client, the health probe
and the guarantee check: a Tansu broker reachable only over TLS (:mod:`tls_broker`) serves
topic creation, a produce and a consume made from ``Settings`` alone, and refuses plain clients.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.contract import ItemRecord
from streams.errors import BrokerError, SettingsError
from streams.local.replay import publish_items
from streams.settings import Settings, TopicNames
from streams.worker.health import BrokerMonitor, probe_broker
from streams.worker.kafka_auth import client_options, ssl_context
from streams.worker.runtime import check_guarantee, prepare_topics
from streams.worker.transport import faust_app
from tests.integration.conftest import REPO
from tests.integration.tls_broker import TlsBroker, tls_broker

pytestmark = pytest.mark.integration


def test_exactly_once_on_the_embedded_broker_stops_the_worker_at_start(
    bootstrap: str, tmp_path: Path
) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("KAFKA_BOOTSTRAP is set: that broker may well have transactions")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "INTEREST_STREAM_HOME": str(tmp_path),
        "INTEREST_STREAM_APP_ID": f"eos-{uuid.uuid4().hex[:8]}",
        "INTEREST_STREAM_PROCESSING_GUARANTEE": "exactly_once",
        "INTEREST_STREAM_WEB_ENABLED": "false",
    }
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "streams.cli", "worker"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert "INTEREST_STREAM_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions" in (
        done.stderr
    )
    assert f"the broker at {bootstrap}" in done.stderr
    assert "Traceback" not in done.stderr
    # at start: before the model is loaded and before faust runs (no worker, no web view)
    assert "text encoder" not in done.stderr and "Starting" not in done.stdout + done.stderr
    assert not (tmp_path / "models").exists()
    print(f"exactly_once refused in {took:.1f} s")


def test_at_least_once_asks_the_broker_nothing() -> None:
    # nothing listens on port 9 of this machine: a check that asked would fail
    check_guarantee(Settings(bootstrap="127.0.0.1:9", processing_guarantee="at_least_once"))
    with pytest.raises(SettingsError, match="exactly_once needs Kafka transactions"):
        check_guarantee(
            Settings(bootstrap="127.0.0.1:9", processing_guarantee="exactly_once"), timeout_s=2.0
        )


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with tls_broker(tmp_path_factory.mktemp("tls")) as broker:
        yield broker


def _settings(broker: TlsBroker, **changes: object) -> Settings:
    app = f"tls-{uuid.uuid4().hex[:6]}"
    names = ("click", "browse", "comment", "items", "recs", "dlq", "control", "dislike")
    topics = TopicNames(*(f"{app}.{n}" for n in names))
    return Settings(bootstrap=broker.bootstrap, app_id=app, topics=topics, partitions=2,
                    broker_wait_s=0, security_protocol="SSL", ssl_cafile=broker.cafile,
                    **changes)  # type: ignore[arg-type]  # fmt: skip


async def _read_items(settings: Settings, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False,
                                **client_options(settings))  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.items, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        keys: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(keys) < want and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                keys += [r.key for r in records if r.key is not None]
        return sorted(keys)
    finally:
        await consumer.stop()


def test_tls_settings_reach_topic_creation_produce_and_consume(tls: TlsBroker) -> None:
    settings = _settings(tls)
    prepare_topics(settings)  # the admin client, over TLS
    items = [ItemRecord(f"i{n}", f"title {n}", "") for n in range(5)]
    asyncio.run(publish_items(settings, items))  # the replay producer, over TLS
    assert asyncio.run(_read_items(settings, 5)) == [f"i{n}".encode() for n in range(5)]


def _plain(settings: Settings) -> Settings:
    return dataclasses.replace(settings, security_protocol="PLAINTEXT", ssl_cafile=None)


def test_without_tls_the_same_broker_is_refused(tls: TlsBroker) -> None:
    with pytest.raises(BrokerError, match="cannot reach Kafka"):
        prepare_topics(_plain(_settings(tls)))


def test_the_health_probe_speaks_tls_exactly_when_the_settings_do(tls: TlsBroker) -> None:
    context = ssl_context(_settings(tls))
    asyncio.run(probe_broker(tls.bootstrap, tls=context))  # TLS relay, TLS probe: answered
    asyncio.run(probe_broker(tls.plain))  # the plain listener, plain probe: answered
    with pytest.raises(BrokerError):
        asyncio.run(probe_broker(tls.bootstrap, timeout_s=2.0))  # plain probe to TLS
    with pytest.raises(BrokerError):
        asyncio.run(probe_broker(tls.plain, timeout_s=2.0, tls=context))  # TLS probe to plain

    def probed(settings: Settings) -> int:
        app = faust_app(settings)
        monitor = BrokerMonitor(app, tls.bootstrap, [], 1, Path("unused"), record_every=1)
        asyncio.run(monitor.check())
        return monitor.health.failures

    assert probed(_settings(tls)) == 0  # the monitor takes TLS from the app's credentials
    assert probed(_plain(_settings(tls))) == 1


def test_the_guarantee_check_connects_with_the_tls_settings(tls: TlsBroker) -> None:
    # over TLS the broker is reached and refuses the transactional id (Tansu has none); a
    # check that ignored the TLS settings would time out on the TLS relay instead
    with pytest.raises(SettingsError, match="UnknownError"):
        check_guarantee(_settings(tls, processing_guarantee="exactly_once"), timeout_s=5.0)
