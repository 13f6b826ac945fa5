"""The embedded broker starts on a free loopback port, answers, and is gone after the block;
a worker waits for a broker that is not there yet, reports one that goes away on ``/healthz``,
and carries on when it is back, or stops with exit code 1 when it came back without its data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams.errors import BrokerError, TopicError
from streams.local.broker import EmbeddedBroker, broker_for
from streams.worker.health import probe_broker
from streams.worker.topics import TopicSpec, ensure_topics, read_true_end_offsets
from tests.integration.conftest import Deployment, Worker, free_port
from tests.integration.kafka_client import consume, produce

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


def test_the_probe_asks_a_real_broker_and_names_what_failed(bootstrap: str) -> None:
    asyncio.run(probe_broker(bootstrap, timeout_s=5))
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerError, match=f"{closed}: .*(refused|Connect call failed)"):
        asyncio.run(probe_broker(closed, timeout_s=5))
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(BrokerError, match="no answer in 0.5 s"):
            asyncio.run(probe_broker(f"{closed},{mute}", timeout_s=0.5))


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, on a port that a second broker can take after it."""
    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "broker.log")
    with broker:
        yield broker


def _until(check: Callable[[], bool], timeout_s: float, what: str, worker: Worker) -> float:
    """Seconds until ``check()`` holds (polled every 0.1 s); fails saying ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not {what} in {timeout_s} s:\n{worker.tail()}")


def _health(worker: Worker) -> tuple[int, dict[str, Any]]:
    try:
        return worker.get("/healthz")
    except OSError:
        return 0, {}


def _send(dep: Deployment, catalog: list[Any], tag: str, n: int = 12) -> set[str]:
    """``n`` clicks of five users on the first catalog items; their event ids."""
    events = [
        {
            "event_id": f"{tag}-{k}",
            "user_id": f"u{k % 5}",
            "item_id": catalog[k].item_id,
            "ts": time.time(),
        }
        for k in range(n)
    ]
    produce(
        dep.bootstrap,
        [(dep.topics.click, e["user_id"].encode(), json.dumps(e).encode()) for e in events],
    )
    return {e["event_id"] for e in events}


def _recommended(dep: Deployment, wanted: set[str], timeout_s: float) -> set[str]:
    def covered(records: list[Any]) -> set[str]:
        return {e for r in records for e in json.loads(r.value or b"{}").get("event_ids", [])}

    records = consume(
        dep.bootstrap, dep.topics.recommendations, lambda rs: covered(rs) >= wanted, timeout_s
    )
    return covered(records) & wanted


def _outage(
    worker: Worker, take_away: Callable[[], None], port: int, away_s: float
) -> tuple[float, int]:
    """Take the broker away (``take_away`` returns once it is gone) for ``away_s``: seconds
    until ``/healthz`` says so, and the log lines the worker wrote in the outage. Checks the
    outage fields of ``/healthz`` and ``/metrics.json``."""
    lines = len(worker.log.read_text(errors="replace").splitlines())
    taking = time.time()
    take_away()
    gone = time.time()
    noticed = _until(lambda: _health(worker)[0] == 503, 20, "503 on /healthz", worker)
    status, body = _health(worker)
    assert body["status"] == "broker unreachable", body
    assert taking <= body["since"] <= time.time(), (taking, body)
    assert f":{port}: " in body["last_error"], body
    assert "model_version" in body  # the runtime fields stay
    metrics = worker.get("/metrics.json")[1]
    assert (metrics["broker"], metrics["broker_outages"]) == ("unreachable", 1), metrics
    time.sleep(max(0.0, away_s - (time.time() - gone)))
    assert worker.proc.poll() is None, worker.tail()
    assert _health(worker)[0] == 503
    written = len(worker.log.read_text(errors="replace").splitlines()) - lines
    return noticed, written


def _deployment(
    broker: EmbeddedBroker, model_dir: Path, tmp: Path, catalog: list[Any]
) -> Deployment:
    dep = Deployment(broker.bootstrap, model_dir, tmp)
    _send_catalog(dep, catalog)
    return dep


def _send_catalog(dep: Deployment, catalog: list[Any]) -> None:
    items = [{"item_id": i.item_id, "title": i.title} for i in catalog[:40]]
    produce(
        dep.bootstrap,
        [(dep.topics.items, i["item_id"].encode(), json.dumps(i).encode()) for i in items],
    )


def test_a_broker_outage_is_on_healthz_and_the_worker_carries_on_when_it_is_back(
    own_broker: EmbeddedBroker, model_dir: Path, tmp_path: Path, catalog: list[Any]
) -> None:
    """The broker stops answering for 20 s (its process frozen: connections stay open, nothing
    is answered, nothing is lost, as in a network partition or a hung broker): the worker says
    so on /healthz, stays up and quiet, is healthy again when the broker answers, and events
    sent after that get recommendations on top of the state from before."""
    dep = _deployment(own_broker, model_dir, tmp_path, catalog)
    pid = own_broker.pid
    try:
        worker = dep.start_worker("worker")
        before = _send(dep, catalog, "before")
        assert _recommended(dep, before, 60) == before
        try:
            noticed, lines = _outage(
                worker, lambda: os.kill(pid, signal.SIGSTOP), own_broker.port, away_s=20
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        recovered = _until(lambda: _health(worker)[0] == 200, 60, "200 again", worker)
        assert _health(worker)[1]["broker_last_outage_s"] >= 15
        sent = time.monotonic()
        after = _send(dep, catalog, "after")
        assert _recommended(dep, after, 90) == after, worker.tail()
        first_recs = time.monotonic() - sent
        assert worker.get("/users/u1")[1]["events"] == 6  # 3 before, 3 after
        print(
            f"\nbroker frozen 20 s: /healthz 503 {noticed:.1f} s after, {lines} log lines in the "
            f"outage, 200 {recovered:.1f} s after it answered again, recommendations for new "
            f"events {first_recs:.1f} s after sending them"
        )
        assert lines <= 12, worker.tail(lines + 5)
        metrics = worker.get("/metrics.json")[1]
        assert (metrics["broker"], metrics["broker_outages"]) == ("reachable", 1), metrics
    finally:
        dep.stop_all()


def test_a_worker_whose_broker_came_back_without_its_records_stops_saying_why(
    own_broker: EmbeddedBroker, model_dir: Path, tmp_path: Path, catalog: list[Any]
) -> None:
    """The memory-only broker restarts on the same port, empty: the worker (whose table and
    offsets refer to records the broker no longer has) exits with code 1 saying what was lost
    and what to do; a worker on an empty state folder then carries on."""
    dep = _deployment(own_broker, model_dir, tmp_path, catalog)
    try:
        worker = dep.start_worker("worker")
        before = _send(dep, catalog, "before")
        assert _recommended(dep, before, 60) == before
        time.sleep(2.5)  # the worker notes the end offsets every 2 s
        noticed, lines = _outage(worker, own_broker.stop, own_broker.port, away_s=8)
        own_broker.start()
        back = time.monotonic()
        rc = worker.proc.wait(timeout=30)
        stopped = time.monotonic() - back
        assert rc == 1, worker.tail()
        log = worker.log.read_text(errors="replace")
        assert "came back without records it had" in log, worker.tail()
        assert re.search(r"\.click\[\d\] had \d+ records, now 0", log), worker.tail()
        assert f"removing {tmp_path / 'worker' / 'worker' / dep.app_id}" in log
        _send_catalog(dep, catalog)  # the broker lost it too
        fresh = dep.start_worker("fresh")
        after = _send(dep, catalog, "after")
        assert _recommended(dep, after, 60) == after, fresh.tail()
        print(
            f"\nbroker restarted empty: /healthz 503 {noticed:.1f} s after it stopped, {lines} log "
            f"lines in the 8 s outage, exit code {rc} {stopped:.1f} s after it was back"
        )
    finally:
        dep.stop_all()
