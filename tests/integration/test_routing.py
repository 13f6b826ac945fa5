"""Any worker answers for any user (issue 20, item 2): two workers on one broker with 8
partitions; users produced by a librdkafka producer (CRC32 of the key) and by the project's own
producer (aiokafka, murmur2); ``/users/<id>`` and ``/inspect?user=<id>`` answer the same on both
workers, from the worker that holds the user; a user nobody holds gets the same trending list
from both, counted over all partitions."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest

from streams.contract import EventRecord
from streams.local.replay import replay_events
from streams.settings import Settings
from streams.worker.routing import crc32_partition, murmur2_partition
from streams.worker.runtime import prepare_topics
from tests.integration.conftest import Deployment, Worker
from tests.integration.kafka_client import Record, consume, produce

pytestmark = pytest.mark.integration

PARTITIONS = 8
EVENTS_EACH = 3


def _users(prefix: str, n: int) -> list[str]:
    """``n`` user ids whose murmur2 and CRC32 partitions differ: a worker that looked only
    where faust's own routing looks (murmur2) would miss every CRC32-produced one."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        user = f"{prefix}-{i}"
        key = user.encode()
        if murmur2_partition(key, PARTITIONS) != crc32_partition(key, PARTITIONS):
            out.append(user)
        i += 1
    return out


def _page(worker: Worker, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _answers(workers: list[Worker], users: dict[str, int], timeout_s: float = 45) -> list[Any]:
    """Every user's ``/users/<id>`` on every worker, once all of them are found with their
    event count (the group may still be settling when the events are in)."""
    deadline = time.monotonic() + timeout_s
    while True:
        bodies = [[w.get(f"/users/{u}") for w in workers] for u in users]
        if all(status == 200 and body.get("events") == users[u]
               for u, answers in zip(users, bodies, strict=True)
               for status, body in answers):  # fmt: skip
            return [[body for _, body in answers] for answers in bodies]
        assert time.monotonic() < deadline, (bodies, [w.tail() for w in workers])
        time.sleep(0.5)


def test_every_worker_answers_for_every_user_whatever_the_producers_hash(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    dep.partitions = PARTITIONS
    dep.extra_env["INTEREST_STREAM_TRENDING_HOP_S"] = "10"  # trending counts written every 1 s
    settings = Settings(bootstrap=dep.bootstrap, app_id=dep.app_id, topics=dep.topics,
                        partitions=PARTITIONS)  # fmt: skip
    prepare_topics(settings)  # before any record: the broker would make 4 partitions
    produce(dep.bootstrap, [
        (dep.topics.items, i.item_id.encode(),
         json.dumps({"item_id": i.item_id, "title": i.title}).encode())
        for i in catalog[:50]
    ])  # fmt: skip
    workers = [dep.start_worker("a"), dep.start_worker("b")]
    by_crc, by_murmur = _users("rd", 8), _users("ak", 8)
    now = time.time() - 60
    events = [
        (user, f"{user}-{n}", catalog[(i * 7 + n) % 50].item_id)
        for i, user in enumerate([*by_crc, *by_murmur]) for n in range(EVENTS_EACH)
    ]  # fmt: skip
    delivered = produce(dep.bootstrap, [
        (dep.topics.click, user.encode(), json.dumps(
            {"event_id": eid, "user_id": user, "item_id": item, "ts": now}).encode())
        for user, eid, item in events if user in by_crc
    ])  # fmt: skip
    assert {d.partition == crc32_partition(d.key or b"", PARTITIONS) for d in delivered} == {True}
    records = [EventRecord(eid, user, item, "click", now)
               for user, eid, item in events if user in by_murmur]  # fmt: skip
    asyncio.run(replay_events(settings, records, progress=False))
    clicks = consume(dep.bootstrap, dep.topics.click, lambda rs: len(rs) >= len(events),
                     timeout_s=20, partitions=PARTITIONS)  # fmt: skip
    assert {r.partition == murmur2_partition(r.key or b"", PARTITIONS)
            for r in clicks if (r.key or b"").startswith(b"ak-")} == {True}  # fmt: skip

    def covered(rs: list[Record]) -> bool:
        ids = {e for r in rs for e in json.loads(r.value or b"{}").get("event_ids", [])}
        return ids >= {eid for _, eid, _ in events}

    consume(dep.bootstrap, dep.topics.recommendations, covered, 60, partitions=PARTITIONS)
    users = dict(Counter(user for user, _, _ in events))
    started = time.monotonic()
    answers = _answers(workers, users)
    print(f"\nevery user found on both workers after {time.monotonic() - started:.1f} s")
    served: Counter[str] = Counter()
    for user, (a, b) in zip(users, answers, strict=True):
        assert a["served_by"] == b["served_by"], (user, a["served_by"], b["served_by"])
        assert (a["recent_events"], a["recommendations"]) == (b["recent_events"],
                                                               b["recommendations"])  # fmt: skip
        served[a["served_by"]] += 1
    assert len(served) == 2, served  # each worker holds some users and answers for the other's
    print(f"users by the worker that holds them: {dict(served)}")

    for user, count in users.items():
        for worker in workers:
            status, page = _page(worker, f"/inspect?user={user}")
            assert status == 200 and f"<td>events</td><td class=n>{count}</td>" in page, page
    # A user nobody holds: the trending list, the same on both workers, counted over every
    # partition (each worker writes the counts of its own, and reads the changelog whole).
    by_item = Counter(item for _, _, item in events)
    trending = [(item, float(n)) for item, n in
                sorted(by_item.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]  # fmt: skip
    for worker in workers:
        deadline = time.monotonic() + 15
        while True:
            status, body = worker.get("/users/nobody-at-all")
            got = [(r["item_id"], r["score"]) for r in body["recommendations"]]
            if got == trending or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 404 and body["found"] is False and got == trending, (got, trending)
        status, page = _page(worker, "/inspect?user=nobody-at-all")
        assert status == 404 and "Unknown user" in page and "Trending now" in page
