"""The catalog's vectors by content: a restart encodes only new and changed texts, another model
never reads them, and a broken cache file costs a re-encode, never a worker."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import TextEncoder
from interest_state import UpdateParams
from streams.contract import ItemRecord
from streams.worker.items import encode_items
from streams.worker.pipeline import Pipeline
from streams.worker.vector_cache import KEEP_RUNS, VectorCache


class Counting:
    """The real tiny encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder: TextEncoder, model_version: str | None = None) -> None:
        self.inner = encoder
        self.dim = encoder.dim
        self.max_length = encoder.max_length
        self.model_version = model_version or encoder.model_version
        self.texts: list[str] = []
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        self.calls += 1
        return self.inner.encode(texts)


def _items(*titles: str) -> list[ItemRecord]:
    return [ItemRecord(str(n), t, f"{t} | Drama", ("Drama",)) for n, t in enumerate(titles)]


def _cache(root: Path, encoder: Counting) -> VectorCache:
    return VectorCache.for_encoder(root, encoder)  # a fresh one: what a restarted worker makes


def _encode(root: Path, encoder: Counting, items: list[ItemRecord]) -> np.ndarray:
    kept, vectors, failed = encode_items(encoder, items, _cache(root, encoder))  # type: ignore[arg-type]
    assert kept == items and not failed
    return vectors


def test_a_restart_encodes_only_new_and_changed_texts(
    tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    encoder = Counting(tiny_encoder)
    first = _items("Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)")
    cold = _encode(tmp_path, encoder, first)
    assert len(encoder.texts) == 3  # a cold cache: every text

    encoder.texts.clear()
    warm = _encode(tmp_path, encoder, first)
    assert encoder.texts == []  # a restart, same model: nothing encoded
    np.testing.assert_array_equal(warm, cold)
    np.testing.assert_allclose(warm, tiny_encoder.encode([i.text for i in first]), atol=1e-6)

    changed = [first[0], ItemRecord("1", "GoldenEye (1996)", "GoldenEye (1996) | Drama", ()),
               first[2], *_items("a", "b", "c", "New (2024)")[3:]]  # fmt: skip
    vectors = _encode(tmp_path, encoder, changed)
    assert encoder.texts == ["GoldenEye (1996) | Drama", "New (2024) | Drama"]
    np.testing.assert_array_equal(vectors[[0, 2]], cold[[0, 2]])
    np.testing.assert_allclose(vectors[[1, 3]], tiny_encoder.encode(encoder.texts), atol=1e-6)


def test_a_batch_is_one_encoder_call_for_its_misses_in_the_items_order(
    tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    encoder = Counting(tiny_encoder)
    items = _items("a", "b", "c", "d")
    cache = _cache(tmp_path, encoder)
    encode_items(encoder, items[1:3], cache)  # type: ignore[arg-type]
    encoder.texts, encoder.calls = [], 0
    kept, vectors, _ = encode_items(encoder, items, cache)  # type: ignore[arg-type]
    assert encoder.calls == 1 and encoder.texts == ["a | Drama", "d | Drama"]
    assert kept == items and cache.hits == 2
    np.testing.assert_allclose(vectors, tiny_encoder.encode([i.text for i in items]), atol=1e-6)


def test_another_model_version_never_reads_these_vectors(
    tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    items = _items("Toy Story (1995)", "Heat (1995)")
    _encode(tmp_path, Counting(tiny_encoder), items)
    other = Counting(tiny_encoder, model_version="another-model-1234abcd")
    _encode(tmp_path, other, items)
    assert len(other.texts) == 2
    # even a file copied into its folder is refused: it says which model wrote it
    mine = _cache(tmp_path, Counting(tiny_encoder)).folder
    theirs = _cache(tmp_path, other).folder
    for path in mine.glob("*.npz"):
        (theirs / f"seg-00000099-1-1-{path.name}").write_bytes(path.read_bytes())
    other.texts.clear()
    _encode(tmp_path, other, _items("Jumanji (1995)"))
    assert other.texts == ["Jumanji (1995) | Drama"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "nan"])
def test_a_corrupt_cache_file_is_ignored_logged_and_rebuilt(
    tiny_encoder: TextEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    encoder = Counting(tiny_encoder)
    items = _items("Toy Story (1995)", "Heat (1995)")
    cold = _encode(tmp_path, encoder, items)
    _encode(tmp_path, encoder, items)  # folds everything into base.npz
    base = _cache(tmp_path, encoder).folder / "base.npz"
    data = base.read_bytes()
    if damage == "nan":  # a whole, loadable file whose vectors are not finite
        with np.load(base) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["vectors"][0, 0] = np.nan
        np.savez(base, **arrays)
    else:
        base.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00junk" * 99,
                          "empty": b""}[damage])  # fmt: skip
    encoder.texts.clear()
    with caplog.at_level(logging.WARNING, "streams.worker.vector_cache"):
        vectors = _encode(tmp_path, encoder, items)
    assert len(encoder.texts) == 2 and "ignored" in caplog.text
    np.testing.assert_allclose(vectors, cold, atol=1e-6)
    encoder.texts.clear()
    _encode(tmp_path, encoder, items)
    assert encoder.texts == []  # rebuilt


def test_a_cache_that_cannot_be_written_costs_nothing_but_speed(
    tiny_encoder: TextEncoder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    encoder = Counting(tiny_encoder)
    with caplog.at_level(logging.WARNING, "streams.worker.vector_cache"):
        vectors = _encode(blocker, encoder, _items("a", "b"))
    assert vectors.shape == (2, tiny_encoder.dim) and "not written" in caplog.text


def test_entries_unused_for_several_runs_are_dropped(
    tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    encoder = Counting(tiny_encoder)
    _encode(tmp_path, encoder, _items("gone", "kept"))
    for _ in range(KEEP_RUNS + 1):  # restarts whose catalog no longer has "gone"
        _encode(tmp_path, encoder, _items("x", "kept")[1:])
    cache = _cache(tmp_path, encoder)
    assert cache.entries() == 1
    encoder.texts.clear()
    _encode(tmp_path, encoder, _items("gone", "kept"))
    assert encoder.texts == ["gone | Drama"]


def test_the_pipeline_indexes_cached_vectors_as_it_would_encoded_ones(
    tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    items = _items("Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)")
    fresh = Pipeline(tiny_encoder, UpdateParams())
    fresh.add_items(items)
    encoder = Counting(tiny_encoder)
    for _ in range(2):  # a cold start, then a warm one
        p = Pipeline(tiny_encoder, UpdateParams(), vector_cache=_cache(tmp_path, encoder))
        p.encoder = encoder  # type: ignore[assignment]
        assert p.add_items(items) == []
        for item in items:
            got, want = p.index.vector(item.item_id), fresh.index.vector(item.item_id)
            assert got is not None and want is not None
            np.testing.assert_allclose(got, want, atol=1e-6)
    assert len(encoder.texts) == 3  # the warm start encoded nothing


def test_a_writer_killed_mid_write_leaves_no_file_behind_after_the_next_start(
    tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    """``kill -9`` between a temporary file's write and its rename leaves ``.<name>.<pid>.tmp``
    behind: the next load removes those of dead processes, never a live writer's."""
    encoder = Counting(tiny_encoder)
    items = _items("Toy Story (1995)", "Heat (1995)")
    _encode(tmp_path, encoder, items)
    folder = _cache(tmp_path, encoder).folder
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = folder / f".seg-00000002-{dead}-1-1.npz.{dead}.tmp"
    live = folder / f".seg-00000002-1-1-1.npz.{os.getpid()}.tmp"
    for path in (orphan, live):
        path.write_bytes(b"half a file")
    encoder.texts.clear()
    _encode(tmp_path, encoder, items)  # a restart: loads, and uses the cache as before
    assert encoder.texts == [] and not orphan.exists() and live.exists()
