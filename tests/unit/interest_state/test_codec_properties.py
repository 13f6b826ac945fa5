"""Properties of the interest-state codec: any bytes decode to a state or raise ``CodecError``
(never anything else: a stored state that does not decode is started afresh, it must not stop
the worker), and every valid state survives a round trip.

Hypothesis runs derandomized (the same examples in every run and in CI) with no example
database; ``max_examples`` keeps each property to a second or two.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interest_state import (
    CODEC_VERSION,
    CodecError,
    InterestState,
    decode_state,
    encode_state,
)

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
HEADER = struct.Struct("<2sBBII")
U64 = st.integers(0, 2**64 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
IDS = st.text(max_size=12)  # ids as the contract lets them in: no lone surrogate


def _decodes_or_codec_error(data: bytes) -> InterestState | None:
    try:
        state = decode_state(data)
    except CodecError as exc:
        assert str(exc)
        return None
    assert decode_state(encode_state(state)).dim == state.dim  # what decodes, encodes again
    return state


def _framed(version: int, flags: int, dim: int, body: bytes) -> bytes:
    """``body`` in a header and CRC that pass the frame checks, so the body parser runs."""
    total = HEADER.size + len(body) + 4
    head = HEADER.pack(b"IS", version, flags, dim, total) + body
    return head + struct.pack("<I", zlib.crc32(head))


@st.composite
def states(draw: st.DrawFn) -> InterestState:
    dim = draw(st.integers(1, 16))
    n = draw(st.integers(0, 12))
    long_dim = draw(st.sampled_from([0, 1, dim, 7]))
    vector = st.lists(st.floats(-1e6, 1e6), min_size=dim, max_size=dim)
    return InterestState(
        dim=dim,
        short_term=np.array(draw(vector), dtype=np.float32),
        short_weight=draw(st.floats(0, 1e12)),
        long_term=None if long_dim == 0 else np.array(
            draw(st.lists(st.floats(-1e3, 1e3), min_size=long_dim, max_size=long_dim)),
            dtype=np.float32),
        long_term_version=draw(st.text(max_size=20)),
        updated_ts=draw(FINITE),
        recent_items=tuple(draw(st.lists(IDS, min_size=n, max_size=n))),
        recent_types=tuple(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))),
        recent_ts=tuple(draw(st.lists(FINITE, min_size=n, max_size=n))),
        recent_event_ids=tuple(draw(st.lists(U64, max_size=70))),
        n_events=draw(U64),
        n_by_type=(draw(U64), draw(U64), draw(U64), draw(U64)),
        n_duplicates=draw(U64),
    )  # fmt: skip


@PROPERTY
@given(data=st.binary(max_size=400))
def test_any_bytes_decode_or_raise_codec_error(data: bytes) -> None:
    _decodes_or_codec_error(data)


@PROPERTY
@given(
    version=st.sampled_from([1, 2, CODEC_VERSION + 1]),
    flags=st.integers(0, 3),
    dim=st.integers(0, 24) | st.integers(0, 2**32 - 1),
    body=st.binary(max_size=600),
)
def test_any_body_in_a_valid_frame_decodes_or_raises_codec_error(
    version: int, flags: int, dim: int, body: bytes
) -> None:
    _decodes_or_codec_error(_framed(version, flags, dim, body))


@PROPERTY
@given(state=states(), at=st.integers(0, 10_000), patch=st.binary(min_size=1, max_size=16))
def test_a_valid_state_with_bytes_overwritten_and_its_crc_fixed_decodes_or_raises_codec_error(
    state: InterestState, at: int, patch: bytes
) -> None:
    data = bytearray(encode_state(state)[:-4])
    start = HEADER.size + at % max(1, len(data) - HEADER.size)
    data[start : start + len(patch)] = patch[: len(data) - start]
    _, version, flags, dim, _ = HEADER.unpack_from(data)
    _decodes_or_codec_error(_framed(version, flags, dim, bytes(data[HEADER.size :])))


@PROPERTY
@given(state=states(), scalars=st.lists(st.floats() | st.sampled_from([1e308, -1e308, 7e4]),
                                        min_size=4, max_size=4))
def test_any_weight_norms_and_time_in_a_valid_state_decode_or_raise_codec_error(
    state: InterestState, scalars: list[float]
) -> None:
    """short_weight, short_norm, long_norm, updated_ts (a huge norm overflows float32)."""
    data = bytearray(encode_state(state)[:-4])
    struct.pack_into("<dddd", data, HEADER.size, *scalars)
    _, version, flags, dim, _ = HEADER.unpack_from(data)
    _decodes_or_codec_error(_framed(version, flags, dim, bytes(data[HEADER.size :])))


@PROPERTY
@given(state=states())
def test_every_valid_state_survives_a_round_trip(state: InterestState) -> None:
    decoded = decode_state(encode_state(state))
    exact = ("dim", "short_weight", "long_term_version", "updated_ts", "recent_items",
             "recent_types", "recent_ts", "recent_event_ids", "n_events", "n_by_type",
             "n_duplicates", "long_dim")  # fmt: skip
    for name in exact:
        assert getattr(decoded, name) == getattr(state, name), name
    # vectors travel as a float16 direction and a float64 norm: relative precision ~1e-3
    for before, after in ((state.short_term, decoded.short_term),
                          (state.long_term, decoded.long_term)):  # fmt: skip
        if before is None:
            assert after is None
            continue
        assert after is not None
        norm = float(np.linalg.norm(before.astype(np.float64)))
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-3 * norm + 1e-30)
