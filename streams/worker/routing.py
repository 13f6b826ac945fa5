"""Any worker answers for any user: a per-user view asked of a worker that does not hold the
user is answered by the worker that does.

A user's state lives in the partition their events were produced to (see
:func:`streams.worker.agents.in_partition_of`), and which partition that is depends on the
producer: aiokafka, faust and the Java client hash the key with murmur2, librdkafka clients
(kcat, confluent-kafka) with CRC32 (``consistent_random``). Faust's own routing
(``app.router.route_req``) knows only the first, so :class:`UserRouter` asks the owners of both
partitions in turn (murmur2's first, then CRC32's): a worker found in the group's metadata (the
assignor's changelog distribution: each member's ``canonical_url`` and its changelog
partitions) is asked for ``/users/{id}`` with the :data:`FORWARDED_HEADER` header and a short
timeout, and the first that has the user answers. A forwarded request is answered from the
local state only, so a request is forwarded at most once (no loops, whatever the metadata
says during a rebalance). A user found nowhere gets the unknown-user answer of the worker that
was asked.

Workers reach each other at faust's ``canonical_url``: ``http://<web_host>:<web_port>`` unless
faust's ``NODE_CANONICAL_URL`` environment variable says otherwise. A worker bound to
``0.0.0.0`` (the Docker image) must set it to an address the other workers can reach; an owner
whose URL names no reachable host (``0.0.0.0``, ``::``) is not asked, and that is logged once.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any
from urllib.parse import quote

import aiohttp
import faust
from aiokafka.partitioner import murmur2
from yarl import URL

__all__ = [
    "FORWARDED_HEADER",
    "FORWARD_TIMEOUT_S",
    "UserRouter",
    "crc32_partition",
    "key_partitions",
    "murmur2_partition",
]

log = logging.getLogger(__name__)
FORWARDED_HEADER = "X-Interest-Stream-Forwarded"
"""Set on a request one worker forwards to another: it is answered locally, never forwarded."""
FORWARD_TIMEOUT_S = 2.0
"""The longest a forwarded request may take (connect and answer)."""
UNREACHABLE_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names, not binds)


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition aiokafka, faust and the Java client give ``key`` (murmur2)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``) gives ``key``."""
    return zlib.crc32(key) % partitions


def key_partitions(key: bytes, partitions: int) -> tuple[int, ...]:
    """Where a producer may have put ``key``'s events: murmur2's partition, then CRC32's when
    it differs."""
    first, second = murmur2_partition(key, partitions), crc32_partition(key, partitions)
    return (first,) if first == second else (first, second)


def _ident(url: URL) -> tuple[str, int]:
    return (url.host or "", url.port or 80)


class UserRouter:
    """Finds the worker that holds a user and asks it (see the module docstring).

    ``changelog`` is the user table's changelog topic: its partitions are the users'.
    """

    def __init__(
        self,
        app: faust.App,
        changelog: str,
        partitions: int,
        timeout_s: float = FORWARD_TIMEOUT_S,
    ) -> None:
        self.app, self.changelog, self.partitions = app, changelog, partitions
        self.timeout_s = timeout_s
        self._warned: set[str] = set()
        #: Requests forwarded, and those that failed (no answer, timeout, bad reply).
        self.forwarded = 0
        self.failures = 0

    @staticmethod
    def is_forwarded(headers: Any) -> bool:
        """Whether a request with ``headers`` came from another worker."""
        return FORWARDED_HEADER in headers

    def owners(self, key: bytes) -> list[URL]:
        """The other workers that hold a partition ``key`` may be in, in the order of
        :func:`key_partitions` (none while the group has no assignment)."""
        by_partition: dict[int, str] = {}
        for host, topics in self.app.assignor.table_metadata(self.changelog).items():
            for partition in topics.get(self.changelog, ()):
                by_partition[partition] = host
        me = _ident(URL(str(self.app.conf.canonical_url)))
        found: list[URL] = []
        for partition in key_partitions(key, self.partitions):
            owner = by_partition.get(partition)
            if owner is None:
                continue
            url = URL(owner)
            if _ident(url) == me or url in found:
                continue
            if (url.host or "") in UNREACHABLE_HOSTS:
                self._warn_once(owner)
                continue
            found.append(url)
        return found

    async def find(self, user_id: str, key: bytes) -> dict[str, Any] | None:
        """The ``/users/{id}`` body of the worker that holds ``user_id`` (``found`` true), or
        ``None`` when no other worker does (or none answered in time)."""
        for url in self.owners(key):
            body = await self._ask(url, user_id)
            if body is not None and body.get("found"):
                return body
        return None

    async def _ask(self, base: URL, user_id: str) -> dict[str, Any] | None:
        target = base.with_path(f"/users/{quote(user_id, safe='')}", encoded=True)
        self.forwarded += 1
        try:
            async with self.app.http_client.get(
                target,
                headers={FORWARDED_HEADER: "1"},
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as response:
                text = await response.text()
                status = response.status
            body = json.loads(text) if status in (200, 404) else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.failures += 1
            log.warning("asking %s for user %r failed: %s: %s", base, user_id,
                        type(exc).__name__, exc)  # fmt: skip
            return None
        if not isinstance(body, dict):
            self.failures += 1
            log.warning("asking %s for user %r: answered %d %.200s", base, user_id, status, text)
            return None
        return body

    def _warn_once(self, url: str) -> None:
        if url not in self._warned:
            self._warned.add(url)
            log.warning("the worker at %s cannot be asked for its users: its URL names no "
                        "reachable host (set NODE_CANONICAL_URL on it to an address the other "
                        "workers can reach)", url)  # fmt: skip
