"""The acceptance check with kcat: click events in with kcat, recommendations out, read with kcat.

``.venv/bin/kcat`` is written by ``make setup`` (``scripts/setup.sh``): Debian's kcat 1.7.1 run
with the librdkafka 2.x bundled in the confluent-kafka wheel, because Debian's librdkafka 2.0.2
misreads the tagged fields of Tansu 0.6.0's ApiVersions v3 reply. The test fails (never skips)
when it is missing.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration

KCAT = Path(sys.executable).parent / "kcat"
USERS = ["kcat-alice", "kcat-bob", "kcat-carol", "kcat-dave"]
EVENTS_PER_USER = 3


def kcat_version() -> str:
    hint = (
        f"{KCAT} is missing or broken: `make setup` installs Debian's kcat (as root, with "
        "apt-get) and writes it, running kcat with the librdkafka of the confluent-kafka wheel"
    )
    if not KCAT.exists():
        pytest.fail(hint)
    run = subprocess.run([KCAT, "-V"], capture_output=True, text=True, timeout=10)
    if run.returncode != 0:
        pytest.fail(f"{hint}\n{run.stdout}{run.stderr}")
    return run.stdout.strip()


def kcat_produce(bootstrap: str, topic: str, lines: list[tuple[str, dict[str, Any]]]) -> None:
    """One message per line, ``key:json``; kcat splits at the first ``:``, so keys have none."""
    assert all(":" not in key for key, _ in lines)
    data = "".join(f"{key}:{json.dumps(value)}\n" for key, value in lines)
    run = subprocess.run(
        [KCAT, "-b", bootstrap, "-P", "-t", topic, "-K", ":", "-X", "message.timeout.ms=20000"],
        input=data,
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert run.returncode == 0 and "ERROR" not in run.stderr, run.stderr


class KcatTail:
    """``kcat -C -J`` on a topic from the beginning, its messages collected by a thread."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.proc = subprocess.Popen(
            [KCAT, "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-J", "-u"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def messages(self, until: Any, timeout_s: float) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not until(got):
            try:
                got.append(json.loads(self.lines.get(timeout=0.2)))
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        return got

    def close(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return err


def test_click_events_produced_with_kcat_come_back_as_recommendations(
    deployment: Deployment, catalog: list[Any]
) -> None:
    version = kcat_version()
    dep = deployment
    kcat_produce(
        dep.bootstrap,
        dep.topics.items,
        [(i.item_id, {"item_id": i.item_id, "title": i.title, "text": i.text}) for i in catalog],
    )
    worker = dep.start_worker("kcat")

    now = time.time() - 60
    want: dict[str, set[str]] = defaultdict(set)
    clicks = []
    for n in range(EVENTS_PER_USER):
        for u, user in enumerate(USERS):
            event_id = f"kcat-{user}-{n}"
            item = catalog[(7 * u + 3 * n) % len(catalog)].item_id
            event = {
                "event_id": event_id,
                "user_id": user,
                "item_id": item,
                "type": "click",
                "ts": now + n,
            }
            clicks.append((user, event))
            want[user].add(event_id)
    kcat_produce(dep.bootstrap, dep.topics.click, clicks)

    def covered(messages: list[dict[str, Any]]) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = defaultdict(set)
        for m in messages:
            body = json.loads(m["payload"])
            seen[body["user_id"]].update(body["event_ids"])
        return seen

    def done(messages: list[dict[str, Any]]) -> bool:
        seen = covered(messages)
        return all(want[u] <= seen[u] for u in USERS)

    tail = KcatTail(dep.bootstrap, dep.topics.recommendations)
    try:
        messages = tail.messages(done, timeout_s=30)
    finally:
        stderr = tail.close()
    seen = covered(messages)
    context = f"{version}\nkcat stderr:\n{stderr}\nworker log:\n{worker.tail()}"
    assert {u: want[u] <= seen[u] for u in USERS} == dict.fromkeys(USERS, True), (
        {u: sorted(seen[u]) for u in USERS},
        context,
    )
    catalog_ids = {i.item_id for i in catalog}
    for m in messages:
        body = json.loads(m["payload"])
        assert m["key"] == body["user_id"], m
        assert body["items"] and {i["item_id"] for i in body["items"]} <= catalog_ids, body
        assert set(body["event_ids"]) <= want[body["user_id"]], body

    status, metrics = worker.get("/metrics.json")
    assert status == 200 and metrics["dead_letters"] == 0, metrics
    assert metrics["events_applied"] == len(USERS) * EVENTS_PER_USER, metrics
