"""The broker health record, its log quieter and the lost-records check (no I/O; the probe
against a real broker is in tests/integration/test_broker.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from streams.errors import BrokerError
from streams.worker.health import (
    BrokerHealth,
    ClientLogQuieter,
    bootstrap_servers,
    lost_data_message,
    lost_records,
)

T0 = 1_764_000_000.0


def test_bootstrap_servers_are_parsed_with_the_default_port_and_ipv6() -> None:
    assert bootstrap_servers(" k1:9093, [::1]:9094 ,k3,::1") == [
        ("k1", 9093),
        ("::1", 9094),
        ("k3", 9092),
        ("::1", 9092),
    ]
    with pytest.raises(BrokerError, match="no bootstrap server"):
        bootstrap_servers(" , ")


def test_one_failed_probe_is_no_outage_two_are_and_an_answer_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = BrokerHealth("k:9092")
    with caplog.at_level(logging.INFO, logger="streams.worker.health"):
        assert not health.failed("refused", now=T0)
        assert health.reachable and health.outage() is None and health.quiet
        assert not health.answered(now=T0 + 1)  # a blip: no outage, nothing said
        assert caplog.records == []

        assert not health.failed("refused", now=T0 + 10)
        assert health.failed("no answer in 2 s", now=T0 + 11)  # the second one in a row
        for t in range(12, 40):
            assert not health.failed("refused", now=T0 + t)  # still the same outage
        assert health.outage() == {
            "status": "broker unreachable",
            "since": T0 + 10,  # the first failed probe of the outage
            "last_error": "refused",
        }
        assert health.metrics()["broker"] == "unreachable"
        assert health.answered(now=T0 + 41)
    assert [r.getMessage() for r in caplog.records] == [
        "Kafka at k:9092 does not answer (no answer in 2 s): /healthz reports it; "
        "the worker waits for it",
        "Kafka at k:9092 answers again after 31.0 s (0 client log lines held back)",
    ]
    assert health.outage() is None and not health.quiet
    assert health.metrics() == {
        "broker": "reachable",
        "broker_outages": 1,
        "broker_unreachable_since": None,
        "broker_last_error": "refused",
        "broker_last_outage_s": 31.0,
    }


def _record(name: str, msg: str, created: float, level: int = logging.ERROR) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, ("node 1",), None)
    record.created = created
    return record


def test_client_retry_lines_are_held_back_in_an_outage_and_thinned_out_otherwise() -> None:
    health = BrokerHealth("k:9092")
    quieter = ClientLogQuieter(health, window_s=10)
    connect = "Unable connect to node with id %s"
    fetch = "Failed fetch messages from %s"
    assert quieter.filter(_record("aiokafka.client", connect, T0))
    assert not quieter.filter(_record("aiokafka.client", connect, T0 + 0.01))  # a repeat
    assert quieter.filter(_record("aiokafka.consumer.fetcher", fetch, T0 + 0.02))  # another kind
    assert quieter.filter(_record("aiokafka.client", connect, T0 + 0.01, logging.INFO))
    assert quieter.filter(_record("aiokafka.client", connect, T0 + 10.5))  # a window later

    health.failed("refused", now=T0 + 11)
    shown = [quieter.filter(_record("aiokafka.client", connect, T0 + 30 + i)) for i in range(50)]
    assert not any(shown) and health.held_back == 50
    health.answered(now=T0 + 80)
    assert health.held_back == 0
    assert quieter.filter(_record("aiokafka.client", connect, T0 + 81))


def test_the_quieter_filters_the_loggers_that_make_the_records_and_goes_away() -> None:
    health = BrokerHealth("k:9092")
    health.failed("refused")
    quieter = ClientLogQuieter(health).install()
    try:
        fetcher = logging.getLogger("aiokafka.consumer.fetcher")
        assert quieter in fetcher.filters and quieter in logging.getLogger("aiokafka").filters
        assert quieter not in logging.getLogger("streams.worker.health").filters
        fetcher.error("Failed fetch messages from %s", 1)
        assert health.held_back == 1
    finally:
        quieter.remove()
    assert quieter not in logging.getLogger("aiokafka.consumer.fetcher").filters


def test_records_are_lost_when_an_end_offset_goes_back_or_its_partition_is_gone() -> None:
    click0, click1, log0 = (
        TopicPartition("e.click", 0),
        TopicPartition("e.click", 1),
        TopicPartition("app-user_interest-changelog", 0),
    )
    seen = {click0: 12, click1: 0, log0: 7}
    assert lost_records(seen, {click0: 12, click1: 3, log0: 9}) == []  # grew: nothing lost
    assert lost_records(seen, {click0: 2, click1: 0}) == [
        "app-user_interest-changelog[0] had 7 records, now 0",
        "e.click[0] had 12 records, now 2",
    ]
    assert lost_records({}, {click0: 0}) == []  # nothing noted yet: nothing to compare


def test_the_lost_data_message_says_what_was_lost_and_what_to_do() -> None:
    lost = [f"t[{p}] had 5 records, now 0" for p in range(6)]
    text = lost_data_message("k:9092", lost, Path("/srv/worker/app"))
    assert "Kafka at k:9092 came back without records it had (t[0] had 5" in text
    assert "t[3] had 5 records, now 0; 2 more)" in text
    assert "memory-only broker" in text and "removing /srv/worker/app" in text
