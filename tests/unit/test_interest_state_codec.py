"""Round trips, failure modes and the size budget of the interest-state codec."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from interest_state import (
    CODEC_VERSION,
    CodecError,
    Event,
    EventType,
    InterestState,
    Observation,
    UpdateParams,
    decode_state,
    encode_state,
    update,
)


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _full_state(dim: int = 384, n: int = 80, prefix: str = "item", long: bool = True):
    """A state with both rings full, built through the real update."""
    rng = np.random.default_rng(7)
    obs = [
        Observation(
            Event(f"ev-{i}", "u1", f"{prefix}{i:03d}", EventType(i % 3), 1.7e9 + 60 * i, 5_000),
            _unit(rng, dim),
            _unit(rng, dim) if i % 3 == 2 else None,
        )
        for i in range(n)
    ]
    state, _ = update(InterestState.empty(dim), obs, UpdateParams())
    return state.with_long_term(_unit(rng, dim), "seq-v1") if long else state


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


def test_full_user_fits_the_size_budget() -> None:
    state = _full_state(dim=384, n=80, prefix="mov")  # 6-char ids: "mov042"
    assert len(state.recent_items) == 50 and len(state.recent_event_ids) == 64
    assert state.long_term is not None
    assert len(encode_state(state)) <= 4096


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
    with pytest.raises(CodecError, match=rf"version {CODEC_VERSION + 1}.*reads {CODEC_VERSION}"):
        decode_state(bytes(data))


def test_foreign_bytes_are_rejected_by_magic() -> None:
    with pytest.raises(CodecError, match="magic"):
        decode_state(b"\x80\x04" + bytes(40))  # the start of a pickle, say


def test_header_is_the_documented_one() -> None:
    data = encode_state(InterestState.empty(8))
    magic, version, flags, dim, total = struct.unpack_from("<2sBBII", data)
    assert (magic, version, flags, dim, total) == (b"IS", CODEC_VERSION, 0, 8, len(data))
