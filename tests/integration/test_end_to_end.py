"""Events in through a foreign Kafka client; recommendations and dead letters out; recovery."""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from tests.integration.conftest import Deployment
from tests.integration.kafka_client import Record, consume, produce

pytestmark = pytest.mark.integration

N_USERS = 20


def good_events(
    dep: Deployment, catalog: list[Any], n: int, seed: int = 7
) -> list[tuple[str, bytes, bytes]]:
    rng = random.Random(seed)
    t = dep.topics
    out = []
    now = time.time() - 3600
    for i in range(n):
        user = f"user-{rng.randrange(N_USERS)}"
        item = rng.choice(catalog).item_id
        kind = rng.choice(["click", "click", "browse", "comment"])
        event: dict[str, Any] = {
            "event_id": f"ev-{i}",
            "user_id": user,
            "item_id": item,
            "ts": now + i,
        }
        if kind == "browse":
            event["dwell_ms"] = rng.randrange(0, 60_000)
        if kind == "comment":
            event["text"] = rng.choice(
                ["loved the space battles", "too slow and sad", "funny animated film for kids"]
            )
        topic = {"click": t.click, "browse": t.browse, "comment": t.comment}[kind]
        out.append((topic, user.encode(), json.dumps(event).encode()))
    return out


def bad_events(dep: Deployment) -> dict[str, tuple[str, bytes | None, bytes, str]]:
    """event_id -> (topic, key, raw value, expected words in the reason)."""
    t = dep.topics
    ok = {"user_id": "user-1", "item_id": "1", "ts": time.time() - 60}

    def ev(event_id: str, **fields: Any) -> bytes:
        body = {**ok, "event_id": event_id, **fields}
        return json.dumps({k: v for k, v in body.items() if v is not None}).encode()

    return {
        "bad-json": (t.click, b"user-1", b"{not json", "not JSON"),
        "bad-array": (t.click, b"user-1", b"[1, 2]", "JSON object"),
        "bad-no-user": (t.click, None, ev("bad-no-user", user_id=None), "missing field 'user_id'"),
        "bad-empty-user": (t.click, b"", ev("bad-empty-user", user_id=""), "'user_id' is empty"),
        "bad-long-user": (
            t.click,
            b"u" * 129,
            ev("bad-long-user", user_id="u" * 129),
            "at most 128",
        ),
        "bad-ts-type": (t.click, b"user-1", ev("bad-ts-type", ts=[1]), "'ts'"),
        "bad-ts-parse": (t.browse, b"user-1", ev("bad-ts-parse", ts="yesterday"), "ISO-8601"),
        "bad-ts-millis": (t.click, b"user-1", ev("bad-ts-millis", ts=time.time() * 1000), "future"),
        "bad-item": (t.click, b"user-1", ev("bad-item", item_id="no-such-item"), "unknown item_id"),
        "bad-item-type": (t.click, b"user-1", ev("bad-item-type", item_id=5), "must be a string"),
        "bad-type": (t.click, b"user-1", ev("bad-type", type="purchase"), "unknown event type"),
        "bad-dwell": (t.browse, b"user-1", ev("bad-dwell", dwell_ms=-5), "dwell_ms"),
        "bad-comment": (t.comment, b"user-1", ev("bad-comment"), "text"),
        "bad-key": (t.click, b"someone-else", ev("bad-key"), "key"),
    }


def _reason(record: Record) -> str:
    return record.headers.get("dlq.reason", b"").decode()


def test_every_event_becomes_a_recommendation_or_a_dead_letter(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    produce(
        dep.bootstrap,
        [
            (
                dep.topics.items,
                i.item_id.encode(),
                json.dumps({"item_id": i.item_id, "title": i.title, "text": i.text}).encode(),
            )
            for i in catalog
        ],
    )
    bad_item = b'{"item_id": "no-title"}'
    produce(dep.bootstrap, [(dep.topics.items, b"no-title", bad_item)])
    worker = dep.start_worker("w1")
    good = good_events(dep, catalog, 300)
    long_comment = {
        "event_id": "long-comment",
        "user_id": "user-3",
        "item_id": catalog[0].item_id,
        "ts": time.time() - 30,
        "text": "wonderful " * 5000,
    }
    good.append((dep.topics.comment, b"user-3", json.dumps(long_comment).encode()))
    bad = bad_events(dep)
    delivered = produce(dep.bootstrap, [*good, *((t, k, v) for t, k, v, _ in bad.values())])
    where = {
        json.loads(d.value)["event_id"]: d
        for d in delivered
        if d.value and d.value.startswith(b"{") and b"event_id" in d.value
    }

    want_good = {json.loads(v)["event_id"]: k.decode() for _, k, v in good}
    recs = consume(
        dep.bootstrap,
        dep.topics.recommendations,
        lambda rs: _covered(rs) >= set(want_good),
        timeout_s=90,
    )
    dlq = consume(dep.bootstrap, dep.topics.dlq, lambda rs: len(rs) > len(bad), timeout_s=30)

    seen: dict[str, str] = {}
    for rec in recs:
        body = json.loads(rec.value or b"{}")
        assert rec.key == body["user_id"].encode()
        assert len(body["items"]) == 10 and body["model_version"]
        assert all(i["reason"] for i in body["items"])
        for event_id in body["event_ids"]:
            seen[event_id] = body["user_id"]
    assert {e: seen.get(e) for e in want_good} == want_good, worker.tail()

    by_value = {r.value: r for r in dlq}
    assert len(dlq) == len(bad) + 1, [_reason(r) for r in dlq]
    item_letter = by_value[bad_item]
    assert "missing field 'title'" in _reason(item_letter)
    assert item_letter.headers["dlq.topic"].decode() == dep.topics.items
    for name, (topic, _key, value, words) in bad.items():
        record = by_value[value]
        assert words in _reason(record), (name, _reason(record))
        assert record.headers["dlq.topic"].decode() == topic
        if name in where:
            assert int(record.headers["dlq.offset"]) == where[name].offset
            assert int(record.headers["dlq.partition"]) == where[name].partition

    status, metrics = worker.get("/metrics.json")
    assert status == 200 and metrics["dead_letters"] == len(bad) + 1
    assert metrics["events_applied"] == len(want_good)
    assert metrics["wait_ms"]["p50"] >= 0 and metrics["batch_ms"]["p50"] > 0
    # every good event is answered by a recommendation the broker acked
    assert metrics["acked_ms"]["n"] == len(want_good) and metrics["acked_ms"]["p50"] > 0
    assert worker.get(f"/metrics.json?since={time.time() + 60}")[1]["acked_ms"] == {}
    status, error = worker.get("/metrics.json?since=yesterday")
    assert status == 400 and "since must be epoch seconds" in error["error"]


def _covered(records: list[Record]) -> set[str]:
    return {e for r in records for e in json.loads(r.value or b"{}").get("event_ids", [])}


def test_state_survives_kill_and_comes_back_from_the_changelog(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    produce(
        dep.bootstrap,
        [
            (
                dep.topics.items,
                i.item_id.encode(),
                json.dumps({"item_id": i.item_id, "title": i.title}).encode(),
            )
            for i in catalog
        ],
    )
    first = dep.start_worker("first")
    events = good_events(dep, catalog, 400, seed=11)
    produce(dep.bootstrap, events)
    want = {json.loads(v)["event_id"] for _, _, v in events}
    consume(dep.bootstrap, dep.topics.recommendations, lambda rs: _covered(rs) >= want, 90)
    per_user = Counter(json.loads(v)["user_id"] for _, _, v in events)
    before = {u: first.get(f"/users/{u}")[1] for u in per_user}
    assert {u: b["events"] for u, b in before.items()} == dict(per_user)
    time.sleep(1.5)  # let the worker commit its offsets and flush its changelog
    first.kill()

    # A new worker with an empty state folder: everything must come from the changelog.
    second = dep.start_worker("second")
    deadline = time.monotonic() + 30
    after: dict[str, Any] = {}
    while time.monotonic() < deadline:
        after = {u: second.get(f"/users/{u}")[1] for u in per_user}
        if all(a.get("events") == per_user[u] for u, a in after.items()):
            break
        time.sleep(0.5)
    assert {u: a.get("events") for u, a in after.items()} == dict(per_user), second.tail()
    assert {u: a["recent_events"] for u, a in after.items()} == {
        u: b["recent_events"] for u, b in before.items()
    }


def test_state_lives_in_the_partition_of_the_users_events_with_two_workers(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    produce(
        dep.bootstrap,
        [
            (
                dep.topics.items,
                i.item_id.encode(),
                json.dumps({"item_id": i.item_id, "title": i.title}).encode(),
            )
            for i in catalog
        ],
    )
    workers = [dep.start_worker("a"), dep.start_worker("b")]
    time.sleep(8)  # both in the group
    events = good_events(dep, catalog, 300, seed=5)
    delivered = produce(dep.bootstrap, events)
    event_partition: dict[bytes, set[int]] = defaultdict(set)
    for d in delivered:
        assert d.key is not None
        event_partition[d.key].add(d.partition)
    want = {json.loads(v)["event_id"] for _, _, v in events}
    consume(dep.bootstrap, dep.topics.recommendations, lambda rs: _covered(rs) >= want, 90)
    changelog = consume(
        dep.bootstrap, dep.changelog, lambda rs: {r.key for r in rs} >= set(event_partition), 30
    )
    state_partition: dict[bytes, set[int]] = defaultdict(set)
    for record in changelog:
        assert record.key is not None
        state_partition[record.key].add(record.partition)
    assert dict(state_partition) == dict(event_partition)
    per_user = Counter(json.loads(v)["user_id"] for _, _, v in events)
    for user, count in per_user.items():
        counts = [w.get(f"/users/{user}")[1].get("events", 0) for w in workers]
        assert max(counts) == count, (user, counts)
