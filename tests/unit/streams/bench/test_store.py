"""The store benchmark at small scale, and the worker's RocksDB options reaching faust's store.

No figure is compared with a limit that depends on the machine: the tests check that the
options are the ones the worker opens its table with, that states read back byte-exact and that
the memory figures come from a real process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.stores.rocksdb import Store

from streams.bench.store import (
    MIB,
    StoreJob,
    StoreRun,
    _check,
    _Partitions,
    run_store_job,
    store_rows,
)
from streams.bench.store_worker import _check_recovered
from streams.errors import BenchError, SettingsError
from streams.settings import Settings
from streams.worker.app import interest_table, store_options
from streams.worker.transport import faust_app


def test_store_options_split_the_cache_budget_over_the_partitions() -> None:
    settings = Settings(partitions=4, store_block_cache_mb=256, store_write_buffer_mb=16)
    assert store_options(settings) == {
        "block_cache_size": 64 * MIB,
        "write_buffer_size": 16 * MIB,
        "max_write_buffer_number": 2,
    }


def test_the_worker_table_opens_rocksdb_with_the_worker_options(tmp_path: Path) -> None:
    settings = Settings(
        bootstrap="127.0.0.1:9092",
        home=tmp_path,
        partitions=2,
        store_block_cache_mb=32,
        store_write_buffer_mb=4,
        web_enabled=False,
    )
    store = interest_table(faust_app(settings), settings).data
    assert isinstance(store, Store)
    options = store.rocksdb_options
    assert (
        options.block_cache_size,
        options.write_buffer_size,
        options.max_write_buffer_number,
    ) == (16 * MIB, 4 * MIB, 2)


def test_the_memory_store_gets_no_rocksdb_options(tmp_path: Path) -> None:
    settings = Settings(
        bootstrap="127.0.0.1:9092", home=tmp_path, store="memory", web_enabled=False
    )
    assert interest_table(faust_app(settings), settings).options is None


def test_store_settings_come_from_the_environment_and_are_checked() -> None:
    s = Settings.from_env(
        {
            "INTEREST_STREAM_STORE_BLOCK_CACHE_MB": "512",
            "INTEREST_STREAM_STORE_WRITE_BUFFER_MB": "8",
        }
    )
    assert (s.store_block_cache_mb, s.store_write_buffer_mb) == (512, 8)
    with pytest.raises(SettingsError, match="store_block_cache_mb"):
        Settings.from_env({"INTEREST_STREAM_STORE_BLOCK_CACHE_MB": "0"})


def test_2000_users_read_back_byte_exact_from_the_worker_store(tmp_path: Path) -> None:
    settings = Settings(partitions=2)
    run = run_store_job(StoreJob(users=2_000, reads=2_000, settings=settings), tmp_path)
    assert (run.checked, run.mismatches) == (500, 0)
    assert run.options == store_options(settings)
    assert 0 < run.rss_before_kib < run.rss_after_write_kib <= run.peak_rss_kib
    assert run.rss_end_kib <= run.peak_rss_kib
    assert 4_400 < run.state_bytes / run.users < 4_900  # the store section's users (4.7 KB)
    # every write is on disk: in the write-ahead log, or (once a memtable is flushed) in a
    # Snappy-compressed table file, which can be a little smaller than the states
    assert run.disk_bytes >= 0.8 * run.state_bytes
    assert run.rocksdb["memtables"] > 0
    assert run.writes_per_s > 0 and run.reads_per_s > 0
    assert list(tmp_path.iterdir()) == []  # the store's folder is removed


def test_a_state_that_reads_back_different_is_counted() -> None:
    store = {b"a": b"state a", b"b": b"state b"}
    kept = {b"a": b"state a", b"b": b"state b, as written"}
    assert _check(store, _Partitions(2), kept) == 1


def test_rows_compare_the_worker_options_with_faust_defaults() -> None:
    ours = StoreRun(
        users=1_000,
        reads=1_000,
        partitions=4,
        options={},
        rss_before_kib=100 * 1024,
        rss_after_write_kib=200 * 1024,
        rss_end_kib=300 * 1024,
        peak_rss_kib=400 * 1024,
        state_bytes=2_900_000,
        disk_bytes=3_000_000,
        write_s=0.5,
        read_s=0.25,
        checked=10,
        mismatches=0,
        rocksdb={"block_cache": 64 * MIB, "memtables": MIB, "table_readers": 0},
    )
    faust = dataclasses.replace(ours, peak_rss_kib=800 * 1024, read_s=0.5)
    rows = {row.metric.split(",")[0].split(" (")[0]: row for row in store_rows(ours, faust)}
    assert (rows["peak RSS"].value, rows["peak RSS"].ratio) == (400, 0.5)
    assert (rows["disk bytes/user"].value, rows["disk bytes/user"].baseline_value) == (3_000, 2_900)
    assert (rows["reads/s"].value, rows["reads/s"].ratio) == (4_000, 2)
    assert "10/10 read back byte-exact" in rows["reads/s"].note


class _FakeWorker:
    """Answers ``/users/{id}`` with a state that counts ``events`` events."""

    def __init__(self, events: int) -> None:
        self.events = events

    def get_json(self, path: str) -> dict[str, int]:
        return {"events": self.events}

    def tail(self) -> str:
        return ""


def test_a_worker_that_did_not_recover_its_table_fails_the_run() -> None:
    events = [SimpleNamespace(user_id="user-00000001")]
    _check_recovered(_FakeWorker(71), events, users=10)  # 70 recovered + 1 sent
    with pytest.raises(BenchError, match="not recovered"):
        _check_recovered(_FakeWorker(1), events, users=10)
