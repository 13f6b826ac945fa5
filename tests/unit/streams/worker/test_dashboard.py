"""The dashboard and the user inspector as pages: what they show, and that they escape it."""

from __future__ import annotations

import json
import re

from streams.worker.dashboard import CHARTS, render_dashboard, state_rows
from streams.worker.inspector import render_inspector

HOSTILE = '<img src=x onerror="alert(1)">'


def test_the_dashboard_has_a_chart_for_each_figure_and_the_state_now() -> None:
    page = render_dashboard({"catalog_ready": True, "items": 1682, "table_users": 943,
                             "partitions_owned": 4, "consumer_lag": {"e/0": 3, "e/1": 4},
                             "sequence_model_version": HOSTILE})  # fmt: skip
    ids = re.findall(r'<svg id="chart-([a-z_]+)"', page)
    assert ids == ["events", "recommendations", "dead_letters", "latency", "lag", "batch_size",
                   "online_hr"]
    spec = re.search(r"<script type=application/json id=charts-spec>(.*?)</script>", page, re.S)
    assert spec is not None and [c[0] for c in json.loads(spec.group(1))] == ids
    assert [c[0] for c in CHARTS] == ids
    rows = dict(state_rows({"consumer_lag": {"e/0": 3, "e/1": 4}, "table_users": None})["state"])
    assert rows["consumer lag (records)"] == 7 and rows["users in the table (this worker)"] == (
        "counting")  # fmt: skip
    assert ">943<" in page and ">1682<" in page and "<img" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert "fetch('/metrics.json?history='" in page and "innerHTML" not in page


def test_the_inspector_shows_interests_events_and_recommendations_escaped() -> None:
    summary = {
        "user_id": "u1", "found": True, "events": 3,
        "events_by_type": {"browse": 1, "click": 2, "comment": 0},
        "duplicates_dropped": 0, "long_term_version": None, "updated_ts": 1764100000.0,
        "interest_summary": ["Toy Story", HOSTILE],
        "recent_events": [{"item_id": "1", "title": "Toy Story", "type": "click",
                           "ts": 1764100000.0},
                          {"item_id": "9", "title": None, "type": "browse", "ts": 1764099990.0}],
        "recommendations": [{"item_id": "2", "title": "GoldenEye", "score": 0.91234,
                             "reason": f"like {HOSTILE}"}],
        "model_version": "enc-1",
    }  # fmt: skip
    page = render_inspector("u1", summary)
    assert "<li>Toy Story</li>" in page and "GoldenEye" in page and "0.9123" in page
    assert "2025-11-25 19:46:40 UTC" in page and ">click<" in page and "(item 9)" in page
    assert "<img" not in page and "&lt;img src=x" in page
    assert 'href="/users/u1"' in page


def test_the_inspector_says_when_a_user_is_unknown_or_the_id_is_bad() -> None:
    unknown = render_inspector(HOSTILE, {"user_id": HOSTILE, "found": False})
    assert "Unknown user" in unknown and "<img" not in unknown and "as JSON" not in unknown
    bad = render_inspector("", None, problem="user id is 129 chars, at most 128")
    assert "at most 128" in bad
    empty = render_inspector("", None)
    assert "Type a user id" in empty and "<form action=/inspect" in empty
