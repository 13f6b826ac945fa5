"""Round trips, failure modes and the size budget of the interest-state codec."""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np
import pytest

from interest_state import (
    CODEC_VERSION,
    CodecError,
    Event,
    EventType,
    InterestState,
    Observation,
    StateError,
    UpdateParams,
    decode_state,
    encode_state,
    event_id_hash,
    update,
)


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _full_state(
    dim: int = 384, n: int = 80, prefix: str = "item", long: bool = True, long_dim: int = 64
):
    """A state with both rings full, built through the real update; the long-term vector
    lives in a sequence model's own ``long_dim``-dim space."""
    rng = np.random.default_rng(7)
    obs = [
        Observation(
            Event(f"ev-{i}", "u1", f"{prefix}{i:03d}", EventType(i % 3), 1.7e9 + 60 * i, 5_000,
                  source=f"events.{i % 3}/{i % 2}", offset=i),
            _unit(rng, dim),
            _unit(rng, dim) if i % 3 == 2 else None,
        )
        for i in range(n)
    ]
    state, _ = update(InterestState.empty(dim), obs, UpdateParams())
    return state.with_long_term(_unit(rng, long_dim), "seq-v1") if long else state


def _assert_same(a: InterestState, b: InterestState) -> None:
    assert b.dim == a.dim
    np.testing.assert_allclose(b.short_term, a.short_term, rtol=0, atol=2e-3 * a.short_weight)
    if a.long_term is None:
        assert b.long_term is None
    else:
        assert b.long_term is not None
        np.testing.assert_allclose(b.long_term, a.long_term, atol=2e-3)
    exact = (
        "short_weight",
        "long_term_version",
        "updated_ts",
        "recent_items",
        "recent_types",
        "recent_ts",
        "recent_event_ids",
        "n_events",
        "n_by_type",
        "n_duplicates",
        "applied_offsets",
    )
    for name in exact:
        assert getattr(b, name) == getattr(a, name), name


@pytest.mark.parametrize("long", [True, False])
def test_round_trip_keeps_every_field(long: bool) -> None:
    state = _full_state(dim=32, long=long)
    _assert_same(state, decode_state(encode_state(state)))


def test_round_trip_empty_state() -> None:
    state = InterestState.empty(16)
    decoded = decode_state(encode_state(state))
    _assert_same(state, decoded)
    assert decoded.interest_vector() is None


def test_round_trip_unicode_ids_and_version() -> None:
    state = _full_state(dim=8, n=5, prefix="фильм-🎬-").with_long_term(np.ones(8), "версия-β")
    decoded = decode_state(encode_state(state))
    assert decoded.recent_items[0] == "фильм-🎬-000"
    assert decoded.long_term_version == "версия-β"
    _assert_same(state, decoded)


def test_large_decayed_sum_does_not_overflow_float16() -> None:
    vector = np.full(4, 5e5, dtype=np.float32)  # far above float16's max of 65504
    state = dataclasses.replace(InterestState.empty(4), short_term=vector, short_weight=1e6)
    decoded = decode_state(encode_state(state))
    np.testing.assert_allclose(decoded.short_term, vector, rtol=1e-3)


@pytest.mark.parametrize("long_dim", [64, 384])
def test_full_user_fits_the_size_budget(long_dim: int) -> None:
    state = _full_state(dim=384, n=80, prefix="mov", long_dim=long_dim)  # ids like "mov042"
    assert len(state.recent_items) == 50 and len(state.recent_event_ids) == 64
    assert state.long_term is not None and state.long_dim == long_dim
    # 4 KiB as before the interest centroids, and each centroid a float16 vector and 2 floats
    assert state.n_interests == UpdateParams().interests
    assert len(encode_state(state)) <= 4096 + state.n_interests * (384 * 2 + 16)


@pytest.mark.parametrize("long_dim", [1, 8, 64, 500])
def test_long_term_keeps_its_own_length(long_dim: int) -> None:
    state = _full_state(dim=32, n=10, long_dim=long_dim)
    decoded = decode_state(encode_state(state))
    assert decoded.long_dim == long_dim and decoded.dim == 32
    _assert_same(state, decoded)
    assert decode_state(encode_state(decoded.with_long_term(None, ""))).long_term is None


# Written by codec version 1 (before long_dim): dim 4, three events m0..m2, long_term
# [0.5, -1, 2, 0.25] tagged "seq-v1"; and an empty dim-4 state.
V1_STATE = bytes.fromhex(
    "4953010104000000b3000000e9acea7b1aa40a409203d172f11302409a2e9021687002400000005efc54d941"
    "030000000000000001000000000000000100000000000000010000000000000000000000000000000300030006"
    "007365712d7631b4301137153b0000f132f1b6f13af12e00010200000040fc54d9410000004ffc54d9410000005e"
    "fc54d94102006d3002006d3102006d32f58098549b7343825d1a9c6e7f295033c7483f303a5d735344982f07"
)
V1_EMPTY = bytes.fromhex("49530100040000006600000000" + "00" * 85 + "8c0f9179")


def test_version_1_bytes_still_decode() -> None:
    state = decode_state(V1_STATE)
    assert (state.dim, state.long_dim, state.long_term_version) == (4, 4, "seq-v1")
    assert state.long_term is not None
    np.testing.assert_allclose(state.long_term, [0.5, -1.0, 2.0, 0.25], atol=2e-3)
    np.testing.assert_allclose(state.short_term, [0.33205, 0.99808, 2.0, 0.0], atol=2e-3)
    assert state.recent_items == ("m0", "m1", "m2") and state.recent_types == (0, 1, 2)
    assert state.recent_ts == (1.7e9, 1.7e9 + 60, 1.7e9 + 120) and state.n_events == 3
    again = decode_state(encode_state(state))  # re-encoded as the current version
    assert encode_state(state)[2] == CODEC_VERSION == 4
    _assert_same(state, again)
    empty = decode_state(V1_EMPTY)
    assert empty.dim == 4 and empty.long_term is None and empty.n_events == 0


# Written by codec version 2 (before applied offsets): dim 4, events e0..e2 on m0..m2 (browse
# with 5 s dwell, click, comment), no long_term.
V2_STATE = bytes.fromhex(
    "4953020004000000a9000000e9acea7b1aa40a409203d172f113024000000000000000000000005efc54d941"
    "0300000000000000010000000000000001000000000000000100000000000000000000000000000003000300"
    "000000000000b4301137153b000000010200000040fc54d9410000004ffc54d9410000005efc54d94102006d"
    "3002006d3102006d32142be83ad5e1b511040f4ff5515e5d1b78ff0e2f0835d1fe3e222525"
)


def test_version_2_bytes_decode_without_applied_offsets() -> None:
    state = decode_state(V2_STATE)
    assert state.applied_offsets == () and state.n_by_type == (1, 1, 1, 0) and state.n_events == 3
    np.testing.assert_allclose(state.short_term, [0.33205, 0.99808, 2.0, 0.0], atol=2e-3)
    assert state.recent_event_ids == tuple(event_id_hash(f"e{i}") for i in range(3))
    marked = dataclasses.replace(state, applied_offsets=(("clicks/0", 7), ("views/3", 2**40)))
    again = decode_state(encode_state(marked))
    assert encode_state(marked)[2] == 4 and again.applied_offsets == marked.applied_offsets
    _assert_same(marked, again)


# Written by codec version 3 (before dislikes, interest centroids and comment words): dim 4,
# events e0..e2 on m0..m2 (browse with 5 s dwell, click, comment) at offsets 10..12 of
# events.click/1, no long_term.
V3_STATE = bytes.fromhex(
    "4953030004000000c3000000e9acea7b1aa40a409203d172f113024000000000000000000000005efc54d941"
    "03000000000000000100000000000000010000000000000001000000000000000000000000000000030003000000"
    "000000000100b4301137153b000000010200000040fc54d9410000004ffc54d9410000005efc54d94102006d3002"
    "006d3102006d32142be83ad5e1b511040f4ff5515e5d1b78ff0e2f0835d1fe0e006576656e74732e636c69636b2f"
    "310c000000000000005f66fe7d"
)


def test_version_3_bytes_decode_without_interests_or_dislikes() -> None:
    state = decode_state(V3_STATE)
    assert state.applied_offsets == (("events.click/1", 12),) and state.n_events == 3
    assert state.n_by_type == (1, 1, 1, 0) and state.n_interests == 0 and state.last_comment == ""
    np.testing.assert_allclose(state.short_term, [0.33205, 0.99808, 2.0, 0.0], atol=2e-3)
    # the next event starts the centroids; the state is written as version 4 from then on
    more = Observation(Event("e3", "u", "m3", EventType.CLICK, 1.7e9 + 180), np.eye(4)[3])
    after, _ = update(state, [more], UpdateParams())
    assert after.n_interests == 1 and encode_state(after)[2] == 4
    _assert_same(after, decode_state(encode_state(after)))


def test_interests_dislikes_and_comment_words_round_trip() -> None:
    state = _full_state()
    worded = dataclasses.replace(state, last_comment="a film noir I loved \u00e9", n_by_type=(
        *state.n_by_type[:3], 5))  # fmt: skip
    again = decode_state(encode_state(worded))
    assert again.n_by_type == worded.n_by_type and again.last_comment == worded.last_comment
    assert again.interest_weights == worded.interest_weights and worded.n_interests >= 2
    scale = max(worded.interest_weights)
    np.testing.assert_allclose(again.interests, worded.interests, atol=2e-3 * scale)


def test_applied_offsets_must_be_sorted_unique_and_in_range() -> None:
    empty = InterestState.empty(4)
    for bad in ((("b", 1), ("a", 2)), (("a", 1), ("a", 2)), (("a", -1),), (("a", 2**63),)):
        with pytest.raises(StateError, match="applied_offsets"):
            dataclasses.replace(empty, applied_offsets=bad)


def test_a_long_dim_that_contradicts_the_flags_is_corrupt() -> None:
    data = bytearray(encode_state(_full_state(dim=8, n=3, long=False)))
    offset = 14 + struct.calcsize("<ddddQQQQQHHH")
    struct.pack_into("<I", data, offset, 16)  # claims a 16-dim long_term, flags say none
    struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
    with pytest.raises(CodecError, match="long_dim"):
        decode_state(bytes(data))


@pytest.mark.parametrize("cut", [0, 3, 11, 20, -1, -200])
def test_truncated_bytes_raise_codec_error(cut: int) -> None:
    data = encode_state(_full_state(dim=32, n=10))
    with pytest.raises(CodecError, match="truncated"):
        decode_state(data[:cut])


def test_flipped_bit_is_detected() -> None:
    data = bytearray(encode_state(_full_state(dim=32, n=10)))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(CodecError, match="checksum"):
        decode_state(bytes(data))


def test_trailing_bytes_are_rejected() -> None:
    data = encode_state(_full_state(dim=32, n=10))
    with pytest.raises(CodecError, match="trailing"):
        decode_state(data + b"\x00")


def test_unknown_version_names_both_versions() -> None:
    data = bytearray(encode_state(InterestState.empty(8)))
    data[2] = CODEC_VERSION + 1
    with pytest.raises(CodecError, match=rf"version {CODEC_VERSION + 1}.*reads 1, 2"):
        decode_state(bytes(data))


def test_foreign_bytes_are_rejected_by_magic() -> None:
    with pytest.raises(CodecError, match="magic"):
        decode_state(b"\x80\x04" + bytes(40))  # the start of a pickle, say


def test_header_is_the_documented_one() -> None:
    data = encode_state(InterestState.empty(8))
    magic, version, flags, dim, total = struct.unpack_from("<2sBBII", data)
    assert (magic, version, flags, dim, total) == (b"IS", CODEC_VERSION, 0, 8, len(data))
