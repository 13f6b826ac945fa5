"""Which workers a per-user request is forwarded to: the owners of the user's partitions under
both producers' hashes, murmur2's first, never this worker, never an address nobody can reach.
(The forwarding itself is tested on two real workers: tests/integration/test_routing.py.)"""

from __future__ import annotations

import logging
import zlib

import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner
from yarl import URL

from streams.worker.routing import (
    FORWARDED_HEADER,
    UserRouter,
    crc32_partition,
    key_partitions,
    murmur2_partition,
)

CHANGELOG = "app-user_interest-changelog"


def _keys_where_the_hashes_differ(partitions: int) -> list[bytes]:
    keys = [f"user-{n}".encode() for n in range(200)]
    return [k for k in keys if murmur2_partition(k, partitions) != crc32_partition(k, partitions)]


def test_the_partitions_are_aiokafkas_murmur2_then_librdkafkas_crc32() -> None:
    all_partitions = list(range(8))
    for n in range(300):
        key = f"user-{n}".encode()
        murmur = DefaultPartitioner()(key, all_partitions, all_partitions)
        crc = zlib.crc32(key) % 8
        assert key_partitions(key, 8) == ((murmur,) if murmur == crc else (murmur, crc))
    assert len(_keys_where_the_hashes_differ(8)) > 100  # the two disagree for most keys


def _router(url: str = "http://127.0.0.1:6066") -> UserRouter:
    app = faust.App("t-routing", canonical_url=url)
    return UserRouter(app, CHANGELOG, 8)


def test_the_owners_of_both_partitions_are_asked_murmur2_first_and_never_this_worker() -> None:
    router = _router()
    key = _keys_where_the_hashes_differ(8)[0]
    murmur, crc = key_partitions(key, 8)
    others = [p for p in range(8) if p not in (murmur, crc)]
    router.app.assignor.changelog_distribution = {
        "http://127.0.0.1:6066": {CHANGELOG: others, "events.click": [murmur]},
        "http://10.0.0.2:6066": {CHANGELOG: [crc]},
        "http://10.0.0.3:6066": {CHANGELOG: [murmur]},
    }
    assert router.owners(key) == [URL("http://10.0.0.3:6066"), URL("http://10.0.0.2:6066")]
    router.app.assignor.changelog_distribution = {
        "http://127.0.0.1:6066": {CHANGELOG: [crc]},
        "http://10.0.0.3:6066": {CHANGELOG: [murmur]},
    }
    assert router.owners(key) == [URL("http://10.0.0.3:6066")]  # CRC32's partition is here
    router.app.assignor.changelog_distribution = {}
    assert router.owners(key) == []  # no assignment yet (a rebalance): nobody to ask


def test_an_owner_whose_url_names_no_reachable_host_is_not_asked_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = _router()
    router.app.assignor.changelog_distribution = {
        "http://0.0.0.0:6066": {CHANGELOG: list(range(8))},
    }
    with caplog.at_level(logging.WARNING, logger="streams.worker.routing"):
        assert router.owners(b"u1") == [] and router.owners(b"u2") == []
    assert [r.message.count("NODE_CANONICAL_URL") for r in caplog.records] == [1]


def test_a_forwarded_request_is_known_by_its_header() -> None:
    assert UserRouter.is_forwarded({FORWARDED_HEADER: "1"})
    assert not UserRouter.is_forwarded({"Accept": "application/json"})
