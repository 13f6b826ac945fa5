"""The list the worker sends: MMR over the best candidates, trending for a new user."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from encoders import ItemIndex
from interest_state import (
    TRENDING_REASON,
    Event,
    EventType,
    InterestState,
    Observation,
    Recommendation,
    UpdateParams,
    mmr_rerank,
    update,
)
from streams.worker.lists import MMR_CANDIDATES, ListMaker


def catalog() -> ItemIndex:
    index = ItemIndex(3)
    vectors = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)
    index.upsert([f"i{n}" for n in range(5)], [f"T{n}" for n in range(5)], vectors)
    return index


def user(n_events: int, seen: tuple[str, ...] = ()) -> InterestState:
    return replace(InterestState.empty(3), n_events=n_events, recent_items=seen,
                   recent_types=(1,) * len(seen), recent_ts=(0.0,) * len(seen))  # fmt: skip


def ranked() -> list[Recommendation]:
    return [Recommendation(f"i{n}", 1.0 - n / 10, "why") for n in range(5)]


def test_mmr_widens_the_candidates_and_lists_as_mmr_rerank_does() -> None:
    index = catalog()
    lists = ListMaker(index, mmr_lambda=0.5, personal_after=0)
    assert lists.candidates(10) == MMR_CANDIDATES
    assert ListMaker(index, mmr_lambda=1.0).candidates(10) == 10
    got = lists.finish([user(9), user(9)], [ranked(), ranked()[:2]], 3)
    assert got == [mmr_rerank(ranked(), index, 3, 0.5), mmr_rerank(ranked()[:2], index, 3, 0.5)]
    assert [r.item_id for r in got[0]][:2] == ["i0", "i2"]  # i1 is a near copy of i0


def test_a_new_user_gets_trending_items_that_give_way_with_events() -> None:
    index = catalog()
    lists = ListMaker(index, mmr_lambda=1.0, personal_after=2)
    lists.trending = lambda n: [("i4", 9.0), ("gone", 8.0), ("i3", 7.0)][:n]
    assert [r.item_id for r in lists.for_new_user(5)] == ["i4", "i3"]  # unknown ids dropped
    index.delete(["i3"])
    assert [r.item_id for r in lists.for_new_user(5)] == ["i4"]  # so are deleted ones
    one, two = lists.finish([user(1, ("i4",)), user(2)], [ranked()[:3], ranked()[:3]], 3)
    assert TRENDING_REASON not in {r.reason for r in two}
    assert "i4" not in {r.item_id for r in one}  # seen: not offered as trending


def test_without_a_trending_source_lists_are_the_ranking() -> None:
    lists = ListMaker(catalog(), mmr_lambda=1.0)
    assert lists.for_new_user(3) == []
    assert lists.finish([user(0)], [ranked()], 3) == [ranked()[:3]]


def test_interests_exploration_and_reasons_in_one_list() -> None:
    """A user of two tastes: the list holds items of both, its last slot explores a tag the
    user has not touched, and every item says why it is there."""
    index = ItemIndex(3)
    vectors = np.array([[1, 0, 0], [1, 0.1, 0], [1, 0, 0.1], [1, 0.1, 0.1],
                        [0, 1, 0], [0.1, 1, 0], [0, 1, 0.1], [0, 0, 1]], np.float32)  # fmt: skip
    ids = ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "z0"]
    index.upsert(ids, [f"T-{i}" for i in ids], vectors)
    lists = ListMaker(index, mmr_lambda=1.0, personal_after=0, interest_slots=2,
                      explore_slots=1)  # fmt: skip
    lists.set_tags([(i, ("A",)) for i in ids[:4]] + [(i, ("B",)) for i in ids[4:7]]
                   + [("z0", ("Z",))])  # fmt: skip
    events = [("a0", 0), ("a0b", 1), ("b0", 2)]
    obs = [Observation(Event(f"e{n}", "u", item[:2], EventType.CLICK, 1e9 + n),
                       index.vector(item[:2])) for item, n in events]  # fmt: skip
    state = update(InterestState.empty(3), obs, UpdateParams())[0]
    assert state.n_interests == 2
    ranked = [Recommendation(i, 1.0 - n / 10, "") for n, i in enumerate(["a1", "a2", "a3"])]
    [made] = lists.finish([state], [ranked], 6)
    got = [r.item_id for r in made]
    assert len(got) == 6 and {"b1", "b2"} <= set(got)  # the second taste has a place
    assert made[-1].reason == "explore: Z" and made[-1].item_id == "z0"
    assert all(r.reason for r in made)
    assert any(r.reason.startswith("because you clicked") for r in made)
