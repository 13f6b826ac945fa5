"""Compact, versioned binary encoding of :class:`InterestState` (no pickle, no JSON).

Layout of version 4, all little-endian::

    header   2s B B I I        magic b"IS", version, flags (bit 0: long_term present),
                               dim, total length in bytes (CRC included)
    scalars  d d d d Q Q Q Q Q short_weight, short_norm, long_norm, updated_ts,
                               n_events, n_browse, n_click, n_comment, n_duplicates
    counts   H H H I H         history entries, dedupe hashes, long_term_version bytes,
                               long_dim (length of long_term; 0 when absent), applied-offset
                               sources
    more     Q B H             n_dislike, interest centroids, last_comment bytes
    body     long_term_version (utf-8); short_term as float16 unit vector (dim * 2 bytes);
             long_term likewise (long_dim * 2 bytes) when flagged; history types (B each),
             history ts (d each), history item ids (H length + utf-8 each); dedupe hashes (Q each);
             applied-offset sources (H length + utf-8 each), their offsets (q each);
             interest weights (d each), their norms (d each), their float16 unit vectors
             (dim * 2 bytes each); last_comment (utf-8)
    trailer  I                 CRC-32 of everything before it

Version 3 is version 4 without the ``more`` counts and what they count (a state read from it
has no dislikes, no interest centroids and no comment words: its centroids start with its next
event).
Version 2 is the same without the applied offsets (a state read from it has none: its events'
redeliveries are caught by the event-id ring only, until its next update records them);
version 1 is version 2 without ``long_dim`` (its long_term, when flagged, has length ``dim``).
:func:`decode_state` reads all four, :func:`encode_state` writes version 4.

Vectors are stored as their direction in float16 plus their norm in float64, so a large
decayed sum cannot overflow float16 and precision is relative (about 1e-3 per component).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from .arrays import FloatVector
from .errors import CodecError, InterestStateError
from .state import InterestState

CODEC_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
MAGIC = b"IS"
_HEADER = struct.Struct("<2sBBII")
_SCALARS = {
    1: struct.Struct("<ddddQQQQQHHH"),
    2: struct.Struct("<ddddQQQQQHHHI"),
    3: struct.Struct("<ddddQQQQQHHHIH"),
    4: struct.Struct("<ddddQQQQQHHHIHQBH"),
}
_CRC = struct.Struct("<I")
_FLAG_LONG = 1
_U16 = 0xFFFF


def encode_state(state: InterestState) -> bytes:
    """Encode ``state`` into bytes that :func:`decode_state` reads back."""
    version = state.long_term_version.encode("utf-8")
    ids = [item.encode("utf-8") for item in state.recent_items]
    sources = [source.encode("utf-8") for source, _ in state.applied_offsets]
    comment = state.last_comment.encode("utf-8")
    too_long = [len(b) for b in (version, *ids, *sources, comment) if len(b) > _U16]
    if too_long or max(len(ids), len(state.recent_event_ids), len(sources)) > _U16:
        raise CodecError("a string or ring is too long for the codec (max 65535)")
    short_dir, short_norm = _direction(state.short_term)
    long_dir, long_norm = (b"", 0.0) if state.long_term is None else _direction(state.long_term)
    scalars = _SCALARS[CODEC_VERSION].pack(
        state.short_weight,
        short_norm,
        long_norm,
        state.updated_ts,
        state.n_events,
        *state.n_by_type[:3],
        state.n_duplicates,
        len(ids),
        len(state.recent_event_ids),
        len(version),
        state.long_dim,
        len(sources),
        state.n_by_type[3],
        state.n_interests,
        len(comment),
    )
    interests = [_direction(row) for row in state.interests]
    body = b"".join(
        [
            scalars,
            version,
            short_dir,
            long_dir,
            bytes(state.recent_types),
            struct.pack(f"<{len(ids)}d", *state.recent_ts),
            b"".join(struct.pack("<H", len(b)) + b for b in ids),
            struct.pack(f"<{len(state.recent_event_ids)}Q", *state.recent_event_ids),
            b"".join(struct.pack("<H", len(b)) + b for b in sources),
            struct.pack(f"<{len(sources)}q", *(offset for _, offset in state.applied_offsets)),
            struct.pack(f"<{len(interests)}d", *state.interest_weights),
            struct.pack(f"<{len(interests)}d", *(norm for _, norm in interests)),
            *(direction for direction, _ in interests),
            comment,
        ]
    )
    flags = _FLAG_LONG if state.long_term is not None else 0
    total = _HEADER.size + len(body) + _CRC.size
    head = _HEADER.pack(MAGIC, CODEC_VERSION, flags, state.dim, total) + body
    return head + _CRC.pack(zlib.crc32(head))


def decode_state(data: bytes) -> InterestState:
    """Decode bytes from :func:`encode_state`; raise :class:`CodecError` when they are bad."""
    version, flags, dim = _check_frame(data)
    reader = _Reader(memoryview(data)[: len(data) - _CRC.size], _HEADER.size)
    try:
        return _read_state(reader, version, flags, dim)
    except CodecError:
        raise
    except (InterestStateError, UnicodeDecodeError, struct.error, ValueError) as exc:
        raise CodecError(f"corrupt interest state: {exc}") from exc


def _direction(vector: FloatVector) -> tuple[bytes, float]:
    as64 = vector.astype(np.float64)
    norm = float(np.linalg.norm(as64))
    unit = as64 / norm if norm > 0.0 else as64
    return unit.astype("<f2").tobytes(), norm


def _check_frame(data: bytes) -> tuple[int, int, int]:
    """Validate magic, version, length and CRC; return ``(version, flags, dim)``."""
    if len(data) < _HEADER.size + _CRC.size:
        raise CodecError(f"truncated interest state: {len(data)} bytes, header needs more")
    magic, version, flags, dim, total = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CodecError(f"not an interest state: magic {magic!r}, expected {MAGIC!r}")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise CodecError(
            f"unsupported interest state codec version {version} (this build reads {readable})"
        )
    if len(data) < total:
        raise CodecError(f"truncated interest state: {len(data)} of {total} bytes")
    if len(data) > total:
        raise CodecError(f"corrupt interest state: {len(data) - total} trailing bytes")
    (crc,) = _CRC.unpack_from(data, total - _CRC.size)
    if crc != zlib.crc32(memoryview(data)[: total - _CRC.size]):
        raise CodecError("corrupt interest state: checksum mismatch")
    if flags & ~_FLAG_LONG:
        raise CodecError(f"corrupt interest state: unknown flags {flags:#x}")
    return int(version), int(flags), int(dim)


class _Reader:
    """Reads consecutive fields from a buffer, failing with :class:`CodecError` at its end."""

    def __init__(self, buffer: memoryview, offset: int) -> None:
        self._buffer = buffer
        self._offset = offset

    def take(self, size: int) -> memoryview:
        end = self._offset + size
        if end > len(self._buffer):
            raise CodecError(
                f"corrupt interest state: field at offset {self._offset} needs {size} bytes, "
                f"{len(self._buffer) - self._offset} left"
            )
        chunk = self._buffer[self._offset : end]
        self._offset = end
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def vector(self, dim: int, norm: float) -> npt.NDArray[np.float32]:
        unit = np.frombuffer(self.take(2 * dim), dtype="<f2").astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # a corrupt norm: the state refuses it
            return (unit * norm).astype(np.float32)

    def done(self) -> None:
        if self._offset != len(self._buffer):
            raise CodecError(
                f"corrupt interest state: {len(self._buffer) - self._offset} unread bytes"
            )


def _read_state(reader: _Reader, codec_version: int, flags: int, dim: int) -> InterestState:
    scalars = reader.unpack(_SCALARS[codec_version].format)
    long_dim = scalars[12] if codec_version >= 2 else dim
    if codec_version >= 2 and bool(flags & _FLAG_LONG) != (long_dim > 0):
        raise CodecError(f"corrupt interest state: long_dim {long_dim} with flags {flags:#x}")
    (
        weight,
        short_norm,
        long_norm,
        updated_ts,
        n_events,
        n_browse,
        n_click,
        n_comment,
        n_dup,
        n_hist,
        n_dedupe,
        n_version,
    ) = scalars[:12]
    version = str(reader.take(n_version), "utf-8")
    short = reader.vector(dim, short_norm)
    long = reader.vector(long_dim, long_norm) if flags & _FLAG_LONG else None
    types = tuple(reader.take(n_hist))
    stamps = reader.unpack(f"<{n_hist}d")
    items = tuple(str(reader.take(reader.unpack("<H")[0]), "utf-8") for _ in range(n_hist))
    hashes = reader.unpack(f"<{n_dedupe}Q")
    n_sources = scalars[13] if codec_version >= 3 else 0
    sources = [str(reader.take(reader.unpack("<H")[0]), "utf-8") for _ in range(n_sources)]
    offsets = reader.unpack(f"<{n_sources}q")
    n_dislike, n_interests, comment_len = scalars[14:17] if codec_version >= 4 else (0, 0, 0)
    weights = reader.unpack(f"<{n_interests}d")
    norms = reader.unpack(f"<{n_interests}d")
    rows = [reader.vector(dim, norm) for norm in norms]
    comment = str(reader.take(comment_len), "utf-8")
    reader.done()
    return InterestState(
        dim=dim,
        short_term=short,
        short_weight=weight,
        long_term=long,
        long_term_version=version,
        updated_ts=updated_ts,
        recent_items=items,
        recent_types=types,
        recent_ts=stamps,
        recent_event_ids=hashes,
        n_events=n_events,
        n_by_type=(n_browse, n_click, n_comment, n_dislike),
        n_duplicates=n_dup,
        applied_offsets=tuple(zip(sources, offsets, strict=True)),
        interests=np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32),
        interest_weights=weights,
        last_comment=comment,
    )
