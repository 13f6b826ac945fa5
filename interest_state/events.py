"""Input records of the update: events as the stream decodes them, and observations.

An :class:`Event` is what a user did; an :class:`Observation` is that event with the vectors
the caller resolved for it (the item's text vector from the item index and, for comments,
the encoded comment text). The update never encodes anything itself.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from .arrays import FloatVector
from .errors import ObservationError


class EventType(enum.IntEnum):
    """Kinds of user events; the integer value is what states and the codec store."""

    BROWSE = 0
    CLICK = 1
    COMMENT = 2
    DISLIKE = 3
    """An explicit negative signal: the item is filtered and pushes the interest away."""


@dataclass(frozen=True, slots=True)
class Event:
    """One user event. ``ts`` is event time in epoch seconds; ``event_id`` is unique.

    ``source`` and ``offset`` say where the event was read (the stream's ``"topic/partition"``
    and the record's offset); an event read from no ordered log has ``offset`` -1. With a
    position, a redelivery of the same record is recognised exactly
    (:meth:`InterestState.covers`), however many events came since.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: EventType
    ts: float
    dwell_ms: int | None = None
    text: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    offset: int = -1

    def __post_init__(self) -> None:
        try:
            kind = EventType(self.event_type)
        except ValueError as exc:
            raise ObservationError(f"unknown event type {self.event_type!r}") from exc
        object.__setattr__(self, "event_type", kind)


@dataclass(frozen=True, slots=True, eq=False)
class Observation:
    """An :class:`Event` with its vectors resolved by the caller.

    ``item_vector`` is the L2-normalised float32 text vector of the item. ``text_vector`` is
    the comment's own text vector in the same space; it is used only for comments and
    ignored for other event types. Shapes are checked by :func:`interest_state.update`.
    """

    event: Event
    item_vector: FloatVector
    text_vector: FloatVector | None = None


def event_id_hash(event_id: str) -> int:
    """Stable unsigned 64-bit hash of an event id (BLAKE2b, 8-byte digest, big-endian).

    Unlike :func:`hash`, the value is the same in every process, so it can be stored.
    """
    digest = hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")
