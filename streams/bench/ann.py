"""The ``ann`` benchmark: exact ranking against IVF-PQ candidates on large catalogs.

For each catalog size it times one batch of ``cfg.rank_users`` users (full history rings, a
long-term vector each) ranked by exact :func:`interest_state.rank_blended` and by
:func:`interest_state.blend_ann.rank_blended_approx` over two :class:`encoders.index.ann.AnnIndex`
(the 384-d text vectors, the 64-d sequence-model item vectors), and the same for the
short-term-only ranking (:func:`interest_state.rank` vs ``rank_approx``). It reports users/s
of both in the same run, recall@10 of the approximate top 10 against the exact top 10, and the
time to build both indexes from scratch. numpy's BLAS and faiss get one thread each, for the
build too (the worker's ``INTEREST_STREAM_BLAS_THREADS`` default; an OpenMP pool on a small
shared machine makes faiss slower, not faster).

The data is not i.i.d. random (that would make any ANN index look bad and is nothing like a
catalog): the seeds are the 1,682 real ml-100k items, their MiniLM text vectors and their
vectors in the trained sequence model (synthetic clusters when the home folder lacks the
data or a model); each catalog item is a random mixture of two seed items plus noise shaped
like the seeds' spread (:func:`mixture_catalog`). A user's history is drawn from the items
around three seed items (their taste); the long-term vector is the mean long-term vector of
that history plus noise.

``python -m streams.bench.ann [--quick] [--sweep] [--sizes N,..] [--device cpu|cuda]``;
``--sweep`` times both paths over small catalogs, to find where the approximate one starts to
win (the worker's threshold); ``--device`` times the device item index against faiss instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import click
import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from encoders import ItemIndex
from encoders.index.ann import AnnIndex
from encoders.index.device import DeviceIndex
from interest_state import (
    Event,
    EventType,
    InterestState,
    LongTermItems,
    Observation,
    UpdateParams,
    rank,
    rank_blended,
    update,
)
from interest_state.blend_ann import rank_approx, rank_blended_approx
from streams.bench.main import BenchConfig, Row, format_table, paired_rates, timed_rate
from streams.settings import Settings

__all__ = [
    "MixedCatalog",
    "Seeds",
    "ann_section",
    "build_indexes",
    "device_index_rows",
    "load_seeds",
    "mixture_catalog",
]

CANDIDATES = 256
"""Rows asked of each index per user (``rank_blended_approx(candidates=...)``)."""
NOISE = 0.35
"""Norm of the noise added to each mixed item vector, relative to the seeds' mean norm."""
SWEEP_SIZES = (5_000, 10_000, 15_000, 20_000, 30_000, 50_000)
VERSION = "bench-seq"
BUILD_NOTE = "IVF-PQ 4-bit fast scan, 2 sqrt(n) lists; 384-d text + 64-d long; 1 thread"


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
    from streams.data.datasets import DatasetError, read_items

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


def _size_rows(
    cfg: BenchConfig, size: int, seeds: Seeds, rng: np.random.Generator, k: int = 10
) -> list[Row]:
    catalog = mixture_catalog(seeds, size, rng)
    with _one_thread():
        index, long_items, text_ann, long_ann, build_s = build_indexes(catalog)
    states = taste_users(catalog, cfg.rank_users, rng)
    label = f"{size:,} items, batch {len(states)}"
    note = f"C={CANDIDATES} per index; {seeds.source} mixed, noise {NOISE}"
    blend = partial(rank_blended_approx, states, index, long_items, text_ann, long_ann, k)
    short = partial(rank_approx, states, index, text_ann, k)
    return [
        *_compare(cfg, f"blend {{}}, {label}", note, len(states), "exact rank_blended",
                  partial(blend, candidates=CANDIDATES),
                  partial(rank_blended, states, index, long_items, k)),
        *_compare(cfg, f"short-only {{}}, {label}", note, len(states), "exact rank",
                  partial(short, candidates=CANDIDATES), partial(rank, states, index, k)),
        Row("ann", f"index build, {size:,} items", build_s, "s", note=BUILD_NOTE),
    ]  # fmt: skip


def _compare(
    cfg: BenchConfig,
    metric: str,
    note: str,
    users: int,
    baseline: str,
    approx: Callable[[], list[Any]],
    exact: Callable[[], list[Any]],
    section: str = "ann",
    truth: Callable[[], list[Any]] | None = None,
) -> list[Row]:
    """Users/s of ``approx`` against ``exact`` (alternating rounds) and its recall@10 against
    ``truth`` (default ``exact``)."""
    with _one_thread():
        recall = recall_at(approx(), (truth or exact)())
        ours, theirs = paired_rates(
            partial(_rate, approx, users, cfg), partial(_rate, exact, users, cfg), cfg.rounds
        )
    return [
        Row(section, metric.format("users/s"), ours, "users/s", baseline, theirs,
            f"recall@10 {recall:.3f}"),
        Row(section, metric.format("recall@10"), recall, "", note=note),
    ]  # fmt: skip


def _rate(step: Callable[[], list[Any]], users: int, cfg: BenchConfig) -> float:
    def once() -> int:
        step()
        return users

    return timed_rate(once, cfg.min_seconds)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """numpy BLAS and faiss on one thread each (restored on exit)."""
    threads = faiss.omp_get_max_threads()
    with threadpool_limits(limits=1, user_api="blas"):
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(threads)


def device_index_rows(cfg: BenchConfig, provider: str, sizes: Sequence[int] = (1_000_000,),
                      settings: Settings | None = None) -> list[Row]:  # fmt: skip
    """The item index on the device (:class:`encoders.index.device.DeviceIndex`, ``provider``
    "cuda" or "cpu") against faiss IVF-PQ, both in the worker's setting (numpy and faiss on one
    thread), in the same run: blended users/s over each one's candidates with recall@10
    against exact ranking, one search of ``rank_users`` queries for the 256 best rows, the
    time to add 1,000 items, and the build times. Section ``gpu``."""
    rng = np.random.default_rng(19)
    seeds = load_seeds(settings or Settings.from_env(), rng)
    rows: list[Row] = []
    for size in sizes:
        catalog = mixture_catalog(seeds, size, rng)
        index, long_items, text_ann, long_ann, faiss_s = build_indexes(catalog)
        start = time.perf_counter()
        text_dev = DeviceIndex(index.dim, provider=provider, threads=1)
        long_dev = DeviceIndex(long_items.dim, provider=provider, threads=1)
        text_dev.sync(index.vectors_view())
        long_dev.sync(long_items.vectors, long_items.known, version=VERSION)
        device_s = time.perf_counter() - start
        where = f"{text_dev.provider} {text_dev.dtype}" + (
            "" if provider == "cuda" else ", 1 intra-op thread")
        states = taste_users(catalog, cfg.rank_users, rng)
        label = f"{size:,} items, batch {len(states)}"
        blend = partial(rank_blended_approx, states, index, long_items, k=10, candidates=CANDIDATES)
        with _one_thread():
            exact = rank_blended(states, index, long_items, 10)
        rows += _compare(cfg, f"blend {{}} over device candidates, {label}",
                         f"device: {where}; C={CANDIDATES} per index; {seeds.source} mixed",
                         len(states), "faiss IVF-PQ candidates, 1 thread",
                         partial(blend, short_index=text_dev, long_index=long_dev),
                         partial(blend, short_index=text_ann, long_index=long_ann),
                         section="gpu", truth=partial(list, exact))  # fmt: skip
        with _one_thread():
            faiss_recall = recall_at(blend(short_index=text_ann, long_index=long_ann), exact)
        rows.append(Row("gpu", f"blend recall@10 over faiss candidates, {label}", faiss_recall,
                        "", note=f"IVF-PQ, {text_ann.lists:,} lists, {text_ann.probes} probed"))
        queries = np.stack([s.short_term / np.linalg.norm(s.short_term) for s in states])
        ours, theirs = paired_rates(
            partial(_search_rate, text_dev, queries, cfg), partial(_search_rate, text_ann,
                                                                   queries, cfg), cfg.rounds)
        rows.append(Row("gpu", f"device index searches/s, {len(queries)} queries x top "
                        f"{CANDIDATES}, {size:,} x {index.dim}", ours, "calls/s",
                        "faiss IVF-PQ, 1 thread", theirs, where))  # fmt: skip
        sends = text_dev.full_sends
        append_ms = _append_ms(text_dev, index, catalog.text)
        rows.append(Row("gpu", f"device index: add 1,000 items to {size:,}", append_ms, "ms",
                        note=f"{where}; median of 5 after one warm-up add; "
                        f"{text_dev.full_sends - sends} of the 6 sent every row"))
        rows.append(Row("gpu", f"device index build, {size:,} items (text + long)", device_s, "s",
                        "faiss IVF-PQ build", faiss_s, where))  # fmt: skip
    return rows


def _search_rate(source: DeviceIndex | AnnIndex, queries: np.ndarray, cfg: BenchConfig) -> float:
    def once() -> int:
        source.candidates(queries, CANDIDATES)
        return 1

    with _one_thread():
        return timed_rate(once, cfg.min_seconds)


def _append_ms(device: DeviceIndex, index: ItemIndex, vectors: np.ndarray, rounds: int = 5,
               count: int = 1000) -> float:  # fmt: skip
    """Median milliseconds for ``device`` to take ``count`` new catalog rows in one sync (rows
    of ``vectors`` under new ids), after one warm-up add (its first patch allocates the spare
    buffers)."""
    times = []
    for round_ in range(rounds + 1):
        ids = [f"new-{round_}-{n}" for n in range(count)]
        rows = np.arange(round_ * count, (round_ + 1) * count) % len(vectors)
        index.upsert(ids, ids, vectors[rows])
        start = time.perf_counter()
        device.sync(index.vectors_view())
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times[1:]))


def ann_sizes(cfg: BenchConfig) -> tuple[int, ...]:
    return (10_000, 50_000) if cfg.quick else (10_000, 100_000, 1_000_000)


def ann_section(cfg: BenchConfig, settings: Settings | None = None,
                sizes: Sequence[int] = ()) -> list[Row]:  # fmt: skip
    """Exact vs approximate users/s, recall@10 and index build time at each catalog size."""
    rng = np.random.default_rng(17)
    seeds = load_seeds(settings or Settings.from_env(), rng)
    return [row for size in (sizes or ann_sizes(cfg)) for row in _size_rows(cfg, size, seeds, rng)]


def _noise(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Gaussian rows of expected norm 1."""
    return rng.standard_normal((n, dim), dtype=np.float32) / np.float32(np.sqrt(dim))


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


@click.command()
@click.option("--quick", is_flag=True, help="10k and 50k items instead of 10k, 100k and 1M.")
@click.option("--sweep", is_flag=True, help="Small catalogs only, to find the crossover.")
@click.option("--sizes", default="", help="Comma-separated catalog sizes (overrides the mode).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Time the device item index against faiss instead (the gpu section's rows).")
def main(quick: bool, sweep: bool, sizes: str, device: str | None) -> None:
    cfg = BenchConfig.for_mode(quick)
    chosen = tuple(int(s) for s in sizes.split(",") if s.strip()) or (SWEEP_SIZES if sweep else ())
    start = time.perf_counter()
    if device is not None:
        rows = device_index_rows(cfg, device, chosen or ann_sizes(cfg))
    else:
        rows = ann_section(dataclasses.replace(cfg, sections=("ann",)), sizes=chosen)
    click.echo(format_table(rows))
    click.echo(f"\n{time.perf_counter() - start:.0f}s in all")


if __name__ == "__main__":
    main()
