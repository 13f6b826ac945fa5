"""``interest-stream forget``: the user's state is gone from the worker, from the changelog (a new
worker on an empty state folder does not bring it back) and from the recommendations topic;
without the workers' token nothing is deleted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.integration.conftest import REPO, Deployment, Worker, free_port
from tests.integration.kafka_client import Record, consume, produce

pytestmark = pytest.mark.integration

TOKEN = "it-admin-token"  # noqa: S105 (a test's token)
GONE, KEPT = "forget-me", "keep-me"


def _forget(dep: Deployment, user: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**dep.env(dep.tmp / "cli", free_port()), "INTEREST_STREAM_ADMIN_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "forget", user],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _wait_status(
    worker: Worker, user: str, status: int, timeout_s: float = 30, events: int | None = None
) -> dict[str, Any]:
    """``/users/{user}`` once it answers ``status`` (and holds ``events`` events when given)."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, body = worker.get(f"/users/{user}")
        if code == status and (events is None or body.get("events") == events):
            return dict(body)
        assert time.monotonic() < deadline, (user, code, body, worker.tail())
        time.sleep(0.1)


def _events(dep: Deployment, catalog: list[Any]) -> list[tuple[str, bytes, bytes]]:
    now = time.time() - 600
    out = []
    for user in (GONE, KEPT):
        for i in range(6):
            event = {"event_id": f"{user}-{i}", "user_id": user, "item_id": catalog[i].item_id,
                     "ts": now + i}  # fmt: skip
            out.append((dep.topics.click, user.encode(), json.dumps(event).encode()))
    return out


def test_a_forgotten_user_is_gone_and_stays_gone_after_a_restart_from_the_changelog(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    dep.extra_env["INTEREST_STREAM_ADMIN_TOKEN"] = TOKEN
    produce(dep.bootstrap, [
        (dep.topics.items, i.item_id.encode(),
         json.dumps({"item_id": i.item_id, "title": i.title}).encode())
        for i in catalog[:50]
    ])  # fmt: skip
    first = dep.start_worker("first")
    produce(dep.bootstrap, _events(dep, catalog))
    _wait_status(first, GONE, 200, events=6)
    kept_before = _wait_status(first, KEPT, 200, events=6)

    # No token: the CLI refuses. A wrong token: published, refused by the worker, dead-lettered.
    refused = _forget(dep, GONE, "")
    assert refused.returncode == 2 and "no admin token" in refused.stderr, refused.stderr
    wrong = _forget(dep, GONE, "not-the-token")
    assert wrong.returncode == 0, wrong.stderr
    letters = consume(dep.bootstrap, dep.topics.dlq, lambda rs: len(rs) >= 1, timeout_s=20)
    assert [r.headers["dlq.reason"] for r in letters] == [
        b"control message refused: wrong or missing token"
    ]
    assert letters[0].headers["dlq.topic"].decode() == dep.topics.control
    _wait_status(first, GONE, 200, timeout_s=0, events=6)

    asked = time.monotonic()
    done = _forget(dep, GONE, TOKEN)
    assert done.returncode == 0, done.stderr
    _wait_status(first, GONE, 404)
    print(f"\nforget -> 404: {time.monotonic() - asked:.2f} s (CLI start-up included)")
    _wait_status(first, KEPT, 200, timeout_s=0, events=6)
    metrics = first.get("/metrics.json")[1]
    assert (metrics["forgets"], metrics["states_forgotten"]) == (1, 1)

    def tombstoned(records: list[Record]) -> bool:
        return any(r.key == GONE.encode() and r.value is None for r in records)

    recs = consume(dep.bootstrap, dep.topics.recommendations, tombstoned, timeout_s=20)
    last = {r.key: r.value for r in sorted(recs, key=lambda r: (r.partition, r.offset))}
    assert last[GONE.encode()] is None and last[KEPT.encode()] is not None
    changelog = consume(dep.bootstrap, dep.changelog, tombstoned, timeout_s=20)
    assert tombstoned(changelog)

    time.sleep(1.5)  # let the worker commit and flush
    first.stop()
    second = dep.start_worker("second")  # an empty state folder: the table comes from the changelog
    kept_after = _wait_status(second, KEPT, 200, events=6)
    assert kept_after["recent_events"] == kept_before["recent_events"]
    _wait_status(second, GONE, 404, timeout_s=0)
    time.sleep(1.0)  # the new worker's sweep of the control topic has run: still one dead letter
    assert len(consume(dep.bootstrap, dep.topics.dlq, lambda rs: False, timeout_s=2)) == 1
    assert second.get("/metrics.json")[1]["forgets"] == 0  # read at start-up: swept, not counted
