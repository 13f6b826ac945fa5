"""Where the agent meets Kafka: the interest store it reads and writes, the sinks it sends to.

:class:`InterestStore` is the ``user_interest`` table as the agent and the web view use it;
:class:`Sink` is an output topic (recommendations, dead letters) as the worker sends to it.
In the stream they are the Faust table and Faust topics, which fit the Protocols as they are
(no adapter, no extra call per event). :class:`MemoryStore` and :class:`MemorySink` are their
in-memory homes, for unit tests and for anyone who drives a batch without a broker: they keep
the rules the agent relies on (a state lives in the partition of its user's events; a sent
message is acked later, by the broker) instead of accepting whatever they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import faust

__all__ = ["AckCallback", "InterestStore", "MemorySink", "MemoryStore", "Sent", "Sink"]

#: What a send calls once the broker has acked the message (faust passes its FutureMessage).
AckCallback = Callable[[object], None]


class InterestStore(Protocol):
    """Encoded interest states (:func:`interest_state.encode_state`) under the user id's bytes.

    Reads and writes go to the partition of faust's current event (the agent sets it with
    :func:`streams.worker.agents.in_partition_of`), so a state lives in the partition that
    receives its user's events; a write outside any event is refused.
    """

    def get(self, key: bytes) -> bytes | None: ...

    def __setitem__(self, key: bytes, value: bytes) -> None: ...


class Sink(Protocol):
    """An output topic, as faust's ``Topic.send`` serves it.

    Awaiting ``send`` hands the message to the producer (it waits only while the producer's
    buffer is full); ``callback`` is called with the sent message when the broker acks it,
    later. With ``force=True`` the message is never attached to (held back until the ack of)
    the current source event.
    """

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        callback: AckCallback | None = None,
        force: bool = False,
    ) -> object: ...


class MemoryStore:
    """An :class:`InterestStore` in one dict per partition, placed as the worker's RocksDB
    table places keys: a read or write with a current event uses that event's partition; a
    read without one (the web view) finds the key in whichever partition holds it; a write
    without one raises, with faust's words."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[bytes, bytes]] = {}

    def get(self, key: bytes) -> bytes | None:
        event = faust.current_event()
        if event is None:
            return next((data[key] for data in self.partitions.values() if key in data), None)
        return self.partitions.get(event.message.partition, {}).get(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        event = faust.current_event()
        if event is None:
            raise RuntimeError("Cannot modify table outside of agent/stream.")
        self.partitions.setdefault(event.message.partition, {})[key] = value

    def keys_by_partition(self) -> dict[int, set[bytes]]:
        """Which keys each partition holds."""
        return {partition: set(data) for partition, data in self.partitions.items()}


@dataclass(frozen=True, slots=True)
class Sent:
    """One message handed to a :class:`MemorySink`."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    forced: bool


class MemorySink:
    """A :class:`Sink` that keeps what it was sent, in order (``sent``); the broker's acks come
    when :meth:`ack` is called, never during the send."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._unacked: list[tuple[Sent, AckCallback | None]] = []

    async def send(
        self,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        callback: AckCallback | None = None,
        force: bool = False,
    ) -> Sent:
        message = Sent(key, value, tuple(headers or ()), force)
        self.sent.append(message)
        self._unacked.append((message, callback))
        return message

    def ack(self) -> int:
        """Ack every message sent and not acked yet, in order, calling its callback with it,
        as faust does when the broker acks; returns how many were acked."""
        unacked, self._unacked = self._unacked, []
        for message, callback in unacked:
            if callback is not None:
                callback(message)
        return len(unacked)
