"""The update rule: decay, event weights, de-duplication, order independence, bounds."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from interest_state import (
    DimensionError,
    Event,
    EventType,
    InterestState,
    Observation,
    ObservationError,
    ParamsError,
    StateError,
    UpdateParams,
    encode_state,
    event_id_hash,
    update,
)

DIM = 8
T0 = 1_700_000_000.0
PARAMS = UpdateParams()
HL = PARAMS.half_life_s


def _basis(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i] = 1.0
    return v


def _obs(
    eid: str,
    ts: float,
    vec: np.ndarray,
    kind: EventType = EventType.CLICK,
    *,
    item: str | None = None,
    dwell: int | None = None,
    text_vec: np.ndarray | None = None,
) -> Observation:
    event = Event(eid, "u1", item or f"item-{eid}", kind, ts, dwell_ms=dwell)
    return Observation(event, vec, text_vec)


def _random_batch(n: int, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = rng.normal(size=DIM).astype(np.float32)
        ts = T0 + float(rng.uniform(0, 3 * HL))
        out.append(
            _obs(
                f"e{i}",
                ts,
                v / np.linalg.norm(v),
                EventType(i % 3),
                dwell=i * 997,
                text_vec=_basis(i % DIM),
            )
        )
    return out


def _apply(batch: list[Observation], state: InterestState | None = None) -> InterestState:
    new, _ = update(state or InterestState.empty(DIM), batch, PARAMS)
    return new


def test_weight_halves_after_one_half_life() -> None:
    state = _apply([_obs("a", T0, _basis(0)), _obs("b", T0 + HL, _basis(1))])
    np.testing.assert_allclose(state.short_term[:2], [0.5, 1.0], rtol=1e-6)
    assert state.short_weight == pytest.approx(1.5)
    assert state.updated_ts == T0 + HL


def test_late_event_is_decayed_and_time_never_moves_back() -> None:
    state = _apply([_obs("b", T0 + 2 * HL, _basis(1))])
    state = _apply([_obs("a", T0, _basis(0))], state)
    assert state.updated_ts == T0 + 2 * HL
    np.testing.assert_allclose(state.short_term[:2], [0.25, 1.0], rtol=1e-6)
    assert state.recent_items == ("item-a", "item-b")  # history is kept in event-time order


def test_comment_moves_interest_more_than_click_more_than_browse() -> None:
    base = _apply([_obs("seed", T0, _basis(0))])

    def pull(kind: EventType) -> float:
        vector = _apply([_obs("x", T0, _basis(1), kind)], base).interest_vector()
        assert vector is not None
        return float(vector[1])

    assert pull(EventType.COMMENT) > pull(EventType.CLICK) > pull(EventType.BROWSE) > 0.0


def test_comment_pushes_with_its_text_vector() -> None:
    comment = _obs("c", T0, _basis(0), EventType.COMMENT, text_vec=_basis(1))
    state = _apply([comment])
    share = PARAMS.comment_text_share
    expected = PARAMS.weight_comment * np.array([1 - share, share])
    np.testing.assert_allclose(state.short_term[:2], expected, rtol=1e-6)


def test_longer_dwell_weighs_a_browse_more_up_to_the_full_dwell() -> None:
    def weight(dwell: int | None) -> float:
        return _apply([_obs("b", T0, _basis(0), EventType.BROWSE, dwell=dwell)]).short_weight

    full = PARAMS.dwell_full_ms
    short = PARAMS.negative_dwell_ms  # shorter is a glance away: see the negative-signal tests
    assert weight(short) < weight(full // 2) < weight(full) == weight(10 * full)
    assert weight(short) == pytest.approx((0.5 + short / full) * PARAMS.weight_browse)
    assert weight(full) == pytest.approx(1.5 * PARAMS.weight_browse)
    assert weight(None) == pytest.approx(PARAMS.weight_browse)


def test_duplicate_is_a_counted_no_op() -> None:
    batch = _random_batch(10)
    once, first = update(InterestState.empty(DIM), batch, PARAMS)
    twice, second = update(once, batch, PARAMS)
    assert len(first.applied) == 10 and first.duplicates == ()
    assert second.applied == () and len(second.duplicates) == 10
    np.testing.assert_array_equal(twice.short_term, once.short_term)
    assert twice.short_weight == once.short_weight
    assert twice.recent_items == once.recent_items
    assert (twice.n_events, twice.n_duplicates) == (10, 10)


def test_repeat_within_one_call_is_applied_once() -> None:
    obs = _obs("same", T0, _basis(0))
    state, result = update(InterestState.empty(DIM), [obs, obs], PARAMS)
    assert result.applied == ("same",) and result.duplicates == ("same",)
    assert state.short_weight == pytest.approx(PARAMS.weight_click)
    assert state.recent_items == ("item-same",)


def test_arrival_order_does_not_change_the_result() -> None:
    batch = _random_batch(30)
    in_order = _apply(sorted(batch, key=lambda o: o.event.ts))
    shuffled = batch[:]
    random.Random(3).shuffle(shuffled)
    one_call = _apply(shuffled)
    chunked = InterestState.empty(DIM)
    for start in range(0, 30, 7):  # several calls, each holding events from all over the range
        chunked = _apply(shuffled[start : start + 7], chunked)
    for state in (one_call, chunked):
        np.testing.assert_allclose(state.short_term, in_order.short_term, rtol=1e-5, atol=1e-6)
        assert state.short_weight == pytest.approx(in_order.short_weight, rel=1e-9)
        assert state.updated_ts == in_order.updated_ts
        assert state.recent_items == in_order.recent_items
        assert state.n_by_type == in_order.n_by_type


def test_rings_stay_bounded_and_keep_the_newest() -> None:
    params = UpdateParams(history_len=5, dedupe_len=7)
    batch = [_obs(f"e{i}", T0 + i, _basis(i % DIM)) for i in range(20)]
    state, _ = update(InterestState.empty(DIM), batch[:12], params)
    state, _ = update(state, batch[12:], params)
    assert state.recent_items == tuple(f"item-e{i}" for i in range(15, 20))
    assert state.recent_ts == tuple(T0 + i for i in range(15, 20))
    assert state.recent_event_ids == tuple(event_id_hash(f"e{i}") for i in range(13, 20))
    assert state.n_events == 20


def test_bad_observation_rejects_the_whole_batch() -> None:
    good = _obs("ok", T0, _basis(0))
    with pytest.raises(DimensionError, match="'short'"):
        update(InterestState.empty(DIM), [good, _obs("short", T0, np.ones(DIM - 1))], PARAMS)
    nan = np.full(DIM, np.nan, dtype=np.float32)
    with pytest.raises(ObservationError, match="NaN"):
        update(InterestState.empty(DIM), [good, _obs("nan", T0, nan)], PARAMS)
    with pytest.raises(ObservationError, match="ts"):
        update(InterestState.empty(DIM), [_obs("neg", -1.0, _basis(0))], PARAMS)


@pytest.mark.parametrize(
    "field, value",
    [
        ("half_life_s", 0.0),
        ("weight_click", -1.0),
        ("weight_browse", float("nan")),
        ("history_len", 0),
        ("dedupe_len", 1025),
        ("comment_text_share", 1.5),
        ("dwell_full_ms", 0),
    ],
)
def test_params_out_of_range_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ParamsError, match=field):
        UpdateParams(**{field: value})


def test_interest_vector_blends_long_term() -> None:
    assert InterestState.empty(DIM).interest_vector() is None
    state = _apply([_obs("a", T0, 3 * _basis(0))])
    np.testing.assert_allclose(state.interest_vector(), _basis(0))
    both = state.with_long_term(_basis(1) * 5, "seq-v1")
    np.testing.assert_allclose(both.interest_vector(0.0), _basis(0))
    np.testing.assert_allclose(
        both.interest_vector(0.5), (_basis(0) + _basis(1)) / np.sqrt(2), rtol=1e-6
    )
    only_long = InterestState.empty(DIM).with_long_term(_basis(2), "seq-v1")
    np.testing.assert_allclose(only_long.interest_vector(), _basis(2))


def test_a_long_term_vector_of_its_own_length_is_kept_but_not_mixed_in() -> None:
    state = _apply([_obs("a", T0, 3 * _basis(0))])
    other_space = state.with_long_term(np.arange(1.0, 65.0), "seq-v2")
    assert other_space.long_dim == 64 and other_space.dim == DIM
    np.testing.assert_allclose(other_space.interest_vector(0.9), _basis(0))
    assert InterestState.empty(DIM).with_long_term(np.ones(64), "v").interest_vector() is None
    with pytest.raises(StateError, match="non-empty"):
        state.with_long_term(np.ones(0), "v")
    with pytest.raises(StateError, match="NaN"):
        state.with_long_term(np.full(64, np.nan), "v")


def test_state_is_immutable() -> None:
    state = _apply([_obs("a", T0, _basis(0))])
    with pytest.raises(ValueError, match="read-only"):
        state.short_term[0] = 9.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.short_weight = 0.0  # type: ignore[misc]


def test_event_id_hash_is_stable_64_bit() -> None:
    # BLAKE2b-64 values, identical in every process (Python's hash() is salted per process)
    assert event_id_hash("evt-1") == 0xBE436E82DDA15C47
    assert event_id_hash("") == 0xE4A6A0577479B2B4
    assert event_id_hash("evt-2") != event_id_hash("evt-1")


def _positioned(n: int, sources: int = 3) -> list[Observation]:
    """``n`` events of one user spread over ``sources`` logs, each log in offset order."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        source = f"events.{i % sources}/1"
        event = Event(f"e{i}", "u1", f"item-{i % 40}", EventType(i % 3), T0 + 7 * i,
                      dwell_ms=4_000, source=source, offset=100 + i // sources)
        vec = rng.normal(size=DIM).astype(np.float32)
        out.append(Observation(event, vec / np.linalg.norm(vec)))
    return out


def _same(a: InterestState, b: InterestState) -> bool:
    return encode_state(a) == encode_state(b)


def test_a_redelivery_of_any_length_changes_nothing() -> None:
    """A consumer replays a log from its committed offset after a crash: however many events
    that is (here 300, far beyond the 64-id ring), none is applied twice."""
    obs = _positioned(300)
    once, _ = update(InterestState.empty(DIM), obs, PARAMS)
    again, result = update(once, obs, PARAMS)
    assert _same(once, again) and once.n_events == 300 and once.n_duplicates == 0
    assert result.applied == () and result.duplicates == ()
    assert sorted(result.redelivered) == sorted(o.event.event_id for o in obs)
    assert once.applied_offsets == (("events.0/1", 199), ("events.1/1", 199), ("events.2/1", 199))


def test_a_client_resend_at_a_new_offset_is_a_counted_duplicate() -> None:
    first = _positioned(3)
    state, _ = update(InterestState.empty(DIM), first, PARAMS)
    resend = dataclasses.replace(first[0].event, offset=500)
    after, result = update(state, [Observation(resend, first[0].item_vector)], PARAMS)
    assert result.duplicates == ("e0",) and after.n_duplicates == 1 and after.n_events == 3
    assert dict(after.applied_offsets)["events.0/1"] == 500  # its offset is consumed too


def test_events_without_a_position_fall_back_to_the_id_ring() -> None:
    obs = [_obs(f"x{i}", T0 + i, _basis(i % DIM)) for i in range(5)]
    state, _ = update(InterestState.empty(DIM), obs, PARAMS)
    again, result = update(state, obs, PARAMS)
    assert state.applied_offsets == () and result.duplicates == tuple(f"x{i}" for i in range(5))
    assert again.n_events == 5


@pytest.mark.parametrize("seed", range(5))
def test_crashes_and_replays_from_any_committed_offset_end_as_one_clean_pass(seed: int) -> None:
    """Batches of a stream applied in order, with crashes: after each crash the stream is
    replayed from a random earlier point (a commit lagging behind the processed events). The
    final state equals that of one clean pass, event for event."""
    rnd = random.Random(seed)
    obs = _positioned(400)
    clean, _ = update(InterestState.empty(DIM), obs, PARAMS)
    state, position, crashes = InterestState.empty(DIM), 0, 0
    while position < len(obs):
        size = rnd.randint(1, 60)
        state, _ = update(state, obs[position : position + size], PARAMS)
        position += size
        if rnd.random() < 0.3 and crashes < 8:
            crashes += 1
            position = rnd.randint(max(0, position - 250), position)  # uncommitted tail
    assert crashes > 0 and state.n_events == 400 and state.n_duplicates == 0
    np.testing.assert_allclose(state.short_term, clean.short_term, rtol=1e-5, atol=1e-6)
    assert (state.recent_items, state.recent_ts, state.applied_offsets) == (
        clean.recent_items, clean.recent_ts, clean.applied_offsets)  # fmt: skip
