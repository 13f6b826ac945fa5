"""Catalog items on their way into the item index: encoded so that one bad text costs only its
own item, and deleted rows kept out of what the candidate indexes and the rankers read.

:func:`encode_items` encodes a batch in one encoder call; when that call fails, it encodes the
items one by one, so the items that fail alone (and those whose vector is not finite) are
returned with their reason, for the catalog feed to dead-letter, and the others are indexed.
With a :class:`streams.worker.vector_cache.VectorCache` only the texts it does not hold are
encoded (a restart re-encodes only new and changed texts).

A deleted item keeps its row in :class:`encoders.ItemIndex` (see there); :func:`live_known` and
:func:`live_long_items` clear the ``known`` flag of deleted rows in what a candidate index is
synced from and in the sequence model's items a batch is ranked with, so neither offers them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from encoders import TextEncoder
from interest_state import LongTermItems
from streams.contract import ItemRecord
from streams.worker.vector_cache import VectorCache

__all__ = ["encode_items", "failure_reason", "live_known", "live_long_items"]

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 200
"""An exception's message is cut to this many characters in a dead-letter reason."""


def failure_reason(what: str, exc: BaseException) -> str:
    """``<what>: <Type>: <message, at most MAX_MESSAGE_CHARS>``: a dead-letter reason for an
    exception nobody foresaw (its message may be huge, or hold the record itself)."""
    reason = f"{what}: {type(exc).__name__}"
    try:  # a lone surrogate would make the reason itself unsendable
        message = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
    except Exception:  # an exception whose str() fails: its type says enough
        message = ""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    return f"{reason}: {message}" if message else reason


def encode_items(
    encoder: TextEncoder, items: Sequence[ItemRecord], cache: VectorCache | None = None
) -> tuple[list[ItemRecord], np.ndarray, list[tuple[ItemRecord, str]]]:
    """The items that encode, their vectors (one finite row each, in that order), and the items
    that do not, each with its reason.

    With a ``cache``, only the texts it does not hold are encoded (one call); their vectors are
    added to it and written (one :meth:`VectorCache.flush` per call)."""
    if cache is None:
        return _encode(encoder, items)
    found = cache.lookup([item.text for item in items])
    misses = [item for item, vector in zip(items, found, strict=True) if vector is None]
    new_items, new_vectors, failed = _encode(encoder, misses) if misses else ([], None, [])
    if new_vectors is not None and new_items:
        cache.put([item.text for item in new_items], new_vectors)
    cache.flush()
    new = {id(item): n for n, item in enumerate(new_items)}
    kept: list[ItemRecord] = []
    rows: list[np.ndarray] = []
    for item, vector in zip(items, found, strict=True):
        if vector is None and new_vectors is not None and id(item) in new:
            vector = new_vectors[new[id(item)]]
        if vector is not None:
            kept.append(item)
            rows.append(vector)
    return kept, np.stack(rows) if rows else _empty(encoder), failed


def _empty(encoder: TextEncoder) -> np.ndarray:
    return np.empty((0, encoder.dim), dtype=np.float32)


def _encode(
    encoder: TextEncoder, items: Sequence[ItemRecord]
) -> tuple[list[ItemRecord], np.ndarray, list[tuple[ItemRecord, str]]]:
    """:func:`encode_items` without a cache: one call, one by one when it fails."""
    try:
        vectors = encoder.encode([item.text for item in items])
    except Exception as exc:  # one bad text must not sink the batch: find it
        log.warning("encoding %d catalog items failed (%s): encoding them one by one",
                    len(items), type(exc).__name__)  # fmt: skip
        return _one_by_one(encoder, items)
    finite = np.isfinite(vectors).all(axis=1)
    if finite.all():
        return list(items), vectors, []
    kept = [item for item, ok in zip(items, finite, strict=True) if ok]
    failed = [(item, _NOT_FINITE) for item, ok in zip(items, finite, strict=True) if not ok]
    return kept, vectors[finite], failed


_NOT_FINITE = "could not be encoded: its text encodes to NaN or infinity"


def _one_by_one(
    encoder: TextEncoder, items: Sequence[ItemRecord]
) -> tuple[list[ItemRecord], np.ndarray, list[tuple[ItemRecord, str]]]:
    kept: list[ItemRecord] = []
    rows: list[np.ndarray] = []
    failed: list[tuple[ItemRecord, str]] = []
    for item in items:
        try:
            vector = encoder.encode([item.text])[0]
        except Exception as exc:  # this item's own failure: its dead letter says why
            failed.append((item, failure_reason("could not be encoded", exc)))
            continue
        if np.isfinite(vector).all():
            kept.append(item)
            rows.append(vector)
        else:
            failed.append((item, _NOT_FINITE))
    return kept, np.stack(rows) if rows else _empty(encoder), failed


def live_known(
    deleted: npt.NDArray[np.int64], n: int, known: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.bool_] | None:
    """``known`` (``None``: every one of the ``n`` rows) with the ``deleted`` rows cleared; as
    given when no row is deleted, so a catalog without deletes syncs as it always did."""
    if not len(deleted):
        return known
    return _cleared(np.ones(n, dtype=bool) if known is None else known, deleted)


def live_long_items(deleted: npt.NDArray[np.int64], items: LongTermItems) -> LongTermItems:
    """``items`` without a vector at the ``deleted`` rows (the same object when none is)."""
    if not len(deleted):
        return items
    return LongTermItems(items.version, items.vectors, _cleared(items.known, deleted))


def _cleared(known: npt.NDArray[np.bool_], deleted: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    flags = known.copy()
    flags[deleted[deleted < len(flags)]] = False
    return flags
