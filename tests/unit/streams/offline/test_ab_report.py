"""``interest-stream ab report``'s arithmetic: a replay whose answer is known, and the bootstrap
interval over users."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interest_state import Recommendation
from streams.offline.ab_report import (
    Message,
    Scored,
    bootstrap_difference,
    report,
    results,
    score_log,
)
from streams.worker.schemas import encode_recommendations


def msg(user: str, events: list[str], items: list[str], variant: str) -> Message:
    return Message(user, tuple(events), tuple(items), variant, f"text+seq-{variant}")


def test_a_replay_whose_answer_is_known() -> None:
    """u1 (A) and u2 (B), in log order; each event is scored against the list before the first
    message that names it, once."""
    item_of = {f"e{n}": item for n, item in enumerate(
        ["i0", "i2", "i9", "i1", "i5", "i7", "i6", "i8", "x"])}  # fmt: skip
    log = [
        msg("u1", ["e0"], ["i1", "i2", "i3"], "A"),  # e0: no list before it, unscored
        msg("u2", ["e4"], ["i5", "i6", "i7"], "B"),  # e4: unscored
        msg("u1", ["e1", "e2"], ["i3", "i1", "i4"], "A"),  # e1 -> i2: rank 2; e2 -> i9: miss
        msg("u2", ["e5", "gone"], ["i8", "i6"], "B"),  # e5 -> i7: rank 3; "gone": not an event
        msg("u1", ["e2", "e3"], ["i0"], "A"),  # e2 again (redelivered): not scored twice;
        #                                        e3 -> i1: rank 2 of [i3, i1, i4]
        msg("u2", ["e6", "e7"], ["i8"], "B"),  # e6 -> i6: rank 2; e7 -> i8: rank 1
        msg("u3", ["e8"], ["x"], "A"),  # unscored
    ]
    scored = score_log(log, item_of)
    assert scored.unscored == 3
    assert scored.users == {"A": {"u1": [3, 2, 1.0]}, "B": {"u2": [3, 3, 1 / 3 + 1 / 2 + 1]}}
    a, b = results(scored)
    assert (a.variant, a.users, a.scored) == ("A", 1, 3) and a.hr == pytest.approx(2 / 3)
    assert a.mrr == pytest.approx(1 / 3) and b.hr == 1.0
    assert b.mrr == pytest.approx((1 / 3 + 1 / 2 + 1) / 3) and b.versions == ("text+seq-B",)
    assert score_log(log, item_of, k=1).users["B"]["u2"] == [3, 1, 1.0]  # only rank 1 counts


def test_the_report_reads_the_worker_s_messages() -> None:
    raw = encode_recommendations("u", ["e1"], [Recommendation("i", 1.0, "")], "m", 2.0, 1.0, "B")
    assert Message.decode(raw) == Message("u", ("e1",), ("i",), "B", "m")
    old = json.dumps({"user_id": "u", "event_ids": ["e1"], "items": [], "model_version": "m"})
    assert Message.decode(old.encode()).variant == "A"  # before A/B: every list was A's


def _users(hits: list[int], events: int = 1) -> np.ndarray:
    return np.asarray([[events, h * events, h * events] for h in hits], dtype=np.float64)


def test_identical_users_give_a_point_interval() -> None:
    a, b = _users([1, 0] * 10), _users([1, 1, 1, 0] * 5)
    ci = bootstrap_difference(a, b, resamples=500)
    assert ci["hr"][0] < 0.25 < ci["hr"][1]
    same = bootstrap_difference(_users([1] * 7), _users([0] * 9), resamples=200)
    assert same["hr"] == pytest.approx((-1.0, -1.0)) and same["mrr"] == pytest.approx((-1.0, -1.0))


def test_the_interval_matches_the_normal_one_for_independent_users() -> None:
    """400 users a variant, one event each, HR 0.3 vs 0.5: the Wald interval of the difference
    of two proportions is 0.2 +- 1.96 sqrt(.3 x .7 / 400 + .5 x .5 / 400) = 0.2 +- 0.0665."""
    a, b = _users([1] * 120 + [0] * 280), _users([1] * 200 + [0] * 200)
    low, high = bootstrap_difference(a, b, resamples=4000, seed=1)["hr"]
    assert low == pytest.approx(0.2 - 0.0665, abs=0.01)
    assert high == pytest.approx(0.2 + 0.0665, abs=0.01)
    assert bootstrap_difference(a, b, resamples=300, seed=1) == bootstrap_difference(
        a, b, resamples=300, seed=1
    )  # a fixed seed: the same log gives the same interval


def test_users_are_the_unit_correlated_events_widen_the_interval() -> None:
    """40 users of 10 events each, all hits or all misses, are 40 observations, not 400: the
    interval is about sqrt(10) times as wide as for 400 independent events at the same HR."""
    narrow = bootstrap_difference(_users([1] * 12 + [0] * 28), _users([1] * 20 + [0] * 20), 2000)
    wide = bootstrap_difference(
        _users([1] * 12 + [0] * 28, 10), _users([1] * 20 + [0] * 20, 10), 2000
    )
    assert wide["hr"] == pytest.approx(narrow["hr"])  # the same 40 users, scaled
    independent = bootstrap_difference(
        _users([1] * 120 + [0] * 280), _users([1] * 200 + [0] * 200), 2000
    )
    ratio = (wide["hr"][1] - wide["hr"][0]) / (independent["hr"][1] - independent["hr"][0])
    assert 2.5 < ratio < 4.0, ratio


def test_the_report_prints_both_variants_and_the_difference() -> None:
    scored = Scored()
    for n in range(30):
        scored.add("A", "vA", f"a{n}", 1 if n % 3 == 0 else None)
        scored.add("B", "vB", f"b{n}", 2 if n % 2 == 0 else None)
    text = report(scored, resamples=200)
    lines = text.splitlines()
    assert lines[1].split()[:5] == ["A", "30", "30", "0.3333", "0.3333"]
    assert lines[2].split()[:5] == ["B", "30", "30", "0.5000", "0.2500"]
    assert "B - A HR@10: +0.1667 (95 % CI " in text and "B - A MRR@10: -0.0833" in text
    assert "bootstrap over users, 200 resamples" in text
    only_a = Scored()
    only_a.add("A", "vA", "a", 1)
    assert "needs scored events in both variants" in report(only_a)
    with pytest.raises(ValueError, match="both variants"):
        bootstrap_difference(_users([1]), _users([]))
