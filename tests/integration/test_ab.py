"""A/B in the stream (issue 19, item 4), with a real broker and two real workers of one group.

Variant A serves no sequence model (short-term only), variant B a tiny one trained from the log
(``train --from-kafka``, one epoch: it only has to differ), hot-reloaded from
``INTEREST_STREAM_AB_MODEL_DIR``. Every recommendation message names its variant and the model
version that ranked it; each user always gets the variant of their id's hash, from either
worker and after one worker restarts; both variants' figures are on each worker's ``/metrics``;
``interest-stream ab report`` prints both variants and B - A with its interval.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from streams.worker.ab import Split
from streams.worker.topics import TopicSpec, ensure_topics
from tests.integration.conftest import Deployment, Worker, cli_output
from tests.integration.kafka_client import consume, produce

pytestmark = pytest.mark.integration

N_ITEMS, N_USERS, STEPS = 40, 32, 4
SPLIT = Split(0.5, salt="it-ab")
TINY = ("--max-len 8 --dim 16 --layers 1 --heads 2 --dropout 0 --batch-size 32 --lr 0.01 "
        "--epochs 1 --eval-every 1").split()  # fmt: skip


def _user(n: int) -> str:
    return f"ab-user-{n}"


def _event(catalog: list[Any], n: int, step: int, tag: str, ts: float) -> dict[str, Any]:
    item = catalog[(5 * n + step) % N_ITEMS].item_id
    return {"event_id": f"{tag}-{n}-{step}", "user_id": _user(n), "type": "click",
            "item_id": item, "ts": ts}  # fmt: skip


def _fill(dep: Deployment, catalog: list[Any]) -> None:
    """The topics, the catalog's first 40 items and each user's first walk (training data)."""
    t = dep.topics
    specs = [TopicSpec(name, dep.partitions) for name in (*t.events, t.dlq, t.recommendations)]
    asyncio.run(ensure_topics(dep.bootstrap, [*specs, TopicSpec(t.items, dep.partitions, True)]))
    produce(dep.bootstrap, [
        (t.items, i.item_id.encode(),
         json.dumps({"item_id": i.item_id, "title": i.title, "text": i.text}).encode())
        for i in catalog[:N_ITEMS]
    ])  # fmt: skip
    start = time.time() - 86_400.0
    events = [_event(catalog, n, s, "walk", start + 100.0 * s + n)
              for s in range(STEPS) for n in range(N_USERS)]  # fmt: skip
    produce(dep.bootstrap, [(t.click, e["user_id"].encode(), json.dumps(e).encode())
                            for e in events])  # fmt: skip


def _round(dep: Deployment, catalog: list[Any], tag: str) -> list[dict[str, Any]]:
    """One event of every user; the recommendation messages that answer them."""
    now = time.time()
    events = [_event(catalog, n, STEPS, tag, now) for n in range(N_USERS)]
    produce(dep.bootstrap, [(dep.topics.click, e["user_id"].encode(), json.dumps(e).encode())
                            for e in events])  # fmt: skip
    wanted = {e["event_id"] for e in events}

    def bodies(records: list[Any]) -> list[dict[str, Any]]:
        found = [json.loads(r.value or b"{}") for r in records]
        return [b for b in found if wanted & set(b.get("event_ids", ()))]

    def answered(records: list[Any]) -> bool:
        return wanted <= {e for b in bodies(records) for e in b["event_ids"]}

    records = consume(dep.bootstrap, dep.topics.recommendations, answered, timeout_s=60)
    assert answered(records), f"{len(bodies(records))} of {N_USERS} answered"
    return bodies(records)


def _prometheus(worker: Worker) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=10) as r:
        text: str = r.read().decode()
        return text


def _until_b_serves(workers: list[Worker], version: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(w.get("/metrics.json")[1].get("ab_sequence_model_version") == version
               for w in workers):  # fmt: skip
            return
        time.sleep(0.2)
    raise AssertionError(f"B does not serve {version}:\n{workers[0].tail()}")


def test_two_variants_split_by_user_across_workers_and_restarts(
    deployment: Deployment, catalog: list[Any], tmp_path: Path
) -> None:
    dep = deployment
    b_dir = tmp_path / "models" / "ab"
    dep.extra_env.update({
        "INTEREST_STREAM_SEQUENCE_MODEL_DIR": str(tmp_path / "models" / "sequence"),  # none: A
        "INTEREST_STREAM_AB_MODEL_DIR": str(b_dir), "INTEREST_STREAM_AB_SHARE": "0.5",
        "INTEREST_STREAM_AB_SALT": SPLIT.salt, "INTEREST_STREAM_MODEL_POLL_S": "1",
    })  # fmt: skip
    _fill(dep, catalog)
    training = dep.start_cli(tmp_path / "cli", "train", "--from-kafka", "--out", str(b_dir), *TINY)
    workers = [dep.start_worker("w1"), dep.start_worker("w2")]  # meanwhile
    cli_output(training)
    b_version = json.loads((b_dir / "sequence.json").read_text(encoding="utf-8"))["version"]
    _until_b_serves(workers, b_version)
    expected = {_user(n): SPLIT.variant(_user(n)) for n in range(N_USERS)}
    assert set(expected.values()) == {"A", "B"}

    seen: dict[str, set[str]] = defaultdict(set)

    def check(bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            variant, version = body["variant"], body["model_version"]
            assert variant == expected[body["user_id"]], body
            assert version.endswith(f"+{b_version}") == (variant == "B"), body
            seen[body["user_id"]].add(variant)

    check(_round(dep, catalog, "r1"))
    check(_round(dep, catalog, "r2"))  # scored against r1's lists, on each user's worker
    for worker in workers:
        text = _prometheus(worker)
        for variant in ("A", "B"):
            assert f'interest_stream_ab_recommendations_total{{variant="{variant}"}}' in text
            assert f'interest_stream_ab_scored_events_total{{k="10",variant="{variant}"}}' in text
            assert f'interest_stream_ab_latency_seconds_count{{variant="{variant}"}}' in text
        ab = worker.get("/metrics.json")[1]["ab"]
        assert ab["enabled"] and ab["variants"]["B"]["model_version"].endswith(b_version)

    workers[0].stop()  # a clean stop (leaves the group), then the same worker again
    workers[0] = dep.start_worker("w1", tmp_path / "w1")
    check(_round(dep, catalog, "r3"))
    assert all(len(variants) == 1 for variants in seen.values())
    assert set(seen) == set(expected)

    out = cli_output(dep.start_cli(tmp_path / "cli", "ab", "report", "--resamples", "500"))
    rows = [line.split() for line in out.splitlines()]
    lines = {r[0]: r for r in rows if len(r) > 4 and r[0] in ("A", "B") and r[1] != "-"}
    for variant in ("A", "B"):
        users = sum(v == variant for v in expected.values())
        assert lines[variant][1] == str(users), out  # every user scored in their variant
    assert "B - A HR@10: " in out and "95 % CI" in out, out
    print(f"\n{out}")
