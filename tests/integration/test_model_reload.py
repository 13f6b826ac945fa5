"""Hot reload of the sequence Transformer in a running worker: swap in, swap again, reject."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders import TextEncoder
from encoders.runtime.sequence import CARD_FILE, ITEMS_FILE
from streams.worker.long_term import publish_model
from tests.integration.conftest import Deployment, Worker
from tests.integration.kafka_client import consume, produce

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sequence_dir(
    model_dir: Path, catalog: list[Any], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny sequence model (1 epoch) on walks over the test catalog, with the worker's own
    text encoder's vectors, so the worker can align it with its item index."""
    from encoders.build.sequence_data import TrainConfig, TrainingData
    from encoders.build.sequence_export import export_sequence_model, train_sequence_model
    from encoders.runtime.sequence import SequenceEvent

    encoder = TextEncoder.load(model_dir, provider="cpu", intra_op_threads=1)
    known = [item.item_id for item in catalog[:150]]  # the other 50 are new to the model
    vectors = encoder.encode([item.text for item in catalog[:150]])
    walks = [
        tuple(
            SequenceEvent(known[(7 * u + 3 * n) % 150], "click", 1e9 + 600.0 * n) for n in range(6)
        )  # fmt: skip
        for u in range(60)
    ]
    data = TrainingData(tuple(known), vectors, tuple(w[:-1] for w in walks),
                        tuple((w[:-1], w[-1].item_id) for w in walks))  # fmt: skip
    config = TrainConfig(max_len=8, dim=16, layers=1, heads=2, epochs=1, eval_every=1, seed=0)
    out = tmp_path_factory.mktemp("reload") / "model"
    export_sequence_model(train_sequence_model(data, config), out,
                          card={"data": {"text_encoder": encoder.model_version}})  # fmt: skip
    return out


def _variant(source: Path, target: Path, version: str, *, nan_items: bool = False) -> Path:
    """A copy under another version; ``nan_items``: a diverged model, published whole (the
    card's digests name the NaN items, so only the content check can catch it)."""
    shutil.copytree(source, target)
    card = json.loads((target / CARD_FILE).read_text(encoding="utf-8"))
    card["version"] = version
    if nan_items:
        items = np.load(target / ITEMS_FILE)
        items[0] = np.nan
        np.save(target / ITEMS_FILE, items)
        digest = hashlib.sha256((target / ITEMS_FILE).read_bytes()).hexdigest()
        card["sha256_files"][ITEMS_FILE] = digest
    (target / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    return target


def _recommend(dep: Deployment, catalog: list[Any], n: int) -> dict[str, Any]:
    """Send one click and return the recommendation message that folds it in."""
    event_id = f"reload-{n}"
    event = {"event_id": event_id, "user_id": "user-r", "item_id": catalog[n].item_id,
             "ts": time.time() - 100 + n}  # fmt: skip
    produce(dep.bootstrap, [(dep.topics.click, b"user-r", json.dumps(event).encode())])

    def has(records: list[Any]) -> bool:
        return any(event_id in json.loads(r.value or b"{}")["event_ids"] for r in records)

    records = consume(dep.bootstrap, dep.topics.recommendations, has, timeout_s=60)
    bodies = [json.loads(r.value or b"{}") for r in records]
    matching = [b for b in bodies if event_id in b["event_ids"]]
    assert matching, f"no recommendation for {event_id}"
    return matching[-1]


def _wait_metrics(worker: Worker, key: str, value: Any, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    metrics: dict[str, Any] = {}
    while time.monotonic() < deadline:
        metrics = worker.get("/metrics.json")[1]
        if metrics.get(key) == value:
            return metrics
        time.sleep(0.3)
    raise AssertionError(f"/metrics.json {key} never became {value!r}: {metrics}\n{worker.tail()}")


def test_a_new_model_is_served_by_the_next_batch_and_a_broken_one_is_refused(
    deployment: Deployment,
    catalog: list[Any],
    sequence_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dep = deployment
    live = tmp_path / "live-model"
    monkeypatch.setenv("INTEREST_STREAM_SEQUENCE_MODEL_DIR", str(live))
    monkeypatch.setenv("INTEREST_STREAM_MODEL_POLL_S", "0.5")
    produce(dep.bootstrap, [
        (dep.topics.items, i.item_id.encode(),
         json.dumps({"item_id": i.item_id, "title": i.title, "text": i.text}).encode())
        for i in catalog
    ])  # fmt: skip
    worker = dep.start_worker("reload")
    metrics = worker.get("/metrics.json")[1]
    assert metrics["sequence_model_version"] is None
    assert metrics["ranking"].startswith("short-term only")
    assert metrics["candidates"] == "faiss IVF-PQ (approximate, CPU) from 20,000 items"
    assert metrics["candidate_failures"] == 0
    text_version = _recommend(dep, catalog, 0)["model_version"]
    assert "+" not in text_version

    first = _variant(sequence_dir, tmp_path / "v1", "seq-first")
    publish_model(first, live)
    _wait_metrics(worker, "sequence_model_version", "seq-first")
    body = _recommend(dep, catalog, 1)
    assert body["model_version"] == f"{text_version}+seq-first"
    assert len(body["items"]) == 10 and all(i["reason"] for i in body["items"])

    publish_model(_variant(sequence_dir, tmp_path / "v2", "seq-second"), live)
    metrics = _wait_metrics(worker, "sequence_model_version", "seq-second")
    assert metrics["model_reloads"] == 1
    assert _recommend(dep, catalog, 2)["model_version"] == f"{text_version}+seq-second"

    publish_model(_variant(sequence_dir, tmp_path / "v3", "seq-broken", nan_items=True), live)
    metrics = _wait_metrics(worker, "model_rejects", 1)
    assert "NaN" in metrics["model_last_reject"]
    assert metrics["sequence_model_version"] == "seq-second"
    assert _recommend(dep, catalog, 3)["model_version"] == f"{text_version}+seq-second"
    state = worker.get("/users/user-r")[1]
    assert state["events"] == 4 and state["long_term_version"] == "seq-second"
    assert "rejected" in worker.log.read_text(errors="replace")
