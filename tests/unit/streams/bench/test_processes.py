"""The child processes a section starts: their settings through the environment, events done,
memory from /proc.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.bench.processes import processed, read_memory_kib, settings_env, stage_settings
from streams.settings import Settings


def test_processed_counts_applied_duplicates_and_dead_letters() -> None:
    assert processed({"events_applied": 5, "duplicates": 2, "dead_letters": 1}) == 8
    assert processed({"events_applied": 3}) == 3


def test_stage_settings_round_trip_through_the_environment(tmp_path: Path) -> None:
    base = Settings(model_dir=tmp_path / "model")
    one = stage_settings(base, "127.0.0.1:9092", "ours", tmp_path / "ours")
    two = stage_settings(base, "127.0.0.1:9092", "ours", tmp_path / "ours")
    assert one.app_id != two.app_id
    assert all(name.startswith(one.app_id + ".") for name in one.topics.events)
    back = Settings.from_env(settings_env(one))
    for attr in ("bootstrap", "app_id", "topics", "home", "model_dir", "web_port", "store"):
        assert getattr(back, attr) == getattr(one, attr), attr
    assert back.store == "memory"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_read_memory_kib_of_this_process() -> None:
    memory = read_memory_kib(os.getpid())
    assert memory["rss_kib"] > 0 and memory["peak_rss_kib"] >= memory["rss_kib"]
    assert read_memory_kib(2**31 - 1) == {}
