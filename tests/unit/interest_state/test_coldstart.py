"""Cold start: the trending share by event count, and the slot-by-slot merge."""

from __future__ import annotations

import pytest

from interest_state import (
    TRENDING_REASON,
    ParamsError,
    Recommendation,
    mix_trending,
    trending_share,
)

PERSONAL = [Recommendation(f"p{i}", 1.0 - i / 10, "because you clicked X") for i in range(10)]
HOT = [(f"t{i}", 100.0 - i) for i in range(10)]


def test_the_trending_share_falls_with_each_event_until_the_list_is_personal() -> None:
    assert [trending_share(n, 5) for n in range(7)] == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0]
    assert trending_share(0, 0) == 1.0  # a user with no events has nothing personal
    assert trending_share(1, 0) == 0.0
    with pytest.raises(ParamsError):
        trending_share(1, -1)


def test_trending_slots_are_spread_over_the_list() -> None:
    mixed = mix_trending(PERSONAL, HOT, 10, 0.4)
    assert [r.item_id for r in mixed] == [
        "p0", "t0", "p1", "t1", "p2", "p3", "t2", "p4", "t3", "p5"]  # fmt: skip
    assert {r.reason for r in mixed if r.item_id.startswith("t")} == {TRENDING_REASON}
    assert mixed[1].score == 100.0  # a trending item keeps its own score


def test_all_trending_or_all_personal_at_the_ends() -> None:
    assert [r.item_id for r in mix_trending(PERSONAL, HOT, 4, 1.0)] == ["t0", "t1", "t2", "t3"]
    assert mix_trending(PERSONAL, HOT, 4, 0.0) == PERSONAL[:4]


def test_seen_excluded_and_listed_items_are_never_repeated() -> None:
    hot = [("p0", 9.0), ("seen", 8.0), ("t1", 7.0), ("t2", 6.0)]
    mixed = mix_trending(PERSONAL[:3], hot, 6, 0.5, exclude={"seen"})
    ids = [r.item_id for r in mixed]
    assert len(ids) == len(set(ids)) and "seen" not in ids
    assert mixed[0].item_id == "p0" and mixed.count(mixed[0]) == 1  # listed once


def test_one_source_running_out_leaves_the_slots_to_the_other() -> None:
    assert [r.item_id for r in mix_trending(PERSONAL[:1], HOT[:1], 5, 0.5)] == ["p0", "t0"]
    assert [r.item_id for r in mix_trending([], HOT[:3], 5, 0.2)] == ["t0", "t1", "t2"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ParamsError):
        mix_trending(PERSONAL, HOT, 0, 0.5)
    with pytest.raises(ParamsError):
        mix_trending(PERSONAL, HOT, 3, 1.5)
