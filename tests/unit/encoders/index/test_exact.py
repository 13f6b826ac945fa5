"""ItemIndex: exact top-k, upsert, growth, errors, one writer with a concurrent reader."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from encoders import ConfigurationError, EncoderError, InputError, ItemIndex


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _filled(n: int, dim: int = 16, seed: int = 0) -> tuple[ItemIndex, np.ndarray]:
    vectors = _unit(np.random.default_rng(seed), n, dim)
    index = ItemIndex(dim, capacity=8)
    index.upsert([f"i{j}" for j in range(n)], [f"title {j}" for j in range(n)], vectors)
    return index, vectors


def test_top_k_equals_brute_force() -> None:
    index, vectors = _filled(200)
    queries = _unit(np.random.default_rng(1), 5, 16)
    scores, rows = index.search(queries, 10)
    brute = queries @ vectors.T
    expected_rows = np.argsort(-brute, axis=1)[:, :10]
    assert rows.dtype == np.int64 and rows.shape == (5, 10)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_rows, axis=1), rtol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0), "best first"


def test_raw_scores_are_every_row_in_order_and_agree_with_search() -> None:
    index, vectors = _filled(50)
    queries = _unit(np.random.default_rng(2), 3, 16)
    raw = index.scores(queries)
    np.testing.assert_allclose(raw, queries @ vectors.T, rtol=1e-5)
    top, rows = index.search(queries, 5)
    np.testing.assert_allclose(np.take_along_axis(raw, rows, axis=1), top, rtol=1e-6)
    with pytest.raises(InputError):
        index.scores(queries[:, :8])


def test_k_larger_than_index_and_zero() -> None:
    index, _ = _filled(3)
    scores, rows = index.search(np.ones((2, 16), np.float32), 10)
    assert scores.shape == rows.shape == (2, 3)
    assert sorted(rows[0].tolist()) == [0, 1, 2]
    assert index.search(np.ones((2, 16), np.float32), 0)[1].shape == (2, 0)
    assert ItemIndex(16).search(np.ones((1, 16), np.float32), 5)[1].shape == (1, 0)


def test_upsert_replaces_known_ids() -> None:
    index, vectors = _filled(10)
    new = -vectors[3]
    index.upsert(["i3", "fresh"], ["renamed", "new item"], np.stack([new, vectors[0]]))
    assert len(index) == 11
    np.testing.assert_array_equal(index.vector("i3"), new)
    assert index.title_of("i3") == "renamed" and index.row_of("i3") == 3
    assert index.item_id_at(10) == "fresh" and "fresh" in index
    _, rows = index.search(new[None, :], 1)
    assert index.item_id_at(int(rows[0, 0])) == "i3"


def test_duplicate_ids_in_one_call_last_wins() -> None:
    index = ItemIndex(2)
    index.upsert(["a", "a"], ["first", "second"], np.array([[1, 0], [0, 1]], np.float32))
    assert len(index) == 1 and index.title_of("a") == "second"
    np.testing.assert_array_equal(index.vector("a"), [0, 1])


def test_growth_keeps_earlier_rows() -> None:
    rng = np.random.default_rng(2)
    index = ItemIndex(4, capacity=2)
    batches = [_unit(rng, size, 4) for size in (1, 2, 5, 9)]
    for b, vectors in enumerate(batches):
        index.upsert([f"b{b}-{j}" for j in range(len(vectors))], ["t"] * len(vectors), vectors)
    assert len(index) == 17 and index.capacity >= 17
    for b, vectors in enumerate(batches):
        for j, vector in enumerate(vectors):
            np.testing.assert_array_equal(index.vector(f"b{b}-{j}"), vector)


def test_lookups_of_unknown_items() -> None:
    index, _ = _filled(2)
    assert index.vector("nope") is None and index.title_of("nope") is None
    assert index.row_of("nope") is None and "nope" not in index and 3 not in index
    with pytest.raises(InputError):
        index.item_id_at(2)


def test_vectors_of_gathers_the_known_ids_in_order_as_a_copy() -> None:
    index, vectors = _filled(12)  # grown past its capacity of 8
    found, matrix = index.vectors_of(["i9", "nope", "i0", "i9", "i3"])
    assert found == [0, 2, 3, 4]
    np.testing.assert_array_equal(matrix, vectors[[9, 0, 9, 3]])
    matrix[:] = 0.0
    np.testing.assert_array_equal(index.vector("i9"), vectors[9])  # the index is untouched
    found, matrix = index.vectors_of(["nope"])
    assert found == [] and matrix.shape == (0, 16)


def test_wrong_shapes_are_encoder_errors() -> None:
    index, _ = _filled(2)
    with pytest.raises(InputError) as caught:
        index.search(np.ones((1, 8), np.float32), 1)
    assert isinstance(caught.value, EncoderError)
    with pytest.raises(InputError):
        index.upsert(["x"], ["t"], np.ones((1, 8), np.float32))
    with pytest.raises(InputError):
        index.upsert(["x", "y"], ["t"], np.ones((2, 16), np.float32))
    with pytest.raises(InputError):
        index.upsert(["x"], ["t"], np.full((1, 16), np.nan, np.float32))
    with pytest.raises(ConfigurationError):
        index.search(np.ones((1, 16), np.float32), -1)
    assert len(index) == 2, "rejected upserts change nothing"


def test_reader_thread_sees_only_published_rows() -> None:
    rng = np.random.default_rng(3)
    index = ItemIndex(8, capacity=1)
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        query = np.ones((1, 8), np.float32)
        while not done.is_set():
            try:
                _, rows = index.search(query, 5)
                for row in rows[0]:
                    assert index.item_id_at(int(row)).startswith("w")
            except BaseException as exc:  # handed to the main thread
                errors.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for step in range(300):
            index.upsert([f"w{step}"], ["t"], _unit(rng, 1, 8))
    finally:
        done.set()
        thread.join(timeout=10)
    assert not errors, errors[0] if errors else None
    assert len(index) == 300


def test_a_deleted_item_is_never_found_and_keeps_its_row() -> None:
    index, vectors = _filled(20)
    assert index.delete(["i3", "nope", "i3", "i7"]) == [3, 7]  # unknown, repeated: ignored
    assert index.delete(["i3"]) == []  # already deleted
    assert len(index) == 18 and index.rows == 20
    assert index.deleted_rows.tolist() == [3, 7] and not index.deleted_rows.flags.writeable
    assert "i3" not in index and index.vector("i3") is None and index.row_of("i3") is None
    assert index.title_of("i3") is None and index.item_id_at(3) == "i3"
    assert index.vectors_of(["i3", "i4"])[0] == [1]
    scores, rows = index.search(vectors[[3, 7]], 20)  # more than are left
    assert rows.shape == (2, 18) and not {3, 7} & set(rows.ravel().tolist())
    assert np.isfinite(scores).all()
    raw = index.scores(vectors[[3]])
    assert raw.shape == (1, 20) and np.isneginf(raw[0, [3, 7]]).all()
    assert np.isfinite(np.delete(raw, [3, 7], axis=1)).all()
    with pytest.raises(InputError):
        index.delete("i4")  # one string, not a sequence of ids


def test_an_item_upserted_after_its_delete_comes_back_in_its_row() -> None:
    index, vectors = _filled(10)
    index.delete(["i3", "i4"])
    index.upsert(["i3", "new"], ["back", "new"], np.stack([-vectors[3], vectors[0]]))
    assert index.row_of("i3") == 3 and index.title_of("i3") == "back" and len(index) == 10
    assert index.deleted_rows.tolist() == [4] and index.rows == 11
    np.testing.assert_array_equal(index.vector("i3"), -vectors[3])
    _, rows = index.search(-vectors[3][None, :], 1)
    assert rows[0, 0] == 3
    index.delete(["i0", "i1", "i2", "i3", "i5", "i6", "i7", "i8", "i9", "new"])
    assert len(index) == 0 and index.search(vectors[:1], 3)[1].shape == (1, 0)
