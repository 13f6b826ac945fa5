"""Train from the log, the trainer service and rollback, with a real broker and two real workers.

``train --from-kafka`` puts a weak model in service; ``trainer --once`` promotes a better one and
both workers switch to it without a restart (the time from the promotion to every worker serving
it is printed); ``model rollback`` brings the weak one back. That a worse candidate stays out is
tested on files (``tests/unit/streams/offline/test_trainer.py``): the same round, no broker.
The workers poll the model folder every second; ``TRAINER_TEST_MODEL_POLL_S=5`` measures with
the default poll instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.data.formats import read_events
from streams.offline.from_kafka import parse_since, read_log
from streams.settings import Settings
from streams.worker.dashboard import decisions_log
from streams.worker.topics import TopicSpec, ensure_topics
from tests.integration.conftest import Deployment, Worker, cli_output
from tests.integration.kafka_client import consume, produce

pytestmark = pytest.mark.integration

N_ITEMS, N_USERS, STEPS = 60, 40, 8
POLL_S = os.environ.get("TRAINER_TEST_MODEL_POLL_S", "1")
TINY = "--max-len 8 --dim 16 --layers 1 --heads 2 --dropout 0 --batch-size 32".split()
GOOD = [*TINY, "--lr", "0.01", "--epochs", "30", "--eval-every", "5", "--patience", "3"]
"""Learns the walks' next item."""
BAD = [*TINY, "--lr", "1e-6", "--epochs", "1", "--eval-every", "1", "--seed", "1"]
"""Barely moves from its random start."""


def _fill(dep: Deployment, catalog: list[Any]) -> None:
    """The catalog's first 60 items, and 40 users walking 8 steps through them in order (the
    next item is learnable), plus a record that does not decode and a resent event."""
    t = dep.topics
    specs = [TopicSpec(name, dep.partitions) for name in (*t.events, t.dlq, t.recommendations)]
    asyncio.run(ensure_topics(dep.bootstrap, [*specs, TopicSpec(t.items, dep.partitions, True)]))
    items = catalog[:N_ITEMS]
    produce(dep.bootstrap, [
        (t.items, i.item_id.encode(),
         json.dumps({"item_id": i.item_id, "title": i.title, "text": i.text}).encode())
        for i in items
    ])  # fmt: skip
    start = time.time() - 86_400.0
    events = [
        {"event_id": f"w{u}-{s}", "user_id": f"walker-{u}", "type": "click",
         "item_id": items[(7 * u + s) % N_ITEMS].item_id, "ts": start + 100.0 * s + u}
        for s in range(STEPS) for u in range(N_USERS)
    ]  # fmt: skip
    records = [(t.click, e["user_id"].encode(), json.dumps(e).encode()) for e in events]
    records += [(t.click, b"walker-0", b"not json"), records[0]]  # dead-lettered; a resend
    produce(dep.bootstrap, records)


def _cli(dep: Deployment, home: Path, *args: str) -> str:
    return cli_output(dep.start_cli(home, *args))


def _serving(worker: Worker) -> str | None:
    version: str | None = worker.get("/metrics.json")[1].get("sequence_model_version")
    return version


def _until_all_serve(workers: list[Worker], version: str, since: float) -> float:
    """Wait until every worker reports ``version``; the seconds from ``since`` to the last
    worker's swap, by the time its log gives the swap (``... serving from ...``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_serving(w) != version for w in workers):
        time.sleep(0.1)
    assert all(_serving(w) == version for w in workers), f"not {version}: {workers[0].tail()}"
    return max(_swapped_at(w, version) for w in workers) - since


def _swapped_at(worker: Worker, version: str) -> float:
    """When the worker's log says it swapped ``version`` in (the last time it did)."""
    lines = [line for line in worker.log.read_text(errors="replace").splitlines()
             if f"sequence model {version} serving from" in line]  # fmt: skip
    found = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", lines[-1])  # local time
    assert found is not None, lines[-1]
    return time.mktime(time.strptime(found[1], "%Y-%m-%d %H:%M:%S")) + int(found[2]) / 1e3


def _recommended_with(dep: Deployment, catalog: list[Any], version: str) -> bool:
    event = {"event_id": "after-promotion", "user_id": "walker-1", "type": "click",
             "item_id": catalog[3].item_id, "ts": time.time()}  # fmt: skip
    produce(dep.bootstrap, [(dep.topics.click, b"walker-1", json.dumps(event).encode())])

    def answered(records: list[Any]) -> bool:
        return any("after-promotion" in json.loads(r.value or b"{}")["event_ids"] for r in records)

    records = consume(dep.bootstrap, dep.topics.recommendations, answered, timeout_s=60)
    bodies = [json.loads(r.value or b"{}") for r in records]
    return any(b["model_version"].endswith(f"+{version}") for b in bodies
               if "after-promotion" in b["event_ids"])  # fmt: skip


def test_train_from_the_log_promote_a_better_model_every_worker_serves_it_roll_back(
    deployment: Deployment, catalog: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dep = deployment
    live = tmp_path / "models" / "sequence"
    monkeypatch.setenv("INTEREST_STREAM_SEQUENCE_MODEL_DIR", str(live))
    monkeypatch.setenv("INTEREST_STREAM_MODEL_POLL_S", POLL_S)
    _fill(dep, catalog)
    training = dep.start_cli(tmp_path / "cli", "train", "--from-kafka", "--out", str(live), *BAD)
    workers = [dep.start_worker("w1"), dep.start_worker("w2")]  # meanwhile
    out = cli_output(training)
    assert f"{N_USERS * STEPS + 2} records read" in out, out
    assert "1 that do not decode" in out and "1 repeated event ids" in out
    assert f"{N_ITEMS} items" in out
    weak = json.loads((live / "sequence.json").read_text(encoding="utf-8"))["version"]
    _until_all_serve(workers, weak, time.time())

    out = _cli(dep, tmp_path / "cli", "trainer", "--once", "--models", str(live),
               "--margin", "0.05", "--threads", "1", *GOOD)  # fmt: skip
    promoted = json.loads(decisions_log(live).read_text(encoding="utf-8").splitlines()[-1])
    assert promoted["promoted"] is True and promoted["serving"] == weak, out
    assert promoted["candidate_score"] >= 1.05 * promoted["serving_score"]
    assert promoted["data"]["rejected"] == 1 and promoted["users"] == N_USERS
    good = promoted["candidate"]
    delay = _until_all_serve(workers, good, promoted["promoted_at"])
    print(f"\npromotion -> both workers serving {good}: {delay:.2f} s (model poll {POLL_S} s)")
    assert all(w.proc.poll() is None for w in workers)  # no restart
    assert _recommended_with(dep, catalog, good)

    out = _cli(dep, tmp_path / "cli", "model", "--models", str(live), "rollback")
    assert f"from {good} to {weak}" in out
    rolled = json.loads(decisions_log(live).read_text(encoding="utf-8").splitlines()[-1])
    back = _until_all_serve(workers, weak, rolled["time"])
    print(f"rollback -> both workers serving {weak}: {back:.2f} s")
    page = workers[0].get("/metrics.json?history=0")[1]["dashboard_rows"]["decisions"]
    assert [what.split(" ")[0] for _, what in page[:2]] == ["rollback:", "promote"]
    assert all(w.proc.poll() is None for w in workers)


def test_the_log_is_read_to_its_true_end_and_from_since(
    deployment: Deployment, catalog: list[Any], tmp_path: Path
) -> None:
    """Four batches in one partition: Tansu reports the end as the last batch's base + 1, and
    reading still gets every record; ``--since`` keeps the records stamped from then on."""
    dep, t = deployment, deployment.topics
    specs = [TopicSpec(name, dep.partitions) for name in t.events]
    asyncio.run(ensure_topics(dep.bootstrap, [*specs, TopicSpec(t.items, dep.partitions, True)]))
    item = catalog[0]
    produce(dep.bootstrap, [(t.items, item.item_id.encode(), json.dumps(
        {"item_id": item.item_id, "title": item.title}).encode())])  # fmt: skip
    now = time.time()

    async def batches() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap)
        await producer.start()
        try:
            for batch in range(4):  # two stamped 2 h ago, two now; each flushed on its own
                stamp = int((now - 7200.0) * 1000) if batch < 2 else None
                for n in range(5):
                    body = {"event_id": f"b{batch}-{n}", "user_id": "u1", "item_id": item.item_id,
                            "ts": now - 3600.0 + 10 * batch + n}  # fmt: skip
                    await producer.send(t.click, json.dumps(body).encode(), key=b"u1",
                                        partition=0, timestamp_ms=stamp)  # fmt: skip
                await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap)
        await consumer.start()
        try:
            tp = TopicPartition(t.click, 0)
            reported: int = (await consumer.end_offsets([tp]))[tp]
            return reported
        finally:
            await consumer.stop()

    reported = asyncio.run(batches())
    settings = Settings(bootstrap=dep.bootstrap, partitions=dep.partitions, topics=t)
    whole = read_log(settings, tmp_path / "whole")
    assert (whole.records, whole.events, whole.ends[f"{t.click}/0"]) == (20, 20, 20)
    print(f"\nend offset reported {reported}, read up to {whole.ends[f'{t.click}/0']}")
    recent = read_log(settings, tmp_path / "recent", since=parse_since("1h"))
    assert (recent.events, recent.before_since) == (10, 10)
    ids = {e.event_id for e in read_events(recent.events_path)}
    assert ids == {f"b{batch}-{n}" for batch in (2, 3) for n in range(5)}
