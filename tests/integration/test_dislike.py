"""Negative signals in the stream: a dislike removes the item and moves its neighbours down."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders import TextEncoder
from tests.integration.conftest import Deployment
from tests.integration.kafka_client import Record, catalog_records, consume, produce

pytestmark = pytest.mark.integration

SCI_FI = ["50", "172", "181"]  # Star Wars, The Empire Strikes Back, Return of the Jedi


def list_after(dep: Deployment, user: str, event_id: str) -> list[str]:
    """The items of the recommendation message for ``user`` that folded in ``event_id``."""

    def answered(records: list[Record]) -> bool:
        return any(event_id in _body(r).get("event_ids", ()) for r in records
                   if r.key == user.encode())  # fmt: skip

    records = consume(dep.bootstrap, dep.topics.recommendations, answered, timeout_s=60)
    body = next(_body(r) for r in records if event_id in _body(r).get("event_ids", ()))
    return [item["item_id"] for item in body["items"]]


def _body(record: Record) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(record.value or b"{}")
    return body


def test_a_dislike_removes_the_item_and_moves_its_neighbours_down(
    deployment: Deployment, catalog: list[Any], model_dir: Path
) -> None:
    dep = deployment
    produce(dep.bootstrap, catalog_records(dep.topics.items, catalog))
    worker = dep.start_worker("w1")
    now = time.time() - 600
    clicks = [
        (dep.topics.click, b"fan", json.dumps(
            {"event_id": f"c{n}", "user_id": "fan", "item_id": item, "ts": now + n}).encode())
        for n, item in enumerate(SCI_FI)
    ]  # fmt: skip
    produce(dep.bootstrap, clicks)
    before = list_after(dep, "fan", f"c{len(SCI_FI) - 1}")
    disliked = before[0]
    dislike = {"event_id": "d1", "user_id": "fan", "item_id": disliked, "ts": now + 10}
    produce(dep.bootstrap, [(dep.topics.dislike, b"fan", json.dumps(dislike).encode())])
    after = list_after(dep, "fan", "d1")
    assert disliked not in after, worker.tail()

    encoder = TextEncoder.load(model_dir, provider="cpu")
    text = {i.item_id: i.text for i in catalog}
    vectors = encoder.encode([text[i] for i in before])
    closeness = vectors @ vectors[0]  # cosine to the disliked item (unit vectors)
    others = before[1:]
    near = [i for i, c in zip(others, closeness[1:], strict=True) if c >= np.median(closeness[1:])]
    rank_before = {item: n for n, item in enumerate(others)}
    kept = [i for i in after if i in rank_before] + [i for i in others if i not in after]
    rank_after = {item: n for n, item in enumerate(kept)}
    assert np.mean([rank_after[i] for i in near]) > np.mean([rank_before[i] for i in near])
    status, body = worker.get("/users/fan")
    assert status == 200 and body["events"] == len(SCI_FI) + 1
