"""The list the worker sends: MMR over the best candidates, trending for a new user."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from encoders import ItemIndex
from interest_state import TRENDING_REASON, InterestState, Recommendation, mmr_rerank
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
    assert lists.finish([user(0)], [ranked()], 3) == [ranked()]
