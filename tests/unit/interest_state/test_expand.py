"""Interest expansion: candidates by interest, dislikes pushed down, exploration by tag."""

from __future__ import annotations

import numpy as np

from encoders import ItemIndex
from interest_state import (
    EXPLORE_UNTAGGED,
    Event,
    EventType,
    InterestState,
    Observation,
    Recommendation,
    UpdateParams,
    explore,
    interest_hits,
    interest_picks,
    push_down_disliked,
    update,
)

DIM = 4
# comedy along axis 0, horror along axis 1, noir along axis 2; "c*" near-copies of comedy
ITEMS = {
    "c1": [1, 0.05, 0, 0], "c2": [1, 0.1, 0, 0], "c3": [1, 0, 0.1, 0], "c4": [1, 0, 0, 0.1],
    "h1": [0.05, 1, 0, 0], "h2": [0.1, 1, 0, 0], "h3": [0, 1, 0.1, 0],
    "n1": [0, 0.1, 1, 0], "n2": [0.1, 0, 1, 0], "x1": [0, 0, 0, 1],
}  # fmt: skip
TAGS = {"c1": ("Comedy",), "c2": ("Comedy",), "c3": ("Comedy", "Film-Noir"),
        "c4": ("Comedy",), "h1": ("Horror",), "h2": ("Horror",), "h3": ("Horror",),
        "n1": ("Film-Noir",), "n2": ("Film-Noir", "Comedy"), "x1": ("Western",)}  # fmt: skip


def catalog() -> ItemIndex:
    index = ItemIndex(DIM)
    vectors = np.array([ITEMS[i] for i in ITEMS], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.upsert(list(ITEMS), [f"T-{i}" for i in ITEMS], vectors)
    return index


def user(events: list[tuple[str, EventType]]) -> InterestState:
    index = catalog()
    obs = [Observation(Event(f"e{n}", "u", item, kind, 1e9 + n), index.vector(item))
           for n, (item, kind) in enumerate(events)]  # fmt: skip
    return update(InterestState.empty(DIM), obs, UpdateParams(interests=3))[0]


def recs(*ids: str) -> list[Recommendation]:
    return [Recommendation(i, 1.0 - n / 10, f"why {i}") for n, i in enumerate(ids)]


def test_each_interest_brings_its_nearest_unseen_items_by_its_weight() -> None:
    state = user([("c1", EventType.CLICK)] * 1 + [("c2", EventType.CLICK), ("h1", EventType.CLICK)])
    [hits] = interest_hits([state], catalog(), total=6)
    assert len(hits) == 2  # comedy and horror
    by_size = sorted(hits, key=len)
    assert {i for i, _ in by_size[1]} <= {"c3", "c4", "n2", "h2"}  # comedy: weight 2 of 3
    assert len(by_size[1]) == 4 and len(by_size[0]) == 2
    assert by_size[0][0][0] in {"h2", "h3"}
    assert not {"c1", "c2", "h1"} & {i for found in hits for i, _ in found}  # seen: filtered


def test_interest_slots_are_shared_out_by_weight_heaviest_first() -> None:
    state = user([("c1", EventType.CLICK), ("c2", EventType.CLICK), ("h1", EventType.CLICK)])
    comedy, horror = (0, 1) if state.interest_weights[0] > state.interest_weights[1] else (1, 0)
    hits = [[], []]
    hits[comedy] = [("c3", 0.9), ("c4", 0.8)]
    hits[horror] = [("h2", 0.9), ("h3", 0.8)]
    one = interest_picks(state, hits, taken=set(), n=1)
    assert [r.item_id for r in one] == ["c3"]  # weight 2 of 3: the one slot
    three = interest_picks(state, hits, taken={"c3"}, n=3)
    assert [r.item_id for r in three] == ["c4", "h2"]  # c3 listed already: 2 + 1 slots
    assert interest_picks(state, hits, set(), 0) == [] and interest_picks(state, [], set(), 2) == []


def test_a_dislike_sinks_its_near_copies_and_moves_its_neighbours_down() -> None:
    liked = user([("n1", EventType.CLICK)])
    ranked = recs("c2", "h2", "c3", "x1", "n2")
    assert push_down_disliked(liked, ranked, catalog()) == ranked  # no dislike: unchanged
    hater = user([("n1", EventType.CLICK), ("c1", EventType.DISLIKE)])
    moved = [r.item_id for r in push_down_disliked(hater, ranked, catalog())]
    assert moved.index("c2") > moved.index("h2") and moved.index("c3") > moved.index("x1")
    assert moved[0] == "h2" and moved[-1] == "c3"  # far from the dislike: up; a near copy: last


def test_exploration_opens_the_tags_the_user_touched_least() -> None:
    state = user([("c1", EventType.CLICK), ("c2", EventType.CLICK), ("h1", EventType.CLICK)])
    pool = recs("c3", "c4", "h2", "n1", "x1")
    picks = explore(state, pool, {"c3"}, 2, catalog(), TAGS)
    assert [r.reason for r in picks] == ["explore: Film-Noir", "explore: Western"]
    assert [r.item_id for r in picks] == ["n1", "x1"]
    assert explore(state, pool, {"c3"}, 0, catalog(), TAGS) == []


def test_without_tags_exploration_takes_what_is_least_like_the_list() -> None:
    state = user([("c1", EventType.CLICK)])
    picks = explore(state, recs("c2", "c3", "h2", "x1"), {"c2", "c3"}, 1, catalog())
    assert [(r.item_id, r.reason) for r in picks] in ([("x1", EXPLORE_UNTAGGED)],
                                                      [("h2", EXPLORE_UNTAGGED)])  # fmt: skip
