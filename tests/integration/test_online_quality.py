"""A replay whose answer is known checks the online HR: events whose item was recommended just
before count as hits at their rank, others do not, on ``/metrics.json`` and ``/metrics``."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Deployment, Worker
from tests.integration.kafka_client import consume, produce

pytestmark = pytest.mark.integration

USER = "online-user"


def _scrape(worker: Worker) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


class Replay:
    """Sends one click at a time and waits for the recommendation that answers it."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        self.n = 0

    def click(self, user: str, item_id: str, event_id: str | None = None) -> dict[str, Any]:
        """Click ``item_id`` (again with ``event_id``: a duplicate); the list sent for it."""
        answers = 0
        if event_id is None:
            self.n += 1
            event_id = f"oq-{self.n}"
        else:  # counted before it is sent: its answer must be a new one
            answers = sum(1 for b in self.answers() if event_id in b["event_ids"])
        body = {"event_id": event_id, "user_id": user, "item_id": item_id, "ts": time.time()}
        produce(self.dep.bootstrap, [(self.dep.topics.click, user.encode(),
                                      json.dumps(body).encode())])  # fmt: skip

        def answered(records: list[Any]) -> bool:
            found = [json.loads(r.value) for r in records if r.value]
            return sum(1 for b in found if event_id in b["event_ids"]) > answers

        records = consume(self.dep.bootstrap, self.dep.topics.recommendations, answered, 60)
        bodies = [json.loads(r.value) for r in records if r.value]
        mine = [b for b in bodies if event_id in b["event_ids"]]
        assert len(mine) > answers, f"no recommendation answered {event_id}"
        return mine[-1]

    def answers(self) -> list[dict[str, Any]]:
        records = consume(self.dep.bootstrap, self.dep.topics.recommendations,
                          lambda rs: False, timeout_s=1.0)  # fmt: skip
        return [json.loads(r.value) for r in records if r.value]


def test_recommended_items_acted_on_are_hits_at_their_rank_and_others_misses(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    produce(dep.bootstrap, [
        (dep.topics.items, i.item_id.encode(),
         json.dumps({"item_id": i.item_id, "title": i.title, "text": i.text}).encode())
        for i in catalog])  # fmt: skip
    worker = dep.start_worker("w1")
    replay = Replay(dep)
    every = [i.item_id for i in catalog]

    def items(answer: dict[str, Any]) -> list[str]:
        listed = [it["item_id"] for it in answer["items"]]
        assert len(listed) == 10, answer
        return listed

    def elsewhere(listed: list[str], clicked: set[str]) -> str:
        return next(i for i in every if i not in listed and i not in clicked)

    clicked = {every[0]}
    listed = items(replay.click(USER, every[0]))  # no list known yet: unscored
    version = replay.click("someone-else", every[1])["model_version"]  # unscored too
    expected_rr = 0.0
    # rank 3: a hit; the same event again: a duplicate, not scored; then a miss; rank 1; rank 10
    for step, rank in enumerate((3, None, 1, 10, None)):
        item = listed[rank - 1] if rank is not None else elsewhere(listed, clicked)
        clicked.add(item)
        answer = replay.click(USER, item)
        assert answer["model_version"] == version
        if step == 0:
            replay.click(USER, item, event_id=f"oq-{replay.n}")  # its duplicate
        expected_rr += 1.0 / rank if rank is not None else 0.0
        listed = items(answer)
        assert item not in listed  # a seen item leaves the list: the next events are new

    status, body = worker.get("/metrics.json")
    assert status == 200
    online = body["online"]
    assert online["unscored"] == 2 and online["users_remembered"] == 2
    figures = online["models"][version]
    assert (figures["scored"], figures["hits"]) == (5, 3)
    assert figures["hr"] == 0.6 and figures["mrr"] == round(expected_rr / 5, 4)
    assert figures["last_10m"] == {
        "scored": 5, "hits": 3, "hr": 0.6, "mrr": round(expected_rr / 5, 4)}  # fmt: skip

    metrics = _scrape(worker)
    labels = (("k", "10"), ("model_version", version))
    assert metrics["interest_stream_online_scored_events_total"] == {labels: 5.0}
    assert metrics["interest_stream_online_hits_total"] == {labels: 3.0}
    rr = metrics["interest_stream_online_reciprocal_rank_total"][labels]
    assert rr == pytest.approx(1 / 3 + 1 + 1 / 10)
    assert metrics["interest_stream_online_unscored_events_total"] == {(): 2.0}
    hr_10m = metrics["interest_stream_online_hit_rate"][(*labels, ("window", "10m"))]
    assert hr_10m == pytest.approx(0.6)
    mrr_10m = metrics["interest_stream_online_mrr"][(*labels, ("window", "10m"))]
    assert mrr_10m == pytest.approx((1 / 3 + 1 + 1 / 10) / 5)
