"""Catalog items on their way into the index: one bad text costs only its own item; deleted
rows are left out of what the candidate indexes sync from."""

from __future__ import annotations

import numpy as np

from interest_state import LongTermItems
from streams.contract import ItemRecord
from streams.worker.items import encode_items, failure_reason, live_known, live_long_items


class _Encoder:
    """Unit vectors of width 2; ``nan`` in a text gives a NaN row, ``fail`` fails the call."""

    dim = 2

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        if any("fail" in t for t in texts):
            raise ValueError("tokenizer panicked")
        return np.array([[np.nan, 0.0] if "nan" in t else [1.0, 0.0] for t in texts], np.float32)


def _items(*texts: str) -> list[ItemRecord]:
    return [ItemRecord(str(n), t, t, ()) for n, t in enumerate(texts)]


def test_a_batch_that_encodes_is_one_call_and_non_finite_rows_are_refused() -> None:
    encoder = _Encoder()
    items = _items("a", "nan b", "c")
    kept, vectors, failed = encode_items(encoder, items)  # type: ignore[arg-type]
    assert encoder.calls == [3] and kept == [items[0], items[2]] and vectors.shape == (2, 2)
    assert failed == [(items[1], "could not be encoded: its text encodes to NaN or infinity")]


def test_a_failing_batch_is_encoded_one_by_one() -> None:
    encoder = _Encoder()
    items = _items("a", "fail", "nan", "d")
    kept, vectors, failed = encode_items(encoder, items)  # type: ignore[arg-type]
    assert encoder.calls == [4, 1, 1, 1, 1]
    assert kept == [items[0], items[3]] and np.isfinite(vectors).all() and len(vectors) == 2
    assert failed == [(items[1], "could not be encoded: ValueError: tokenizer panicked"),
                      (items[2], "could not be encoded: its text encodes to NaN or infinity")]
    kept, vectors, failed = encode_items(encoder, _items("fail"))  # type: ignore[arg-type]
    assert kept == [] and vectors.shape == (0, 2) and len(failed) == 1


def test_a_failure_reason_is_bounded_and_always_sendable() -> None:
    assert failure_reason("x", RecursionError()) == "x: RecursionError"
    long = failure_reason("could not be decoded", ValueError("\ud800" + "y" * 500))
    assert long == "could not be decoded: ValueError: \\ud800" + "y" * 194 + "..."
    long.encode("utf-8")  # no lone surrogate left

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert failure_reason("x", Unprintable()) == "x: Unprintable"


def test_deleted_rows_are_not_known_and_nothing_changes_without_them() -> None:
    none = np.empty(0, dtype=np.int64)
    known = np.array([True, False, True, True])
    assert live_known(none, 4) is None and live_known(none, 4, known) is known
    assert live_known(np.array([0, 9]), 3).tolist() == [False, True, True]  # type: ignore[union-attr]
    assert live_known(np.array([2]), 4, known).tolist() == [True, False, False, True]  # type: ignore[union-attr]
    assert known.tolist() == [True, False, True, True]  # a copy, not the caller's array
    items = LongTermItems("v1", np.ones((4, 3), np.float32), known)
    assert live_long_items(none, items) is items
    masked = live_long_items(np.array([3]), items)
    assert masked.known.tolist() == [True, False, True, False] and masked.vectors is items.vectors
