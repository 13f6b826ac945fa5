"""``bench --sections store``: memory of one process holding N users in the worker's table store.

A child process (one per run, so its peak RSS is its own) builds the worker's Faust app and
``user_interest`` table with the worker's own code (:func:`streams.worker.app.interest_table`), so
the store is faust's RocksDB ``Store`` with :func:`streams.worker.app.store_options`, one RocksDB
per partition. No broker: states go in through the store's mapping API in their partition (what
``table[key] = value`` does minus the changelog message) and come out as the agent reads them
(``get`` in the partition, then :func:`interest_state.decode_state`).

Each user's state is distinct and has the shape the worker stores for an ml-100k user (full
rings, a 64-d long-term vector, up to 4 interest centroids; about 4.7 KB encoded on average;
:mod:`streams.bench.store_data`).
After N writes the child reads N random users (with replacement: about 63% of them; ``--quick``:
N/2; the worker reads every user of every batch), then reads a sample back and compares it byte
for byte. RSS is ``VmRSS``/``VmHWM`` from ``/proc/self/status``. The baseline is the same
measurement with faust's default RocksDB options (2 GiB block cache and 3 x 64 MiB memtables per
partition), and the RSS of the same process before its store was opened.

:mod:`streams.bench.store_worker` adds, in a full run, a real worker that recovered 100k such
users from its changelog and served events for them, against the same worker with an empty table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interest_state import decode_state
from streams.bench.common import BenchConfig, Row
from streams.bench.processes import mib, read_memory_kib
from streams.bench.store_data import CHUNK, encoded_states, user_key
from streams.errors import BenchError
from streams.settings import Settings
from streams.worker.agents import in_partition_of
from streams.worker.app import interest_table
from streams.worker.transport import faust_app

__all__ = ["StoreJob", "StoreRun", "measure_store", "run_store_job", "state_scale_section"]

SAMPLE = 500
#: RocksDB properties summed over the partitions (bytes), reported as what the RSS holds.
PROPERTIES = {
    "block_cache": "rocksdb.block-cache-usage",
    "memtables": "rocksdb.cur-size-all-mem-tables",
    "table_readers": "rocksdb.estimate-table-readers-mem",
}
MIB = 1024 * 1024
#: The fields of faust's ``RocksDBOptions`` that :func:`streams.worker.app.store_options` sets.
OPTIONS = ("block_cache_size", "write_buffer_size", "max_write_buffer_number")


@dataclass(frozen=True, slots=True)
class StoreJob:
    """One run: how many users, how many random reads, and which RocksDB options.

    ``options=None`` is the worker's (:func:`streams.worker.app.store_options` of ``settings``);
    ``{}`` is faust's defaults.
    """

    users: int
    reads: int
    settings: Settings
    options: dict[str, int] | None = None
    seed: int = 5


@dataclass(frozen=True, slots=True)
class StoreRun:
    """What one child process measured."""

    users: int
    reads: int
    partitions: int
    options: dict[str, int]
    rss_before_kib: int
    rss_after_write_kib: int
    rss_end_kib: int
    peak_rss_kib: int
    state_bytes: int
    disk_bytes: int
    write_s: float
    read_s: float
    checked: int
    mismatches: int
    rocksdb: dict[str, int]

    @property
    def writes_per_s(self) -> float:
        return self.users / self.write_s if self.write_s > 0 else float("nan")

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.read_s if self.read_s > 0 else float("nan")


@dataclass
class _PartitionMessage:
    partition: int


@dataclass
class _PartitionEvent:
    """Just enough of an event for faust's store to pick the partition (weakref-able)."""

    message: _PartitionMessage


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


class _Partitions:
    """Sets faust's current event, as the agent does, so the store uses the key's partition."""

    def __init__(self, partitions: int) -> None:
        self.events = [_PartitionEvent(_PartitionMessage(p)) for p in range(partitions)]

    def of(self, key: bytes) -> contextlib.AbstractContextManager[None]:
        event: Any = self.events[partition_of(key, len(self.events))]
        return in_partition_of(event)


def _rocksdb_figures(store: Any) -> dict[str, int]:
    return {
        name: sum(int(db.property_int_value(prop) or 0) for db in store._dbs.values())
        for name, prop in PROPERTIES.items()
    }


def _disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _rss() -> int:
    return read_memory_kib(os.getpid()).get("rss_kib", 0)


def _write(
    store: Any, job: StoreJob, parts: _Partitions, kept: dict[bytes, bytes]
) -> tuple[int, float]:
    """Write every user's state; keep a sample of what was written. Returns (bytes, put seconds)."""
    rng = np.random.default_rng(job.seed)
    stride = max(1, job.users // SAMPLE)
    total, put_s = 0, 0.0
    for start in range(0, job.users, CHUNK):
        values = encoded_states(rng, min(CHUNK, job.users - start), 1.7e9 + start)
        began = time.perf_counter()
        for offset, value in enumerate(values):
            key = user_key(start + offset)
            with parts.of(key):
                store[key] = value
        put_s += time.perf_counter() - began
        total += sum(len(v) for v in values)
        kept.update((user_key(u), values[u - start]) for u in _strided(start, len(values), stride))
    return total, put_s


def _strided(start: int, count: int, stride: int) -> range:
    """The users of ``start .. start + count`` whose number is a multiple of ``stride``."""
    return range(-(-start // stride) * stride, start + count, stride)


def _read(store: Any, job: StoreJob, parts: _Partitions) -> float:
    """``job.reads`` random users: get in their partition and decode, as the agent does."""
    users = np.random.default_rng(job.seed + 1).integers(0, job.users, job.reads).tolist()
    began = time.perf_counter()
    for user in users:
        key = user_key(user)
        with parts.of(key):
            decode_state(store[key])
    return time.perf_counter() - began


def _check(store: Any, parts: _Partitions, kept: dict[bytes, bytes]) -> int:
    mismatches = 0
    for key, value in kept.items():
        with parts.of(key):
            mismatches += store.get(key) != value
    return mismatches


def measure_store(job: StoreJob) -> StoreRun:
    """Run ``job`` in this process (call it in a fresh child: RSS is the process's own)."""
    settings = job.settings
    table = interest_table(faust_app(settings), settings)
    if job.options is not None:  # the store is built from them on first use of ``table.data``
        table.options = dict(job.options)
    store: Any = table.data
    options = {name: int(getattr(store.rocksdb_options, name)) for name in OPTIONS}
    rss_before = _rss()
    for partition in range(settings.partitions):
        store._db_for_partition(partition)
    parts, kept = _Partitions(settings.partitions), dict[bytes, bytes]()
    state_bytes, write_s = _write(store, job, parts, kept)
    rss_after_write = _rss()
    read_s = _read(store, job, parts)
    mismatches = _check(store, parts, kept)
    figures = _rocksdb_figures(store)
    memory = read_memory_kib(os.getpid())
    for db in store._dbs.values():
        db.close()
    return StoreRun(
        users=job.users,
        reads=job.reads,
        partitions=settings.partitions,
        options=options,
        rss_before_kib=rss_before,
        rss_after_write_kib=rss_after_write,
        rss_end_kib=memory.get("rss_kib", 0),
        peak_rss_kib=memory.get("peak_rss_kib", 0),
        state_bytes=state_bytes,
        disk_bytes=_disk_bytes(settings.data_dir),
        write_s=write_s,
        read_s=read_s,
        checked=len(kept),
        mismatches=mismatches,
        rocksdb=figures,
    )


def run_store_job(job: StoreJob, home: Path | None = None) -> StoreRun:
    """:func:`measure_store` in a fresh child process, its data under a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="interest-store-", dir=home) as tmp:
        settings = dataclasses.replace(
            job.settings,
            home=Path(tmp),
            store="rocksdb",
            web_enabled=False,
            bootstrap=job.settings.bootstrap or "127.0.0.1:9092",
        )
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            run = pool.submit(measure_store, dataclasses.replace(job, settings=settings)).result()
    return run


def store_rows(ours: StoreRun, faust: StoreRun) -> list[Row]:
    """Rows comparing the worker's options with faust's defaults, same users and reads."""
    n = f"{ours.users:,} users"
    held = ", ".join(f"{name} {value / MIB:,.0f}" for name, value in ours.rocksdb.items())
    theirs = ", ".join(f"{name} {value / MIB:,.0f}" for name, value in faust.rocksdb.items())
    where = f"{ours.partitions} partitions, faust RocksDB Store"
    return [
        Row(
            "store",
            f"peak RSS, {n}",
            mib(ours.peak_rss_kib),
            "MiB",
            "faust defaults",
            mib(faust.peak_rss_kib),
            f"{where}; after writes {mib(ours.rss_after_write_kib)} "
            f"MiB (defaults {mib(faust.rss_after_write_kib)})",
        ),
        Row(
            "store",
            f"RSS at end, {n}",
            mib(ours.rss_end_kib),
            "MiB",
            "faust defaults",
            mib(faust.rss_end_kib),
            f"before the store {mib(ours.rss_before_kib)} MiB; "
            f"RocksDB MiB: {held} (defaults: {theirs})",
        ),
        Row(
            "store",
            "disk bytes/user",
            round(ours.disk_bytes / ours.users),
            "B",
            "encoded state",
            round(ours.state_bytes / ours.users),
            f"{ours.disk_bytes / 1e9:.2f} GB in all",
        ),
        Row(
            "store",
            "writes/s (put in partition)",
            ours.writes_per_s,
            "users/s",
            "faust defaults",
            faust.writes_per_s,
            "state encoding not counted",
        ),
        Row(
            "store",
            f"reads/s (get + decode, {ours.reads:,} random)",
            ours.reads_per_s,
            "users/s",
            "faust defaults",
            faust.reads_per_s,
            f"{ours.checked - ours.mismatches}/{ours.checked} read back byte-exact",
        ),
    ]


# --------------------------------------------------------------------------- the section


def state_scale_section(
    cfg: BenchConfig, settings: Settings | None = None, home: Path | None = None
) -> list[Row]:
    """1M users in the worker's store, read 1M times, next to faust's default options (quick:
    100k users read 50k times); in a full run with ``settings``, also a real worker holding
    100k users. ``home``: where the stores go (a temporary folder below it)."""
    users = 100_000 if cfg.quick else 1_000_000
    base = settings or Settings()
    job = StoreJob(users=users, reads=users // 2 if cfg.quick else users, settings=base)
    ours = run_store_job(job, home)
    faust = run_store_job(dataclasses.replace(job, options={}), home)
    if ours.mismatches or faust.mismatches:
        raise BenchError(
            f"states did not read back byte-exact: {ours.mismatches} and "
            f"{faust.mismatches} of {ours.checked}"
        )
    rows = store_rows(ours, faust)
    if settings is not None and not cfg.quick:
        from streams.bench.store_worker import worker_rows

        with tempfile.TemporaryDirectory(prefix="interest-store-", dir=home) as tmp:
            rows += worker_rows(base, 100_000, 20_000, Path(tmp))
    return rows
