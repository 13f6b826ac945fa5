"""A crashed agent stops the worker (non-zero exit) instead of leaving it up and idle."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO, Deployment, free_port
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration


def test_a_crashing_agent_stops_the_worker_with_a_failure_code(deployment: Deployment) -> None:
    dep = deployment
    home = dep.tmp / "broken"
    log = dep.tmp / "broken.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "tests/integration/broken_worker.py"],
            env={**dep.env(home, free_port()), "PYTHONPATH": str(REPO)},
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        produce(dep.bootstrap, [(dep.topics.items, b"1", b'{"item_id": "1", "title": "x"}')])
        event = {"event_id": "e1", "user_id": "u1", "item_id": "1", "ts": time.time()}
        produce(dep.bootstrap, [(dep.topics.click, b"u1", json.dumps(event).encode())])
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert code != 0, text[-3000:]
    assert "the model exploded" in text
