"""The operator's view of a real worker with traffic: Prometheus ``/metrics`` moving with the
events, the dashboard's charts and the user inspector as headless Chromium renders them, and
hostile requests answered with a 4xx and no traceback in the log.

Chromium is installed by ``make setup`` (``scripts/setup.sh``: Debian's ``chromium``); a machine
without it fails this test, saying how to install it, rather than skipping it.
Set ``DASHBOARD_SCREENSHOT=<path.png>`` to keep the dashboard's screenshot (docs/dashboard.png).
"""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Deployment, Worker
from tests.integration.kafka_client import catalog_records, produce
from tests.unit.streams.worker.test_prometheus import one, samples

pytestmark = pytest.mark.integration

USERS = [f"viewer-{i}" for i in range(6)]
N_EVENTS = 120


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser"
    )
    assert found, (
        "headless Chromium is needed to check the dashboard as a person sees it: "
        "`make setup` installs it (apt-get install chromium), or set CHROMIUM=<binary>"
    )
    return found


def _browser(url: str, tmp: Path, *args: str) -> str:
    """The DOM of ``url`` after its scripts ran for a few seconds of virtual time."""
    done = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=6000",
         "--window-size=1280,1500", *args, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Elements(html.parser.HTMLParser):
    """Every start tag's attributes, and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(dom: str) -> _Elements:
    parsed = _Elements()
    parsed.feed(dom)
    return parsed


def _scrape(worker: Worker) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed: sample name -> {labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return samples(r.read().decode())


def _events(dep: Deployment, catalog: list[Any]) -> list[tuple[str, bytes, bytes]]:
    now = time.time() - 600
    out = []
    for i in range(N_EVENTS):
        user = USERS[i % len(USERS)]
        event = {"event_id": f"view-{i}", "user_id": user,
                 "item_id": catalog[(i * 7) % len(catalog)].item_id, "ts": now + i}  # fmt: skip
        topic = dep.topics.click if i % 3 else dep.topics.browse
        out.append((topic, user.encode(), json.dumps(event).encode()))
    bad = json.dumps({"event_id": "bad", "user_id": USERS[0], "item_id": "no-such", "ts": now})
    out += [(dep.topics.click, USERS[0].encode(), bad.encode()),
            (dep.topics.click, USERS[0].encode(), b"{not json")]  # fmt: skip
    return out


def _wait_json(worker: Worker, ok: Any, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = worker.get("/metrics.json")
        if status == 200 and ok(body):
            return dict(body)
        assert time.monotonic() < deadline, (body, worker.tail())
        time.sleep(0.3)


def _raw(worker: Worker, request: bytes) -> int:
    """Send ``request`` as is; the status code answered."""
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as sock:
        sock.sendall(request)
        head = sock.recv(64)
    return int(head.split(b" ")[1])


def test_metrics_dashboard_and_inspector_show_a_worker_with_traffic(
    deployment: Deployment, catalog: list[Any], tmp_path: Path
) -> None:
    dep = deployment
    produce(dep.bootstrap, catalog_records(dep.topics.items, catalog, text=False))
    worker = dep.start_worker("w1")
    before = _scrape(worker)
    assert one(before, "interest_stream_events_in_total") == 0
    assert one(before, "interest_stream_recommendation_latency_seconds_count") == 0

    events = _events(dep, catalog)
    for start in range(0, len(events), 40):  # in bursts over several of the 2 s samples
        produce(dep.bootstrap, events[start : start + 40])
        time.sleep(2.2)
    body = _wait_json(worker, lambda m: m["events_applied"] == N_EVENTS and m["dead_letters"] == 2)
    body = _wait_json(worker, lambda m: m["table_users"] == len(USERS)
                      and sum(m["consumer_lag"].values()) == 0)  # fmt: skip
    assert body["partitions_owned"] == dep.partitions

    after = _scrape(worker)
    assert one(after, "interest_stream_events_in_total") == N_EVENTS + 2  # with the 2 bad
    assert one(after, "interest_stream_events_applied_total") == N_EVENTS
    assert one(after, "interest_stream_recommendations_total") == body["recommendations_out"] > 0
    dead = after["interest_stream_dead_letters_total"]
    assert sum(dead.values()) == 2 and (("reason", "unknown item_id"),) in dead
    batches = one(after, "interest_stream_batches_total")
    assert one(after, "interest_stream_batch_size_count") == batches > 0
    assert one(after, "interest_stream_batch_size_sum") == N_EVENTS + 2
    acked = after["interest_stream_broker_ack_latency_seconds_bucket"]
    assert acked[(("le", "+Inf"),)] == N_EVENTS and one(
        after, "interest_stream_broker_ack_latency_seconds_sum") > 0  # fmt: skip
    for name in ("event_wait", "batch_duration", "recommendation_latency"):
        assert one(after, f"interest_stream_{name}_seconds_count") > 0, name
    lag = after["interest_stream_consumer_lag"]
    topics = {dict(labels)["topic"] for labels in lag}
    assert topics == set(dep.topics.events) and set(lag.values()) == {0.0}
    assert len(lag) == len(dep.topics.events) * dep.partitions
    assert one(after, "interest_stream_partitions_owned") == dep.partitions
    assert one(after, "interest_stream_table_users") == len(USERS)
    assert one(after, "interest_stream_items") == len(catalog)
    (info,) = after["interest_stream_model_info"]
    assert dict(info)["provider"] == body["provider"] and dict(info)["model_version"]
    assert one(after, "process_resident_memory_bytes") > 0

    _dashboard_draws_the_traffic(worker, tmp_path)
    _inspector_shows_the_user(worker, tmp_path, catalog)
    _hostile_requests_get_a_4xx_and_no_traceback(worker)


def _dashboard_draws_the_traffic(worker: Worker, tmp: Path) -> None:
    page = _parse(_browser(f"http://127.0.0.1:{worker.port}/dashboard", tmp, "--dump-dom"))
    charts = {a["id"]: a for tag, a in page.tags if tag == "svg" and "id" in a}
    assert set(charts) >= {f"chart-{c}" for c in (
        "events", "recommendations", "dead_letters", "latency", "lag", "batch_size")}  # fmt: skip
    lines = {a["data-series"]: a for tag, a in page.tags if tag == "polyline"}
    for series in ("in", "applied", "sent", "p50", "p99", "mean", "unknown item_id"):
        assert float(lines[series]["data-max"]) > 0, (series, lines.get(series))
        assert int(lines[series]["data-points"]) >= 1, series
    assert int(lines["in"]["data-points"]) >= 2  # a line, not a dot: two samples or more
    assert "all partitions" in lines  # the lag series is drawn (0 once caught up)
    assert "serving" in page.text
    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp / "dashboard.png").resolve()
    _browser(f"http://127.0.0.1:{worker.port}/dashboard", tmp, f"--screenshot={shot}",
             "--hide-scrollbars")  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _inspector_shows_the_user(worker: Worker, tmp: Path, catalog: list[Any]) -> None:
    user = USERS[1]
    titles = {i.title for n, i in enumerate(catalog)
              if any((j * 7) % len(catalog) == n for j in range(1, N_EVENTS, len(USERS)))}
    page = _parse(_browser(f"http://127.0.0.1:{worker.port}/inspect?user={user}", tmp,
                           "--dump-dom"))  # fmt: skip
    text = "".join(page.text)
    assert f"User {user}" in text and "Interests" in text
    assert sum(title in text for title in titles) >= 5, text[:3000]  # recent events, by title
    assert ("ol", {"class": "interests"}) in page.tags
    cells = [t for t in page.text if t.strip()]
    assert "click" in cells and "Recommendations now" in cells
    unknown = _parse(_browser(f"http://127.0.0.1:{worker.port}/inspect?user=nobody-here", tmp,
                              "--dump-dom"))  # fmt: skip
    assert "Unknown user" in "".join(unknown.text)


def _hostile_requests_get_a_4xx_and_no_traceback(worker: Worker) -> None:
    huge = b"GET /users/" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert _raw(worker, huge) == 400
    assert _raw(worker, b"GET /users/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n") == 400
    header = b"GET /dashboard HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n"
    assert _raw(worker, header) == 400
    for path, status in [
        ("/users/%ff%fe", 404),
        ("/users/%ed%a0%80", 404),
        ("/users/" + "u" * 129, 400),
        ("/inspect?user=" + "u" * 129, 400),
        ("/inspect?user=%ed%a0%80%00", 404),
        ("/inspect?user=%3Cscript%3Ealert(1)%3C/script%3E", 404),
        ("/metrics.json?since=nan", 400),
        ("/metrics.json?history=yesterday", 400),
        ("/metrics.json?since=%ff", 400),
    ]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=5) as r:
                got, page = r.status, r.read()
        except urllib.error.HTTPError as exc:
            got, page = exc.code, exc.read()
        assert got == status, (path, got, page[:300])
        assert b"<script>" not in page, path
    assert worker.proc.poll() is None
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log, worker.tail(80)
    assert "answered 400 to a malformed request" in log
