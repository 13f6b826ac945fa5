"""The data of the ``ann`` benchmarks (and of the ``gpu`` section's device index rows): a
catalog shaped like a real one, users with tastes, the indexes over them, and recall.

The data is not i.i.d. random (that would make any ANN index look bad and is nothing like a
catalog): the seeds are the 1,682 real ml-100k items, their MiniLM text vectors and their
vectors in the trained sequence model (synthetic clusters when the home folder lacks the
data or a model); each catalog item is a random mixture of two seed items plus noise shaped
like the seeds' spread (:func:`mixture_catalog`). A user's history is drawn from the items
around three seed items (their taste); the long-term vector is the mean long-term vector of
that history plus noise (:func:`taste_users`). :func:`build_indexes` builds the exact item
index and both IVF-PQ indexes; :func:`recall_at` scores approximate top lists against exact.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders import ItemIndex
from encoders.index.ann import AnnIndex
from interest_state import (
    Event,
    EventType,
    InterestState,
    LongTermItems,
    Observation,
    UpdateParams,
    update,
)
from streams.settings import Settings

__all__ = [
    "NOISE",
    "VERSION",
    "MixedCatalog",
    "Seeds",
    "build_indexes",
    "load_seeds",
    "mixture_catalog",
    "recall_at",
    "synthetic_seeds",
    "taste_users",
]

NOISE = 0.35
"""Norm of the noise added to each mixed item vector, relative to the seeds' mean norm."""
VERSION = "bench-seq"
"""The long-term version of the generated users and items."""


@dataclass(frozen=True, slots=True)
class Seeds:
    """Seed items: text vectors (unit), long-term item vectors, and where they came from."""

    text: np.ndarray
    long: np.ndarray
    source: str


@dataclass(frozen=True, slots=True)
class MixedCatalog:
    """A generated catalog: text vectors (unit), long-term vectors, each item's first parent."""

    text: np.ndarray
    long: np.ndarray
    parent: np.ndarray


def load_seeds(settings: Settings, rng: np.random.Generator) -> Seeds:
    """The ml-100k items through the text encoder and the sequence model, else synthetic."""
    from encoders import EncoderError, TextEncoder
    from encoders.runtime.sequence import SequenceModel, is_sequence_model
    from streams.data.formats import read_items
    from streams.errors import DatasetError

    path = settings.home / "data" / "ml-100k" / "items.jsonl"
    folder = settings.resolved_sequence_model_dir
    if not path.is_file() or not is_sequence_model(folder):
        return synthetic_seeds(rng, why=f"no {path} or no sequence model in {folder}")
    try:
        model = SequenceModel.load(folder)
        items = [i for i in read_items(path) if i.item_id in model.row_of]
        text = TextEncoder.load(settings.resolved_model_dir).encode([i.text for i in items])
    except (EncoderError, DatasetError, OSError) as exc:
        return synthetic_seeds(rng, why=str(exc))
    long = np.stack([model.items[model.row_of[i.item_id] - 1] for i in items])
    return Seeds(text, long.astype(np.float32), f"ml-100k items ({len(items):,} seeds)")


def synthetic_seeds(rng: np.random.Generator, n: int = 1_682, clusters: int = 40,
                    why: str = "") -> Seeds:  # fmt: skip
    """Seeds around ``clusters`` random centres; long vectors a fixed projection of the text."""
    centres = _unit(rng.standard_normal((clusters, 384)))
    text = _unit(centres[rng.integers(0, clusters, n)] + 0.6 * _noise(rng, n, 384))
    projection = rng.standard_normal((384, 64)) / np.sqrt(64)
    long = text @ projection + 0.3 * _noise(rng, n, 64)
    source = f"synthetic ({n:,} seeds{': ' + why if why else ''})"
    return Seeds(text.astype(np.float32), long.astype(np.float32), source)


def mixture_catalog(
    seeds: Seeds, n: int, rng: np.random.Generator, noise: float = NOISE, chunk: int = 65_536
) -> MixedCatalog:
    """``n`` items, each ``a * seed[p] + (1 - a) * seed[q] + noise`` (text re-normalised).

    The noise has the seeds' own covariance (scaled to ``noise`` times their mean norm): an
    item varies along the directions real items vary along. Isotropic noise in 384 dimensions
    would be the i.i.d.-random case again, unlike any catalog and hard for every ANN index.
    """
    text = np.empty((n, seeds.text.shape[1]), dtype=np.float32)
    long = np.empty((n, seeds.long.shape[1]), dtype=np.float32)
    parent = rng.integers(0, len(seeds.text), n)
    other = rng.integers(0, len(seeds.text), n)
    share = rng.random(n, dtype=np.float32)[:, None]
    shapes = [_noise_shape(seeds.text, noise), _noise_shape(seeds.long, noise)]
    for low in range(0, n, chunk):
        part = slice(low, min(low + chunk, n))
        p, q, a = parent[part], other[part], share[part]
        for out, source, shape in ((text, seeds.text, shapes[0]), (long, seeds.long, shapes[1])):
            gauss = rng.standard_normal((len(p), shape.shape[0]), dtype=np.float32)
            out[part] = a * source[p] + (1 - a) * source[q] + gauss @ shape
        text[part] = _unit(text[part])
    return MixedCatalog(text, long, parent)


def _noise_shape(vectors: np.ndarray, level: float) -> np.ndarray:
    """(dim, dim) ``S`` such that standard normal rows ``g @ S`` have the covariance of
    ``vectors`` and an expected norm of about ``level`` times their mean norm."""
    centred = vectors - vectors.mean(axis=0)
    variances, axes = np.linalg.eigh(centred.T @ centred / len(vectors))
    spread = np.sqrt(np.clip(variances, 0.0, None))
    scale = level * float(np.linalg.norm(vectors, axis=1).mean()) / float(np.linalg.norm(spread))
    shape: np.ndarray = (axes * spread).T * scale
    return shape.astype(np.float32)


def taste_users(catalog: MixedCatalog, users: int, rng: np.random.Generator) -> list[InterestState]:
    """Users with full history rings drawn around three seed items each, and a long-term
    vector (the mean long vector of their history, plus noise)."""
    params = UpdateParams()
    events = max(params.history_len, params.dedupe_len) + 6
    order = np.argsort(catalog.parent, kind="stable")
    starts = np.searchsorted(catalog.parent[order], np.arange(catalog.parent.max() + 2))
    states = []
    for user in range(users):
        tastes = rng.choice(np.flatnonzero(np.diff(starts) > 0), size=3, replace=False)
        pool = np.concatenate([order[starts[t] : starts[t + 1]] for t in tastes])
        rows = rng.choice(pool, size=events)
        observations = [
            Observation(
                Event(f"u{user}-{n}", f"u{user}", str(row), EventType.CLICK, 1e9 + n),
                catalog.text[row],
            )  # fmt: skip
            for n, row in enumerate(rows)
        ]
        state, _ = update(InterestState.empty(catalog.text.shape[1]), observations, params)
        history = catalog.long[rows[-params.history_len :]].mean(axis=0)
        spread = float(np.linalg.norm(history)) * 0.3
        long = history + spread * _noise(rng, 1, len(history))[0]
        states.append(state.with_long_term(long, VERSION))
    return states


def build_indexes(catalog: MixedCatalog, **options: Any
                  ) -> tuple[ItemIndex, LongTermItems, AnnIndex, AnnIndex, float]:  # fmt: skip
    """The exact item index, the long-term items, both ANN indexes (``options`` for
    :class:`AnnIndex`) and their build seconds."""
    n = len(catalog.text)
    index = ItemIndex(catalog.text.shape[1], capacity=n)
    ids = [str(i) for i in range(n)]
    index.upsert(ids, ids, catalog.text)
    long_items = LongTermItems(VERSION, catalog.long, np.ones(n, dtype=bool))
    text_ann = AnnIndex(catalog.text.shape[1], **options)
    long_ann = AnnIndex(catalog.long.shape[1], **options)
    start = time.perf_counter()
    text_ann.sync(index.vectors_view())
    long_ann.sync(long_items.vectors, long_items.known, version=VERSION)
    return index, long_items, text_ann, long_ann, time.perf_counter() - start


def recall_at(found: Sequence[Sequence[Any]], truth: Sequence[Sequence[Any]]) -> float:
    """Mean share of each exact top list that the approximate one holds (users with one)."""
    shares = [
        len({r.item_id for r in a} & {r.item_id for r in t}) / len(t)
        for a, t in zip(found, truth, strict=True)
        if t
    ]
    return float(np.mean(shares)) if shares else float("nan")


def _noise(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Gaussian rows of expected norm 1."""
    return rng.standard_normal((n, dim), dtype=np.float32) / np.float32(np.sqrt(dim))


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out
