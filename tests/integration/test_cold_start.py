"""Cold start in the stream (issue 18, item 6): a user the worker has never seen gets the items
trending now, mixed with the neighbours of their first item, and their list turns personal as
their events arrive; ``/users/<never seen>`` answers the trending list, and the counts come
back from the changelog after a restart on the same folder and on an empty one."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from interest_state import TRENDING_REASON
from streams.settings import Settings
from tests.integration.conftest import Deployment, Worker
from tests.integration.kafka_client import Record, catalog_records, consume, produce

pytestmark = pytest.mark.integration

HOT = (10, 8, 6, 4, 2)
"""Events on the catalog's first items from the crowd: they trend in this order."""
CROWD = 6
NEWBIE = "newbie"
PERSONAL_AFTER = Settings().personal_after
HOP_S = 10
"""The counts are written every tenth of a hop: 1 s here (30 s with the default hop)."""


def _click(dep: Deployment, user: str, item: str, event_id: str) -> tuple[str, bytes, bytes]:
    event = {"event_id": event_id, "user_id": user, "item_id": item, "ts": time.time() - 5}
    return dep.topics.click, user.encode(), json.dumps(event).encode()


def _trending(worker: Worker, want: list[tuple[str, float]], timeout_s: float = 30) -> list[Any]:
    """``/users/<never seen>``'s list once its trending items and scores start with ``want``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = worker.get("/users/never-seen")
        recs = body.get("recommendations", [])
        if [(r["item_id"], r["score"]) for r in recs][: len(want)] == want:
            assert status == 404 and body["found"] is False and body["events"] == 0
            assert {r["reason"] for r in recs} == {TRENDING_REASON}
            return list(recs)
        assert time.monotonic() < deadline, (status, body, want, worker.tail())
        time.sleep(0.2)


def _answers(dep: Deployment, user: str, event_id: str) -> dict[str, Any]:
    """The recommendation message that answers ``user``'s event ``event_id``."""

    def answered(records: list[Record]) -> bool:
        return any(_covers(r, user, event_id) for r in records)

    records = consume(dep.bootstrap, dep.topics.recommendations, answered, timeout_s=30)
    found = [json.loads(r.value or b"") for r in records if _covers(r, user, event_id)]
    assert found, (user, event_id)
    return dict(found[-1])


def _covers(record: Record, user: str, event_id: str) -> bool:
    if record.key != user.encode() or record.value is None:
        return False
    return event_id in json.loads(record.value)["event_ids"]


def test_a_new_user_gets_trending_items_that_turn_personal_and_survive_restarts(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    dep.extra_env["INTEREST_STREAM_TRENDING_HOP_S"] = str(HOP_S)
    produce(dep.bootstrap, catalog_records(dep.topics.items, catalog, text=False))
    first = dep.start_worker("first")
    hot = [catalog[n].item_id for n in range(len(HOT))]
    crowd = [
        _click(dep, f"crowd-{n % CROWD}", item, f"crowd-{item}-{n}")
        for item, times in zip(hot, HOT, strict=True)
        for n in range(times)
    ]
    produce(dep.bootstrap, crowd)
    expected = [(item, float(times)) for item, times in zip(hot, HOT, strict=True)]
    started = time.monotonic()
    before = _trending(first, expected)
    print(f"\ncrowd events -> trending list: {time.monotonic() - started:.2f} s")
    assert [r["item_id"] for r in before] == hot  # nothing else trends

    # A brand-new user's first event: the hot items and the neighbours of their first item.
    first_item = catalog[100]
    produce(dep.bootstrap, [_click(dep, NEWBIE, first_item.item_id, "newbie-0")])
    items = _answers(dep, NEWBIE, "newbie-0")["items"]
    trending = [i["item_id"] for i in items if i["reason"] == TRENDING_REASON]
    personal = [i for i in items if i["reason"] != TRENDING_REASON]
    assert len(items) == 10 and set(trending) == set(hot), items
    assert personal and all(first_item.title in i["reason"] for i in personal), items

    # After personal_after events, nothing trending is left in their list.
    more = [_click(dep, NEWBIE, catalog[101 + n].item_id, f"newbie-{n + 1}")
            for n in range(PERSONAL_AFTER - 1)]  # fmt: skip
    produce(dep.bootstrap, more)
    last = _answers(dep, NEWBIE, f"newbie-{PERSONAL_AFTER - 1}")
    assert TRENDING_REASON not in {i["reason"] for i in last["items"]}, last
    status, body = first.get(f"/users/{NEWBIE}")
    assert status == 200 and body["events"] == PERSONAL_AFTER
    assert TRENDING_REASON not in {r["reason"] for r in body["recommendations"]}

    # The newbie's items count too (once each), after the crowd's.
    newbie_items = [catalog[100 + n].item_id for n in range(PERSONAL_AFTER)]
    counted = [*expected, *sorted((item, 1.0) for item in newbie_items)]
    _trending(first, counted)
    page = _page(first, "/inspect?user=never-seen")
    assert "Unknown user" in page and "Trending now" in page and catalog[0].title in page

    # Restarts: the same folder, then an empty one; the counts come back from the changelog,
    # and a new event adds to them (the table is back too, not only the list).
    time.sleep(1.5)  # let the worker commit and flush
    first.stop()
    again = dep.start_worker("first")
    _trending(again, counted)
    again.stop()
    fresh = dep.start_worker("fresh")
    _trending(fresh, counted)
    produce(dep.bootstrap, [_click(dep, "crowd-0", hot[0], "crowd-after-restart")])
    _trending(fresh, [(hot[0], HOT[0] + 1.0), *expected[1:]])


def _page(worker: Worker, path: str) -> str:
    """The HTML of ``path`` on ``worker``, whatever its status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=5) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())
