"""Several interests and negative signals in the update rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from interest_state import (
    Event,
    EventType,
    InterestState,
    Observation,
    ParamsError,
    StateError,
    UpdateParams,
    decode_state,
    encode_state,
    update,
)
from interest_state.interests import interest_units

DIM = 8
T0 = 1_700_000_000.0
PARAMS = UpdateParams()


def near(axis: int, wobble: float, seed: int) -> np.ndarray:
    """A unit vector close to basis ``axis``."""
    v = np.zeros(DIM)
    v[axis] = 1.0
    v += wobble * np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def obs(n: int, vector: np.ndarray, kind: EventType = EventType.CLICK, *,
        dwell: int | None = None, item: str | None = None, ts: float | None = None,
        text: str | None = None) -> Observation:  # fmt: skip
    event = Event(f"e{n}", "u", item or f"i{n}", kind, T0 + n if ts is None else ts,
                  dwell_ms=dwell, text=text)  # fmt: skip
    return Observation(event, vector)


def apply(observations: list[Observation], params: UpdateParams = PARAMS,
          state: InterestState | None = None) -> InterestState:  # fmt: skip
    return update(state or InterestState.empty(DIM), observations, params)[0]


def test_two_tastes_make_two_interests_not_one_blurred_average() -> None:
    comedy = [obs(n, near(0, 0.1, n)) for n in range(0, 10, 2)]
    horror = [obs(n, near(1, 0.1, n)) for n in range(1, 10, 2)]
    state = apply(comedy + horror)
    assert state.n_interests == 2
    units = interest_units(state)
    assert sorted(int(np.argmax(u)) for u in units) == [0, 1]
    assert all(u.max() > 0.95 for u in units)  # each is one taste, the average would be 0.71
    assert sorted(state.interest_weights) == pytest.approx([5.0, 5.0], rel=1e-3)


def test_at_most_k_interests_the_newest_taste_gets_a_row() -> None:
    params = UpdateParams(interests=3)
    state = apply([obs(n, near(n, 0.0, n)) for n in range(5)], params)
    assert state.n_interests == 3
    alone = [int(np.argmax(u)) for u in interest_units(state) if u.max() > 0.99]
    assert 4 in alone  # the two closest were merged to make room for the newest taste


def test_an_interest_not_fed_fades_out() -> None:
    old = apply([obs(0, near(0, 0.0, 0))])
    later = T0 + 40 * PARAMS.half_life_s  # 2**-40 of its weight is left: below the prune share
    state = apply([obs(1, near(1, 0.0, 1), ts=later)], state=old)
    assert state.n_interests == 1 and int(np.argmax(interest_units(state)[0])) == 1


def test_a_dislike_pushes_away_filters_the_item_and_weakens_its_interest() -> None:
    liked = [obs(n, near(0, 0.05, n)) for n in range(3)] + [obs(3, near(1, 0.05, 3))]
    before = apply(liked)
    disliked = obs(4, near(1, 0.05, 4), EventType.DISLIKE, item="bad")
    after = apply([disliked], state=before)
    assert after.n_by_type == (0, 4, 0, 1) and after.n_events == 5
    assert "bad" in after.seen_items() and after.disliked_items() == ("bad",)
    assert after.short_term[1] < before.short_term[1]  # pushed away from the disliked item
    assert after.short_weight == pytest.approx(before.short_weight, rel=1e-3)  # decay only
    assert after.n_interests == 1  # the horror interest (weight 1) was taken off whole
    assert int(np.argmax(interest_units(after)[0])) == 0


def test_a_glance_is_a_negative_browse_and_a_read_a_positive_one() -> None:
    glance = apply([obs(0, near(2, 0.0, 0), EventType.BROWSE, dwell=500)])
    read = apply([obs(0, near(2, 0.0, 0), EventType.BROWSE, dwell=20_000)])
    assert glance.short_term[2] < 0 < read.short_term[2]
    assert glance.n_interests == 0 and read.n_interests == 1
    never = UpdateParams(negative_dwell_ms=0)
    assert apply([obs(0, near(2, 0.0, 0), EventType.BROWSE, dwell=500)], never).short_term[2] > 0


def test_the_latest_comment_words_are_kept_short() -> None:
    text = "loved the noir lighting " * 10
    state = apply([obs(0, near(0, 0, 0), EventType.COMMENT, text="first one"),
                   obs(1, near(0, 0, 1), EventType.COMMENT, text=text)])  # fmt: skip
    assert state.last_comment.startswith("loved the noir lighting")
    assert len(state.last_comment) <= 80 and state.last_comment.endswith("\u2026")
    assert apply([obs(2, near(0, 0, 2))], state=state).last_comment == state.last_comment


def test_replaying_a_batch_leaves_the_interests_as_they_are() -> None:
    batch = [obs(n, near(n % 3, 0.2, n)) for n in range(12)]
    once = apply(batch)
    twice = apply(batch, state=once)  # the same event ids: duplicates, nothing applied
    assert twice.n_duplicates == len(batch) and twice.interest_weights == once.interest_weights
    np.testing.assert_array_equal(twice.interests, once.interests)
    assert decode_state(encode_state(once)).n_interests == once.n_interests


def test_bad_interest_settings_and_rows_are_refused() -> None:
    for bad in ({"interests": 0}, {"interests": 17}, {"interest_join_cos": 2.0},
                {"interest_prune_share": 1.0}, {"negative_dwell_ms": -1}):  # fmt: skip
        with pytest.raises(ParamsError):
            UpdateParams(**bad)  # type: ignore[arg-type]
    empty = InterestState.empty(DIM)
    for rows, weights in ((np.ones((2, DIM)), (1.0,)), (np.ones((1, DIM)), (0.0,)),
                          (np.ones((17, DIM)), (1.0,) * 17), (np.ones((1, 3)), (1.0,))):
        with pytest.raises(StateError):
            dataclasses.replace(empty, interests=rows, interest_weights=weights)
