"""The item index on an ONNX Runtime device (the CPU provider here, CUDA on a GPU): exact
candidates, incremental sync through the patch graph, moments, growth, and blended ranking."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from encoders import ConfigurationError, InputError
from encoders.index.ann import Moments
from encoders.index.device import DeviceIndex
from interest_state import LongTermItems, rank, rank_blended
from interest_state.blend_ann import rank_approx, rank_blended_approx
from streams.bench.ann_data import (
    VERSION,
    build_indexes,
    mixture_catalog,
    synthetic_seeds,
    taste_users,
)


def _exact_top(queries: np.ndarray, matrix: np.ndarray, known: np.ndarray, count: int
               ) -> np.ndarray:  # fmt: skip
    scores = queries @ matrix.T
    scores[:, ~known] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :count]
    rows = np.where(np.isneginf(np.take_along_axis(scores, order, axis=1)), -1, order)
    return np.pad(rows, ((0, 0), (0, count - rows.shape[1])), constant_values=-1)


def _moments(matrix: np.ndarray, known: np.ndarray) -> Moments:
    return Moments.zero(matrix.shape[1]).plus(matrix[known])


def _assert_same_moments(got: Moments, want: Moments) -> None:
    assert got.count == want.count
    np.testing.assert_allclose(got.total, want.total, atol=1e-4)
    np.testing.assert_allclose(got.outer, want.outer, atol=1e-4)


def _index(dim: int, room: int = 64, chunk: int = 65_536) -> DeviceIndex:
    return DeviceIndex(dim, provider="cpu", room=room, threads=1, chunk=chunk)


def test_candidates_are_the_exact_top_rows_and_never_unknown_ones() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((300, 16)).astype(np.float32)
    known = rng.random(300) > 0.2
    index = _index(16)
    assert index.sync(matrix, known, version="v1") == 300
    assert (index.covered, len(index), index.version) == (300, int(known.sum()), "v1")
    assert index.room == 512, "room doubles from 64 to hold 300 rows"
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    found = index.candidates(queries, 20)
    np.testing.assert_array_equal(found.rows, _exact_top(queries, matrix, known, 20))
    _assert_same_moments(found.moments, _moments(matrix, known))
    everything = index.candidates(queries, 400).rows
    assert (everything[:, : known.sum()] >= 0).all() and (everything[:, known.sum():] == -1).all()
    assert set(everything[0, : known.sum()]) == set(np.flatnonzero(known))


def test_incremental_sync_matches_an_index_built_from_scratch() -> None:
    """New rows within the room, replaced vectors and flipped known flags go through the patch
    graph (several chunks); many new rows or growth past the room send everything again."""
    rng = np.random.default_rng(2)
    matrix = rng.standard_normal((700, 8)).astype(np.float32)
    known = np.ones(700, dtype=bool)
    index = _index(8, room=1024, chunk=16)
    index.sync(matrix[:500], known[:500])
    assert index.sync(matrix[:560], known[:560]) == 60  # 60 * 8 <= 1024: patched, 4 chunks
    matrix[[3, 77, 510]] = rng.standard_normal((3, 8)).astype(np.float32)
    known[[5, 9]] = False
    known[[9]] = True  # unknown then known again, with a new vector
    matrix[9] += 1.0
    known[[11, 540]] = False
    assert index.sync(matrix[:560], known[:560], touched=[3, 77, 510, 5, 9, 11, 540, 0]) == 0
    queries = rng.standard_normal((4, 8)).astype(np.float32)
    fresh = _index(8, room=1024)
    fresh.sync(matrix[:560], known[:560])
    got, want = index.candidates(queries, 600), fresh.candidates(queries, 600)
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.rows, _exact_top(queries, matrix[:560], known[:560], 600))
    _assert_same_moments(got.moments, _moments(matrix[:560], known[:560]))
    assert index.room == 1024
    assert index.sync(matrix, known) == 140  # 140 * 8 > 1024: everything sent again
    _assert_same_moments(index.candidates(queries, 1).moments, _moments(matrix, known))
    np.testing.assert_array_equal(index.candidates(queries, 50).rows,
                                  _exact_top(queries, matrix, known, 50))  # fmt: skip


def test_a_row_changed_without_being_touched_is_not_noticed() -> None:
    """As with AnnIndex: the caller names the rows it replaced."""
    matrix = np.eye(4, dtype=np.float32)
    index = _index(4)
    index.sync(matrix)
    matrix[0] = -1.0
    index.sync(matrix)
    assert index.candidates(np.eye(4, dtype=np.float32)[:1], 1).rows[0, 0] == 0
    index.sync(matrix, touched=[0])
    assert index.candidates(np.eye(4, dtype=np.float32)[:1], 4).rows[0, -1] == 0


def test_another_version_starts_from_scratch() -> None:
    rng = np.random.default_rng(3)
    old = rng.standard_normal((50, 8)).astype(np.float32)
    new = rng.standard_normal((30, 8)).astype(np.float32)
    index = _index(8)
    index.sync(old, version="model-a")
    assert index.sync(new, version="model-b") == 30
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    found = index.candidates(queries, 40)
    assert (found.version, found.covered, found.moments.count) == ("model-b", 30, 30)
    np.testing.assert_array_equal(found.rows, _exact_top(queries, new, np.ones(30, bool), 40))


def test_an_empty_index_answers_nothing() -> None:
    index = _index(4)
    found = index.candidates(np.ones((2, 4), dtype=np.float32), 3)
    assert (found.rows == -1).all() and found.covered == 0 and found.moments.count == 0
    index.sync(np.zeros((0, 4), dtype=np.float32))
    assert (index.candidates(np.ones((1, 4), dtype=np.float32), 3).rows == -1).all()


def test_bad_input_is_refused_and_leaves_the_index_as_it_was() -> None:
    with pytest.raises(ConfigurationError):
        _index(0)
    index = _index(4)
    index.sync(np.eye(4, dtype=np.float32))
    bad = np.eye(4, dtype=np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        index.sync(np.concatenate([np.eye(4, dtype=np.float32), bad]))
    with pytest.raises(InputError, match="NaN"):
        index.sync(bad, touched=[2])
    assert (index.covered, len(index)) == (4, 4)
    with pytest.raises(InputError, match=r"\(m, 4\)"):
        index.candidates(np.ones((2, 3), dtype=np.float32), 1)
    with pytest.raises(InputError, match="NaN"):
        index.candidates(np.full((1, 4), np.nan, dtype=np.float32), 1)
    with pytest.raises(ConfigurationError):
        index.candidates(np.ones((1, 4), dtype=np.float32), 0)
    with pytest.raises(InputError, match="touched"):
        index.sync(np.eye(4, dtype=np.float32), touched=[9])
    with pytest.raises(InputError, match="NaN"):  # every row sent (another version): checked too
        index.sync(bad, version="another")
    assert (index.version, index.covered, len(index)) == ("", 4, 4)
    fresh = _index(4)
    with pytest.raises(InputError, match="NaN"):  # the first sync
        fresh.sync(bad)
    assert fresh.covered == 0
    assert (fresh.candidates(np.ones((1, 4), np.float32), 2).rows == -1).all()


def test_blended_ranking_over_device_candidates_is_the_exact_ranking() -> None:
    rng = np.random.default_rng(4)
    catalog = mixture_catalog(synthetic_seeds(rng, n=200, clusters=10), 900, rng)
    index, _, _, _, _ = build_indexes(catalog, min_rows=16)
    known = np.arange(900) % 7 != 3
    items = LongTermItems(VERSION, catalog.long, known)
    text, long = _index(index.dim), _index(items.dim)
    text.sync(index.vectors_view())
    long.sync(items.vectors, known, version=VERSION)
    users = taste_users(catalog, 10, rng)
    exact = rank_blended(users, index, items, k=10)
    ours = rank_blended_approx(users, index, items, text, long, k=10, candidates=64)
    assert [[r.item_id for r in u] for u in ours] == [[r.item_id for r in u] for u in exact]
    np.testing.assert_allclose([[r.score for r in u] for u in ours],
                               [[r.score for r in u] for u in exact], atol=1e-5)  # fmt: skip
    short = rank_approx(users, index, text, k=10, candidates=64)
    assert [[r.item_id for r in u] for u in short] == [
        [r.item_id for r in u] for u in rank(users, index, k=10)]


def test_searches_during_syncs_see_whole_snapshots() -> None:
    """A reader thread searching while rows are appended and replaced: every row it gets is
    synced and live in the snapshot it came with, its moments count the rows it covers."""
    rng = np.random.default_rng(5)
    matrix = rng.standard_normal((2000, 8)).astype(np.float32)
    index = _index(8, room=4096, chunk=8)
    index.sync(matrix[:100])
    stop, problems = threading.Event(), []
    queries = rng.standard_normal((3, 8)).astype(np.float32)

    def read() -> None:
        while not stop.is_set():
            found = index.candidates(queries, 30)
            live = found.rows[found.rows >= 0]
            if live.size and live.max() >= found.covered:
                problems.append(f"row {live.max()} beyond covered {found.covered}")
            if found.moments.count != found.covered:
                problems.append(f"moments count {found.moments.count} != {found.covered}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for high in range(150, 600, 50):
            matrix[high - 120] += 0.5
            index.sync(matrix[:high], touched=[high - 120])
    finally:
        stop.set()
        reader.join()
    assert not problems, problems[:3]
    assert index.covered == 550


def test_the_embedded_graphs_are_what_onnx_builds() -> None:
    onnx = pytest.importorskip("onnx")
    from encoders.index.device_graphs import build, graphs

    for half in (False, True):
        for embedded, built in zip(graphs(half), build(half), strict=True):
            assert onnx.load_from_string(embedded) == onnx.load_from_string(built)


def test_it_needs_no_onnx_package_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    index = _index(4)
    index.sync(np.eye(4, dtype=np.float32))
    assert index.candidates(np.eye(4, dtype=np.float32)[1:2], 1).rows[0, 0] == 1


def test_float16_buffers_give_the_exact_ranking_and_refuse_what_they_cannot_hold() -> None:
    """The CUDA configuration (float16 graphs and buffers), run on the CPU provider."""
    rng = np.random.default_rng(6)
    catalog = mixture_catalog(synthetic_seeds(rng, n=200, clusters=10), 900, rng)
    index, _, _, _, _ = build_indexes(catalog, min_rows=16)
    items = LongTermItems(VERSION, catalog.long, np.arange(900) % 5 != 1)
    text = DeviceIndex(index.dim, provider="cpu", threads=1, half=True)
    long = DeviceIndex(items.dim, provider="cpu", threads=1, half=True)
    assert text.dtype == np.float16
    text.sync(index.vectors_view())
    long.sync(items.vectors, items.known, version=VERSION)
    users = taste_users(catalog, 10, rng)
    exact = rank_blended(users, index, items, k=10)
    ours = rank_blended_approx(users, index, items, text, long, k=10, candidates=64)
    assert [[r.item_id for r in u] for u in ours] == [[r.item_id for r in u] for u in exact]
    queries = np.stack([u.short_term / np.linalg.norm(u.short_term) for u in users])
    found = text.candidates(queries, 32).rows
    truth = _exact_top(queries, index.vectors_view(), np.ones(900, bool), 10)
    assert all(set(t) <= set(f) for t, f in zip(truth, found, strict=True))  # near ties aside
    got, want = long.candidates(queries[:1, :items.dim], 1).moments, _moments(items.vectors,
                                                                               items.known)
    assert got.count == want.count
    np.testing.assert_allclose(got.total, want.total, rtol=1e-6)  # summed from float32
    too_big = np.full((2, index.dim), 1e5, dtype=np.float32)
    with pytest.raises(InputError, match="float16"):
        text.sync(np.concatenate([index.vectors_view(), too_big]))
    with pytest.raises(InputError, match="float16"):
        text.candidates(too_big, 3)
    assert text.covered == 900


def test_a_small_append_is_patched_not_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    matrix = rng.standard_normal((700, 8)).astype(np.float32)
    index = _index(8, room=1024)
    index.sync(matrix[:500])
    uploads: list[int] = []
    real = DeviceIndex._upload

    def counted(self: DeviceIndex, *args: object) -> None:
        uploads.append(1)
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(DeviceIndex, "_upload", counted)
    assert index.sync(matrix[:520]) == 20  # 20 * 8 <= 1024: a patch
    assert uploads == [] and index.room == 1024
    assert index.sync(matrix) == 180  # 180 * 8 > 1024: everything again
    assert uploads == [1]


def test_graphs_that_do_not_load_are_a_model_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import encoders.index.device
    from encoders import ModelLoadError

    monkeypatch.setattr(encoders.index.device, "graphs", lambda half: (b"not onnx", b"not onnx"))
    with pytest.raises(ModelLoadError, match="do not load"):
        _index(4)
