"""Online quality: each event scored against its user's last list (hits, ranks, HR@10, MRR@10),
per model version, over sliding windows; on ``/metrics``, ``/metrics.json`` and the dashboard."""

from __future__ import annotations

import json

import faust
import pytest
from prometheus_client.parser import text_string_to_metric_families

from encoders import TextEncoder
from streams.worker.dashboard import CHARTS, online_rows, render_dashboard, state_rows
from streams.worker.history import History, Sampler
from streams.worker.lag import ConsumerLag
from streams.worker.online_quality import OnlineQuality, Score, Tally
from streams.worker.prometheus import WorkerCollector, render, worker_registry
from streams.worker.stats import Stats
from tests.unit.streams.worker.test_agents import _pipeline, _setup

T0 = 1_764_100_000.0
LIST = [f"i{r}" for r in range(1, 13)]  # i1 at rank 1 ... i12 at rank 12


def test_an_event_is_a_hit_at_its_items_rank_in_the_users_last_list_or_a_miss() -> None:
    q = OnlineQuality()
    q.remember("u1", LIST, "v1")
    assert q.observe("u1", "i1", T0) == Score(True, 1)
    assert q.observe("u1", "i4", T0) == Score(True, 4)
    assert q.observe("u1", "i10", T0) == Score(True, 10)
    assert q.observe("u1", "i11", T0) == Score(False, None)  # in the list, but after the 10th
    assert q.observe("u1", "elsewhere", T0) == Score(False, None)
    tally = q.totals["v1"]
    assert (tally.scored, tally.hits) == (5, 3)
    assert tally.hit_rate == pytest.approx(3 / 5)
    assert tally.mrr == pytest.approx((1 + 1 / 4 + 1 / 10) / 5)
    assert q.unscored == 0


def test_events_of_users_with_no_known_list_are_unscored_not_misses() -> None:
    q = OnlineQuality()
    assert q.observe("new", "i1", T0) is None
    assert q.unscored == 1 and q.totals == {}
    q.remember("new", [], "v1")  # an empty list is a list: the next event is a miss
    assert q.observe("new", "i1", T0) == Score(False, None)
    assert q.totals["v1"] == Tally(1, 0, 0.0) and q.unscored == 1
    q.forget("new")
    assert q.observe("new", "i1", T0) is None and q.unscored == 2


def test_each_model_version_is_scored_by_the_lists_it_ranked() -> None:
    q = OnlineQuality()
    q.remember("u1", ["a", "b"], "v1")
    q.remember("u2", ["c", "d"], "v2")
    q.observe("u1", "b", T0)
    q.observe("u2", "x", T0)
    q.remember("u1", ["e", "f"], "v2")  # u1's next list came from the new model
    q.observe("u1", "e", T0)
    assert q.totals == {"v1": Tally(1, 1, 0.5), "v2": Tally(2, 1, 1.0)}
    models = q.snapshot(T0)["models"]
    assert models["v1"]["hr"] == 1.0 and models["v1"]["mrr"] == 0.5
    assert models["v2"]["hr"] == 0.5 and models["v2"]["mrr"] == 0.5


def test_the_windows_hold_the_last_minute_and_ten_minutes_to_the_second() -> None:
    q = OnlineQuality()
    q.remember("u", LIST, "v1")
    q.observe("u", "i1", T0)  # 700 s before the last: in no window
    q.observe("u", "x", T0 + 100)  # 600 s before: just out of the 10 min window
    q.observe("u", "i2", T0 + 101)  # 599 s before: in it
    q.observe("u", "x", T0 + 640)  # 60 s before: just out of the 1 min window
    q.observe("u", "i5", T0 + 641)
    q.observe("u", "x", T0 + 700.9)
    now = T0 + 700.9
    assert q.window(60, now) == {"v1": Tally(2, 1, 0.2)}
    assert q.window(600, now) == {"v1": Tally(4, 2, 0.5 + 0.2)}
    assert q.totals["v1"].scored == 6  # the counters keep everything
    last = q.snapshot(now)["models"]["v1"]
    assert last["last_1m"] == {"scored": 2, "hits": 1, "hr": 0.5, "mrr": 0.1}
    assert last["last_10m"] == {"scored": 4, "hits": 2, "hr": 0.5, "mrr": 0.175}
    assert q.chart_point(now) == {"v1 (1m)": 0.5, "v1 (10m)": 0.5}
    assert q.window(60, now + 120) == {} and q.chart_point(now + 700) == {}
    assert len(q._seconds) <= 600  # older seconds are dropped as new ones come


def test_the_lists_are_a_bounded_lru_of_users() -> None:
    q = OnlineQuality(max_users=2)
    q.remember("a", ["1"], "v")
    q.remember("b", ["1"], "v")
    q.observe("a", "1", T0)  # a is used: b is now the least recently used
    q.remember("c", ["1"], "v")
    assert len(q) == 2
    assert q.observe("b", "1", T0) is None  # evicted: unscored
    assert q.observe("a", "1", T0) == Score(True, 1) and q.observe("c", "1", T0) == Score(True, 1)


def test_the_agent_scores_applied_events_against_the_list_sent_before_their_batch(
    tiny_encoder: TextEncoder,
) -> None:
    setup = _setup()
    pipeline = _pipeline(tiny_encoder)  # top_k=2
    online = setup.wiring.stats.online
    setup.run(pipeline, [setup.event("a", "u1", "0")])
    first = json.loads(setup.recommendations.sent[-1].value or b"")
    listed = [item["item_id"] for item in first["items"]]
    version = first["model_version"]
    assert online.unscored == 1 and online.totals == {}  # u1 had no list yet
    unlisted = ({"1", "2", "3"} - set(listed)).pop()

    # both of u1's events are scored against `listed` (the list before the batch); the
    # duplicate of "b" is not scored again; u2 has no list yet; an unknown item is not applied
    setup.run(pipeline, [
        setup.event("b", "u1", listed[1]), setup.event("b", "u1", listed[1]),
        setup.event("c", "u1", unlisted), setup.event("d", "u2", "3"),
        setup.event("e", "u1", "nope")])  # fmt: skip
    assert online.totals == {version: Tally(2, 1, 0.5)} and online.unscored == 2

    second = json.loads(setup.recommendations.sent[-2].value or b"")
    assert second["user_id"] == "u1"
    setup.run(pipeline, [setup.event("f", "u1", second["items"][0]["item_id"])])
    assert online.totals == {version: Tally(3, 2, 1.5)}
    snapshot = setup.wiring.stats.snapshot()["online"]
    assert snapshot["models"][version]["hr"] == round(2 / 3, 4)
    assert snapshot["models"][version]["mrr"] == 0.5 and snapshot["users_remembered"] == 2


def _samples(stats: Stats) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    app = faust.App("online-prom", broker="kafka://127.0.0.1:1", web_enabled=False)
    sampler = Sampler(stats, ConsumerLag(app, "127.0.0.1:1", ["events.click"]), table={})
    text = render(worker_registry(WorkerCollector(stats, sampler, dict))).decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_prometheus_has_counters_per_model_version_and_the_window_gauges() -> None:
    stats = Stats()
    before = _samples(stats)
    assert before["interest_stream_online_unscored_events_total"] == {(): 0.0}
    assert "interest_stream_online_hits_total" not in before  # no version, no sample yet
    online = stats.online
    online.observe("u0", "i1")
    online.remember("u1", LIST, "v1")
    for item in ("i1", "i2", "x", "i4"):
        online.observe("u1", item)
    after = _samples(stats)
    labels = (("k", "10"), ("model_version", "v1"))
    assert after["interest_stream_online_scored_events_total"] == {labels: 4.0}
    assert after["interest_stream_online_hits_total"] == {labels: 3.0}
    assert after["interest_stream_online_reciprocal_rank_total"][labels] == pytest.approx(1.75)
    assert after["interest_stream_online_unscored_events_total"] == {(): 1.0}
    for window in ("1m", "10m"):
        key = (*labels, ("window", window))
        assert after["interest_stream_online_hit_rate"][key] == 0.75
        assert after["interest_stream_online_mrr"][key] == pytest.approx(1.75 / 4)
    assert after["interest_stream_online_users_remembered"] == {(): 1.0}


def test_the_dashboard_charts_the_online_hit_rate_of_each_model_version() -> None:
    stats, history = Stats(), History()
    stats.online.remember("u1", LIST, "v1")
    history.add(stats, lag=0, now=T0)
    stats.online.observe("u1", "i3", T0 + 1)
    stats.online.observe("u1", "x", T0 + 1)
    sample = history.add(stats, lag=0, now=T0 + 2)
    assert sample is not None and sample["online_hr10"] == {"v1 (1m)": 0.5, "v1 (10m)": 0.5}
    assert ("online_hr", "online HR@10 by model version (last 1 / 10 min)",
            (("*online_hr10", ""),)) in CHARTS  # fmt: skip
    metrics = {"catalog_ready": True, **stats.snapshot()}
    rows = dict(state_rows(metrics)["online"])
    assert rows["events unscored (user's last list unknown)"] == 0
    assert rows["v1, all"].startswith("HR 0.5 · MRR ") and rows["v1, all"].endswith(" 2 events")
    page = render_dashboard(metrics)
    assert '<svg id="chart-online_hr"' in page and "<tbody id=online>" in page
    assert online_rows({}) == [("events unscored (user's last list unknown)", 0)]
