"""The pass-through Faust apps the worker is measured against."""

from __future__ import annotations

import pytest

from streams.bench.baseline import (
    BaselineCounter,
    baseline_specs,
    create_baseline_app,
    output_topic,
)
from streams.settings import Settings
from streams.worker.transport import faust_app


def test_baseline_apps_are_built_with_the_worker_transport() -> None:
    settings = Settings(bootstrap="127.0.0.1:9092", app_id="bench-test")
    table_send = create_baseline_app(settings, "table-send")
    assert list(table_send.agents) == ["baseline-table-send"]
    assert list(table_send.tables) == ["baseline_state"]
    assert str(table_send.conf.broker[0]).startswith("interest-kafka://")
    noop = create_baseline_app(settings, "noop", BaselineCounter())
    assert list(noop.agents) == ["baseline-noop"] and not list(noop.tables)
    with pytest.raises(ValueError):
        create_baseline_app(settings, "bogus")
    with pytest.raises(ValueError):
        create_baseline_app(Settings(), "noop")


def test_baseline_topics_and_counter() -> None:
    settings = Settings(bootstrap="x:1", app_id="b1", partitions=3)
    specs = {spec.name: spec for spec in baseline_specs(settings)}
    assert set(settings.topics.events) <= set(specs)
    assert output_topic(settings) in specs
    assert specs["b1-baseline_state-changelog"].compacted
    assert {spec.partitions for spec in specs.values()} == {3}
    counter = BaselineCounter(events=4)
    assert counter.snapshot() == {"events_in": 4, "events_applied": 4, "acked_ms": {}}


def test_baselines_are_the_worker_s_faust_app_with_three_options_changed() -> None:
    settings = Settings(bootstrap="127.0.0.1:9092", app_id="bench-test", web_enabled=False)
    baseline = create_baseline_app(settings, "table-send").conf
    assert (baseline.producer_linger, str(baseline.store), baseline.web_enabled) == (
        0.002, "memory:", True)
    worker = faust_app(settings).conf
    assert (worker.producer_linger, str(worker.store), worker.web_enabled) == (
        0.0, "rocksdb:", False)
    assert baseline.broker_session_timeout == worker.broker_session_timeout
    assert baseline.stream_buffer_maxsize == worker.stream_buffer_maxsize
